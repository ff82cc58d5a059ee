package gitserver

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Repo is a bare repository on the server plus a work tree to commit from.
type Repo struct {
	Name string
	Bare string
	Work string
}

// NewRepo creates Root/name.git and a work tree for it, on branch main.
func (s *Server) NewRepo(name string) (*Repo, error) {
	r := &Repo{Name: name, Bare: filepath.Join(s.Root, name+".git"), Work: filepath.Join(s.Root, "work", name)}
	if err := os.MkdirAll(r.Work, 0o755); err != nil {
		return nil, err
	}
	if _, err := git("", "init", "--bare", "-q", "-b", "main", r.Bare); err != nil {
		return nil, err
	}
	if _, err := git(r.Work, "init", "-q", "-b", "main"); err != nil {
		return nil, err
	}
	if _, err := git(r.Work, "remote", "add", "origin", r.Bare); err != nil {
		return nil, err
	}
	return r, nil
}

// Write sets files (path -> content; empty content deletes the file) in the
// work tree.
func (r *Repo) Write(files map[string]string) error {
	for name, content := range files {
		p := filepath.Join(r.Work, filepath.FromSlash(name))
		if content == "" {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Commit commits everything in the work tree on branch (created if need
// be), pushes it and returns the commit SHA.
func (r *Repo) Commit(branch, message string) (string, error) {
	return r.CommitAs(branch, message, "Test Author", "author@example.com")
}

// CommitAs is Commit by the given author (and committer).
func (r *Repo) CommitAs(branch, message, name, email string) (string, error) {
	if _, err := git(r.Work, "checkout", "-q", "-B", branch); err != nil {
		return "", err
	}
	if _, err := git(r.Work, "add", "-A"); err != nil {
		return "", err
	}
	if _, err := git(r.Work, "-c", "user.name="+name, "-c", "user.email="+email,
		"commit", "-q", "--allow-empty", "-m", message); err != nil {
		return "", err
	}
	if _, err := git(r.Work, "push", "-q", "-f", "origin", branch); err != nil {
		return "", err
	}
	return git(r.Work, "rev-parse", "HEAD")
}

// Tag tags the current commit and pushes the tag.
func (r *Repo) Tag(tag string) error {
	if _, err := git(r.Work, "tag", "-f", tag); err != nil {
		return err
	}
	_, err := git(r.Work, "push", "-q", "-f", "origin", "refs/tags/"+tag)
	return err
}

func git(dir string, args ...string) (string, error) { return gitEnv(dir, nil, args...) }

func gitEnv(dir string, env []string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0"), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// Log returns the subjects of the commits on branch in the server's
// repository, newest first.
func (r *Repo) Log(branch string) ([]string, error) {
	out, err := git(r.Bare, "log", "--format=%s", branch)
	if err != nil {
		return nil, err
	}
	return strings.Split(out, "\n"), nil
}

// Pull brings the work tree's branch up to date with the server (after the
// server's branch moved, say by a rollback commit).
func (r *Repo) Pull(branch string) error {
	if _, err := git(r.Work, "checkout", "-q", "-B", branch); err != nil {
		return err
	}
	_, err := git(r.Work, "pull", "-q", "--ff-only", "origin", branch)
	return err
}
