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

// RawEntry is one entry of a hand-built tree. Mode is git's ("100644",
// "100755", "120000" for a symlink whose target is Content). Paths are
// taken as given: a tree may hold what no work tree can ("..", one name
// twice, a symlink "a" beside a directory "a"), as a hostile repository
// would.
type RawEntry struct {
	Mode, Path, Content string
}

// CommitRaw commits a tree built from entries on branch, on top of the
// branch's current commit when there is one, pushes it and returns the
// commit SHA.
func (r *Repo) CommitRaw(branch, message string, entries []RawEntry) (string, error) {
	tree, err := r.mktree(entries)
	if err != nil {
		return "", err
	}
	args := []string{"-c", "user.name=Test Author", "-c", "user.email=author@example.com", "commit-tree", tree, "-m", message}
	if parent, err := git(r.Work, "rev-parse", "-q", "--verify", "refs/heads/"+branch); err == nil && parent != "" {
		args = append(args, "-p", parent)
	}
	sha, err := git(r.Work, args...)
	if err != nil {
		return "", err
	}
	if _, err := git(r.Work, "update-ref", "refs/heads/"+branch, sha); err != nil {
		return "", err
	}
	if _, err := git(r.Work, "push", "-q", "-f", "origin", sha+":refs/heads/"+branch); err != nil {
		return "", err
	}
	return sha, nil
}

// mktree writes the tree of entries (nested by their first path component)
// and returns its id.
func (r *Repo) mktree(entries []RawEntry) (string, error) {
	var lines []string
	subs := map[string][]RawEntry{}
	var order []string
	for _, e := range entries {
		if dir, rest, ok := strings.Cut(e.Path, "/"); ok {
			if _, seen := subs[dir]; !seen {
				order = append(order, dir)
			}
			subs[dir] = append(subs[dir], RawEntry{Mode: e.Mode, Path: rest, Content: e.Content})
			continue
		}
		blob, err := r.hashObject(e.Content)
		if err != nil {
			return "", err
		}
		lines = append(lines, fmt.Sprintf("%s blob %s\t%s", e.Mode, blob, e.Path))
	}
	for _, dir := range order {
		id, err := r.mktree(subs[dir])
		if err != nil {
			return "", err
		}
		lines = append(lines, fmt.Sprintf("040000 tree %s\t%s", id, dir))
	}
	cmd := exec.Command("git", "mktree")
	cmd.Dir = r.Work
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git mktree: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func (r *Repo) hashObject(content string) (string, error) {
	cmd := exec.Command("git", "hash-object", "-w", "--stdin")
	cmd.Dir = r.Work
	cmd.Stdin = strings.NewReader(content)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git hash-object: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Remove deletes paths from the working tree; the next Commit records it.
func (r *Repo) Remove(paths ...string) error {
	_, err := git(r.Work, append([]string{"rm", "-q", "--"}, paths...)...)
	return err
}

// Rewrite replaces branch's whole history with one new root commit holding
// files, force-pushed: what a rewrite of history looks like to a fetcher.
func (r *Repo) Rewrite(branch, message string, files map[string]string) (string, error) {
	if _, err := git(r.Work, "checkout", "-q", "--orphan", "rewrite-"+branch); err != nil {
		return "", err
	}
	if _, err := git(r.Work, "rm", "-rq", "--cached", "--ignore-unmatch", "."); err != nil {
		return "", err
	}
	if err := r.Write(files); err != nil {
		return "", err
	}
	for name := range files {
		if _, err := git(r.Work, "add", "--", name); err != nil {
			return "", err
		}
	}
	if _, err := git(r.Work, "-c", "user.name=Test Author", "-c", "user.email=author@example.com", "commit", "-q", "-m", message); err != nil {
		return "", err
	}
	if _, err := git(r.Work, "branch", "-f", branch); err != nil {
		return "", err
	}
	if _, err := git(r.Work, "checkout", "-q", branch); err != nil {
		return "", err
	}
	if _, err := git(r.Work, "branch", "-D", "rewrite-"+branch); err != nil {
		return "", err
	}
	if _, err := git(r.Work, "push", "-q", "-f", "origin", branch); err != nil {
		return "", err
	}
	if _, err := git(r.Bare, "gc", "-q", "--prune=now"); err != nil {
		return "", err
	}
	return git(r.Work, "rev-parse", "HEAD")
}
