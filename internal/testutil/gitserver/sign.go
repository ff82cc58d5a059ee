package gitserver

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Signer signs commits and tags the way a developer's git does: with gpg
// (OpenPGP) or ssh-keygen (SSH).
type Signer struct {
	// Format is "openpgp" or "ssh".
	Format string
	// Key is the gpg key fingerprint or the SSH private key file.
	Key string
	// Public is the armored OpenPGP public key, or the allowed_signers line.
	Public string
	home   string
}

// NewGPGSigner makes an OpenPGP signing key (ed25519, no passphrase) in its
// own GNUPGHOME under dir. It needs gpg.
func NewGPGSigner(dir, name, email string) (*Signer, error) {
	home, err := os.MkdirTemp(dir, "gnupg-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(home, 0o700); err != nil {
		return nil, err
	}
	gpg := func(args ...string) (string, error) {
		cmd := exec.Command("gpg", append([]string{"--batch", "--homedir", home}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			msg := ""
			if ee, ok := err.(*exec.ExitError); ok {
				msg = string(ee.Stderr)
			}
			return "", fmt.Errorf("gpg %s: %w: %s", strings.Join(args, " "), err, msg)
		}
		return string(out), nil
	}
	uid := fmt.Sprintf("%s <%s>", name, email)
	if _, err := gpg("--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"); err != nil {
		return nil, err
	}
	out, err := gpg("--with-colons", "--list-keys", email)
	if err != nil {
		return nil, err
	}
	var fpr string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Split(line, ":"); len(f) > 9 && f[0] == "fpr" {
			fpr = f[9]
			break
		}
	}
	if fpr == "" {
		return nil, fmt.Errorf("gpg: no fingerprint for %s", uid)
	}
	pub, err := gpg("--armor", "--export", fpr)
	if err != nil {
		return nil, err
	}
	return &Signer{Format: "openpgp", Key: fpr, Public: pub, home: home}, nil
}

// NewSSHSigner makes an ed25519 SSH key under dir. It needs ssh-keygen.
func NewSSHSigner(dir, email string) (*Signer, error) {
	d, err := os.MkdirTemp(dir, "sshsign-")
	if err != nil {
		return nil, err
	}
	key := filepath.Join(d, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", email, "-f", key).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ssh-keygen: %w: %s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(pub))
	return &Signer{Format: "ssh", Key: key, Public: email + " " + f[0] + " " + f[1] + "\n"}, nil
}

// Close stops the gpg agent, if any.
func (s *Signer) Close() {
	if s != nil && s.home != "" {
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+s.home)
		_ = cmd.Run()
	}
}

func (s *Signer) gitArgs() []string {
	if s.Format == "ssh" {
		return []string{"-c", "gpg.format=ssh", "-c", "user.signingkey=" + s.Key}
	}
	return []string{"-c", "gpg.format=openpgp", "-c", "user.signingkey=" + s.Key}
}

func (s *Signer) env() []string {
	if s.home != "" {
		return []string{"GNUPGHOME=" + s.home}
	}
	return nil
}

// CommitSigned is Commit with the commit signed by s.
func (r *Repo) CommitSigned(branch, message string, s *Signer) (string, error) {
	if _, err := git(r.Work, "checkout", "-q", "-B", branch); err != nil {
		return "", err
	}
	if _, err := git(r.Work, "add", "-A"); err != nil {
		return "", err
	}
	args := append([]string{"-c", "user.name=Test Author", "-c", "user.email=author@example.com"}, s.gitArgs()...)
	args = append(args, "commit", "-q", "-S", "--allow-empty", "-m", message)
	if _, err := gitEnv(r.Work, s.env(), args...); err != nil {
		return "", err
	}
	if _, err := git(r.Work, "push", "-q", "-f", "origin", branch); err != nil {
		return "", err
	}
	return git(r.Work, "rev-parse", "HEAD")
}

// TagSigned creates a signed annotated tag on the current commit and
// pushes it; a nil s makes an unsigned annotated tag.
func (r *Repo) TagSigned(tag, message string, s *Signer) error {
	args := []string{"-c", "user.name=Test Tagger", "-c", "user.email=tagger@example.com"}
	var env []string
	if s != nil {
		args = append(args, s.gitArgs()...)
		args = append(args, "tag", "-f", "-s", "-m", message, tag)
		env = s.env()
	} else {
		args = append(args, "tag", "-f", "-a", "-m", message, tag)
	}
	if _, err := gitEnv(r.Work, env, args...); err != nil {
		return err
	}
	_, err := git(r.Work, "push", "-q", "-f", "origin", "refs/tags/"+tag)
	return err
}

// Home is an openpgp Signer's GNUPGHOME (gpg finds its key there).
func (s *Signer) Home() string { return s.home }
