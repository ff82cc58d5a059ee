package gitserver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"
)

// SSHServer serves the same repositories over SSH with OpenSSH's sshd, on
// loopback, accepting one generated client key.
type SSHServer struct {
	cmd  *exec.Cmd
	addr string
	root string
	user string
	// ClientKey is the private key sshd accepts; KnownHosts trusts the
	// server's host key at its address.
	ClientKey, KnownHosts []byte
}

// ErrNoSSHD is returned when OpenSSH's server is not installed.
var ErrNoSSHD = fmt.Errorf("sshd not found (install openssh-server)")

// StartSSH starts sshd for the server's repositories; dir holds its keys
// and configuration.
func (s *Server) StartSSH(dir string) (*SSHServer, error) {
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/sshd"); statErr != nil {
			return nil, ErrNoSSHD
		}
		sshd = "/usr/sbin/sshd"
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for _, k := range []string{"host_key", "client_key"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %w: %s", err, out)
		}
	}
	clientPub, err := os.ReadFile(filepath.Join(dir, "client_key.pub"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), clientPub, 0o600); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	host, port, _ := net.SplitHostPort(addr)
	config := fmt.Sprintf(`Port %s
ListenAddress %s
HostKey %s
AuthorizedKeysFile %s
PidFile %s
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
`, port, host, filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return nil, err
	}
	_ = os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfgPath)
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			_ = cmd.Process.Kill()
			log, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
			return nil, fmt.Errorf("sshd did not start: %s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	hostPub, err := os.ReadFile(filepath.Join(dir, "host_key.pub"))
	if err != nil {
		return nil, err
	}
	fields := strings.Fields(string(hostPub))
	key, err := os.ReadFile(filepath.Join(dir, "client_key"))
	if err != nil {
		return nil, err
	}
	return &SSHServer{
		cmd: cmd, addr: addr, root: s.Root, user: u.Username,
		ClientKey:  key,
		KnownHosts: []byte(fmt.Sprintf("[%s]:%s %s %s\n", host, port, fields[0], fields[1])),
	}, nil
}

// URL returns the ssh:// URL of repository name.
func (s *SSHServer) URL(name string) string {
	return "ssh://" + s.user + "@" + s.addr + filepath.Join(s.root, name+".git")
}

// Stop ends sshd.
func (s *SSHServer) Stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}
