package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Auth holds a repository's credentials.
type Auth struct {
	// Username and Password for HTTPS (a token goes in Password).
	Username, Password string
	// Identity is an SSH private key; KnownHosts the host keys to trust.
	// SSH without KnownHosts is refused: unknown hosts are never trusted.
	Identity, KnownHosts []byte
}

// identity fingerprints the credentials: callers with equal credentials
// share cached repositories, others never do. Nil has the empty identity.
func (a *Auth) identity() string {
	if a == nil {
		return ""
	}
	h := sha256.New()
	for _, part := range [][]byte{[]byte(a.Username), []byte(a.Password), a.Identity, a.KnownHosts} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (a *Auth) secrets() []string {
	if a == nil {
		return nil
	}
	return []string{a.Password, string(a.Identity), base64.StdEncoding.EncodeToString([]byte(a.Username + ":" + a.Password))}
}

// gitRunner runs git with a clean, credential-bearing environment.
type gitRunner struct {
	url  string
	auth *Auth
	// tmp holds per-call files (SSH key, known_hosts, HOME).
	tmp string
	// allowFile permits file:// URLs (tests).
	allowFile bool
	// timeout bounds each git command; zero means DefaultTimeout.
	timeout time.Duration
}

// DefaultTimeout bounds one git command (ls-remote, fetch, push): a server
// that stalls fails its apps' fetch and frees the worker, instead of
// holding it, and the repository, forever.
const DefaultTimeout = 2 * time.Minute

func isSSH(url string) bool {
	return strings.HasPrefix(url, "ssh://") || (!strings.Contains(url, "://") && strings.Contains(url, "@") && strings.Contains(url, ":"))
}

// env builds git's environment: no system or global config, no prompts,
// only the transports converge supports, and the credentials as config
// entries in the environment (never on the command line, where any local
// user could read them).
func (g *gitRunner) env() ([]string, error) {
	home := filepath.Join(g.tmp, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ASKPASS=/bin/false",
		"SSH_ASKPASS=/bin/false",
		"LC_ALL=C",
	}
	config := [][2]string{
		{"protocol.allow", "never"},
		{"protocol.https.allow", "always"},
		{"protocol.http.allow", "always"},
		{"protocol.ssh.allow", "always"},
		{"protocol.version", "2"},
		{"credential.helper", ""},
		// Nothing the repository or the server sends can make git run a
		// program: no hooks, no fsmonitor; objects are checked on arrival
		// (duplicate tree entries, paths like ".." or ".git").
		{"core.hooksPath", "/dev/null"},
		{"core.fsmonitor", "false"},
		{"transfer.fsckObjects", "true"},
		// A transfer slower than 1 KiB/s for 30 s is given up.
		{"http.lowSpeedLimit", "1024"},
		{"http.lowSpeedTime", "30"},
	}
	if g.allowFile {
		config = append(config, [2]string{"protocol.file.allow", "always"})
	}
	if g.auth != nil && (g.auth.Username != "" || g.auth.Password != "") && !isSSH(g.url) {
		token := base64.StdEncoding.EncodeToString([]byte(g.auth.Username + ":" + g.auth.Password))
		config = append(config, [2]string{"http.extraHeader", "Authorization: Basic " + token})
	}
	if isSSH(g.url) {
		ssh, err := g.sshCommand()
		if err != nil {
			return nil, err
		}
		env = append(env, "GIT_SSH_COMMAND="+ssh)
	}
	env = append(env, "GIT_CONFIG_COUNT="+strconv.Itoa(len(config)))
	for i, kv := range config {
		env = append(env, fmt.Sprintf("GIT_CONFIG_KEY_%d=%s", i, kv[0]), fmt.Sprintf("GIT_CONFIG_VALUE_%d=%s", i, kv[1]))
	}
	return env, nil
}

func (g *gitRunner) sshCommand() (string, error) {
	if g.auth == nil || len(g.auth.KnownHosts) == 0 {
		return "", fmt.Errorf("SSH needs known_hosts in the credentials: unknown hosts are refused")
	}
	kh := filepath.Join(g.tmp, "known_hosts")
	if err := os.WriteFile(kh, g.auth.KnownHosts, 0o600); err != nil {
		return "", err
	}
	cmd := []string{"ssh", "-F", "/dev/null", "-o", "UserKnownHostsFile=" + kh, "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=15"}
	if len(g.auth.Identity) > 0 {
		id := filepath.Join(g.tmp, "identity")
		key := g.auth.Identity
		if !bytes.HasSuffix(key, []byte("\n")) {
			key = append(key, '\n')
		}
		if err := os.WriteFile(id, key, 0o600); err != nil {
			return "", err
		}
		cmd = append(cmd, "-i", id)
	}
	return strings.Join(cmd, " "), nil
}

// run runs git in dir and returns its stdout. Errors carry git's stderr,
// sanitized.
func (g *gitRunner) run(ctx context.Context, dir string, args ...string) ([]byte, error) {
	return g.runEnv(ctx, dir, nil, nil, args...)
}

// runEnv is run with extra environment variables and stdin.
func (g *gitRunner) runEnv(ctx context.Context, dir string, extra []string, stdin io.Reader, args ...string) ([]byte, error) {
	env, err := g.env()
	if err != nil {
		return nil, err
	}
	timeout := g.timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	killGroup(cmd)
	cmd.Dir = dir
	cmd.Env = append(env, extra...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return nil, fmt.Errorf("git %s: no answer within %s (the server stalled or is too slow)", args[0], timeout)
		}
		msg := withoutRemoteLines(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("git %s: %s", args[0], sanitize(msg, g.auth.secrets()...))
	}
	return stdout.Bytes(), nil
}

// withoutRemoteLines drops what the server printed ("remote: ..." lines)
// from git's stderr: a hostile server, or one reached by mistake, must not
// be able to place its text in status, events or history.
func withoutRemoteLines(stderr string) string {
	var kept []string
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "remote:") {
			continue
		}
		kept = append(kept, line)
	}
	return strings.TrimSpace(strings.Join(kept, "\n"))
}

// killGroup makes cmd's cancellation end git's helpers too (git-remote-http,
// ssh), which hold its output open: git runs in a process group of its
// own, the whole group is killed, and Wait gives up on the pipes a second
// later.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
}
