package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"converge.dev/converge/internal/redact"
)

// RestoreRequest asks for a commit on Branch that puts Path back as it was
// at Target, leaving the rest of the tree as it is at the branch's tip.
type RestoreRequest struct {
	URL    string
	Auth   *Auth
	Branch string
	// Path is the directory or file to restore, relative to the root;
	// empty restores the whole tree.
	Path   string
	Target string
	// Message returns the commit message, given the branch tip the commit
	// goes on. Author and AuthorEmail are its author and committer.
	Message             func(parent string) string
	Author, AuthorEmail string
	// Insecure allows credentials over plain http:// (see Request).
	Insecure bool
}

// Restored is the result of a restore.
type Restored struct {
	// Commit is the new commit, pushed to the branch.
	Commit string
	// Parent is the branch tip it was written on.
	Parent string
}

// ErrNothingToRestore means the path at the branch tip already equals the
// target's.
var ErrNothingToRestore = ErrUnchanged

// Restore writes and pushes the restoring commit: the Git-native rollback.
// The push is an ordinary fast-forward; if the branch moves meanwhile, the
// commit is rebuilt on the new tip once.
func (c *Cache) Restore(ctx context.Context, req RestoreRequest) (*Restored, error) {
	return c.commitOnBranch(ctx, req.URL, req.Auth, req.Insecure, req.Branch, func(g *gitRunner, r *repo) (*Restored, error) {
		return c.restoreOnce(ctx, g, r, req, g.tmp)
	})
}

// commitOnBranch runs once (which writes and pushes a commit on branch)
// in url's repository, once more if the push was rejected because the
// branch moved, and forgets the branch's cached resolution. ErrUnchanged
// comes back with the branch's tip.
func (c *Cache) commitOnBranch(ctx context.Context, url string, auth *Auth, insecure bool, branch string, once func(*gitRunner, *repo) (*Restored, error)) (*Restored, error) {
	r, g, done, err := c.open(ctx, url, auth, insecure)
	if err != nil {
		return nil, err
	}
	defer done()
	var out *Restored
	for attempt := 0; ; attempt++ {
		out, err = once(g, r)
		if err == nil || attempt == 1 || !errors.Is(err, errRejected) {
			break
		}
	}
	if err != nil && !errors.Is(err, ErrUnchanged) {
		return nil, fmt.Errorf("%s: %w", redact.URL(url), err)
	}
	for ref := range r.resolved {
		if ref.Branch == branch || (branch == "main" && ref == (Ref{})) {
			delete(r.resolved, ref)
		}
	}
	return out, err
}

// commitAndPush writes a commit of tree (on parent, none if empty) as
// author, signed with sign if set, and pushes it to ref as a fast-forward
// (a forced update when ref starts with "+"); errRejected means the branch
// moved.
func commitAndPush(ctx context.Context, g *gitRunner, r *repo, url, ref, tree, parent, message, author, email string, sign *Signing) (string, error) {
	env := []string{"GIT_AUTHOR_NAME=" + author, "GIT_AUTHOR_EMAIL=" + email, "GIT_COMMITTER_NAME=" + author, "GIT_COMMITTER_EMAIL=" + email}
	var args []string
	if sign != nil {
		switch sign.Format {
		case "ssh", "openpgp":
			args = append(args, "-c", "gpg.format="+sign.Format, "-c", "user.signingKey="+sign.Key)
		default:
			return "", fmt.Errorf("signing format %q: want ssh or openpgp", sign.Format)
		}
		if sign.GNUPGHome != "" {
			env = append(env, "GNUPGHOME="+sign.GNUPGHome)
		}
	}
	args = append(args, "commit-tree", tree)
	if sign != nil {
		args = append(args, "-S")
	}
	if parent != "" {
		args = append(args, "-p", parent)
	}
	commit, err := g.runEnv(ctx, r.bare, env, strings.NewReader(message), args...)
	if err != nil {
		return "", err
	}
	sha := strings.TrimSpace(string(commit))
	spec := sha + ":" + ref
	if force, ok := strings.CutPrefix(ref, "+"); ok {
		spec = "+" + sha + ":" + force
	}
	if _, err := g.run(ctx, r.bare, "push", "-q", "--", url, spec); err != nil {
		if strings.Contains(err.Error(), "rejected") || strings.Contains(err.Error(), "non-fast-forward") || strings.Contains(err.Error(), "fetch first") {
			return "", fmt.Errorf("%w: %v", errRejected, err)
		}
		return "", fmt.Errorf("pushing the commit (the credentials need write access): %w", err)
	}
	return sha, nil
}

var errRejected = errors.New("push rejected")

func (c *Cache) restoreOnce(ctx context.Context, g *gitRunner, r *repo, req RestoreRequest, tmp string) (*Restored, error) {
	ref := "refs/heads/" + req.Branch
	if _, err := g.run(ctx, r.bare, "fetch", "-q", "--depth=1", "--no-tags", "--", req.URL, ref); err != nil {
		return nil, err
	}
	out, err := g.run(ctx, r.bare, "rev-parse", "FETCH_HEAD^{commit}")
	if err != nil {
		return nil, err
	}
	head := strings.TrimSpace(string(out))
	if !c.has(ctx, g, r, req.Target) {
		if _, err := g.run(ctx, r.bare, "fetch", "-q", "--depth=1", "--no-tags", "--", req.URL, req.Target); err != nil {
			return nil, fmt.Errorf("fetching %s: %w", ShortRevision(req.Target), err)
		}
	}
	if err := c.inHistory(ctx, g, r, req.URL, ref, req.Target, head); err != nil {
		return nil, err
	}
	tree, err := c.restoredTree(ctx, g, r.bare, head, req.Target, req.Path, filepath.Join(tmp, "index"))
	if err != nil {
		return nil, err
	}
	out, err = g.run(ctx, r.bare, "rev-parse", head+"^{tree}")
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(string(out)) == tree {
		return &Restored{Commit: head, Parent: head}, ErrUnchanged
	}
	sha, err := commitAndPush(ctx, g, r, req.URL, ref, tree, head, req.Message(head), req.Author, req.AuthorEmail, nil)
	if err != nil {
		return nil, err
	}
	return &Restored{Commit: sha, Parent: head}, nil
}

// inHistory refuses a target that is no longer in the branch's history
// (a force-push rewrote it): restoring content the branch never had since
// would be a surprise, not a rollback. It deepens the cached history back
// to a week before the target's commit date, then asks git.
func (c *Cache) inHistory(ctx context.Context, g *gitRunner, r *repo, url, ref, target, head string) error {
	out, err := g.run(ctx, r.bare, "log", "-1", "--format=%ct", target)
	if err != nil {
		return err
	}
	ct, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return fmt.Errorf("reading the date of %s: %w", ShortRevision(target), err)
	}
	since := fmt.Sprintf("--shallow-since=%d", ct-7*24*3600)
	if _, err := g.run(ctx, r.bare, "fetch", "-q", since, "--no-tags", "--", url, ref); err != nil {
		return fmt.Errorf("reading the history of %s: %w", strings.TrimPrefix(ref, "refs/heads/"), err)
	}
	if _, err := g.run(ctx, r.bare, "merge-base", "--is-ancestor", target, head); err != nil {
		return fmt.Errorf("revision %s is not in the history of branch %s any more (was it rewritten by a force-push?); pick a revision from the current history", ShortRevision(target), strings.TrimPrefix(ref, "refs/heads/"))
	}
	return nil
}

// restoredTree builds, in a scratch index, head's tree with p replaced by
// target's p, and writes it.
func (c *Cache) restoredTree(ctx context.Context, g *gitRunner, bare, head, target, p, index string) (string, error) {
	p = strings.Trim(path.Clean("/"+filepath.ToSlash(p)), "/")
	if p == "" {
		out, err := g.run(ctx, bare, "rev-parse", target+"^{tree}")
		return strings.TrimSpace(string(out)), err
	}
	targetEntries, err := g.run(ctx, bare, "ls-tree", "-r", "-z", "--full-tree", target, "--", p)
	if err != nil {
		return "", err
	}
	return replacedTree(ctx, g, bare, head, p, targetEntries, index)
}

// replacedTree builds, in a scratch index, head's tree (none: an empty
// one) without p, plus entries (ls-tree -r -z lines), and writes it.
func replacedTree(ctx context.Context, g *gitRunner, bare, head, p string, entries []byte, index string) (string, error) {
	var all bytes.Buffer
	if head != "" {
		headEntries, err := g.run(ctx, bare, "ls-tree", "-r", "-z", "--full-tree", head)
		if err != nil {
			return "", err
		}
		for _, e := range bytes.Split(headEntries, []byte{0}) {
			_, name, ok := bytes.Cut(e, []byte("\t"))
			if !ok {
				continue
			}
			if n := string(name); n == p || strings.HasPrefix(n, p+"/") {
				continue
			}
			all.Write(e)
			all.WriteByte(0)
		}
	}
	all.Write(entries)
	env := []string{"GIT_INDEX_FILE=" + index}
	if _, err := g.runEnv(ctx, bare, env, nil, "read-tree", "--empty"); err != nil {
		return "", err
	}
	if _, err := g.runEnv(ctx, bare, env, &all, "update-index", "-z", "--index-info"); err != nil {
		return "", err
	}
	out, err := g.runEnv(ctx, bare, env, nil, "write-tree")
	return strings.TrimSpace(string(out)), err
}

// CountBehind reports how many commits branch's tip is ahead of base, and
// the tip. It deepens the cached history up to limit commits; -1 means base
// is not among them (or not an ancestor).
func (c *Cache) CountBehind(ctx context.Context, url string, auth *Auth, insecure bool, branch, base string, limit int) (int, string, error) {
	r, g, done, err := c.open(ctx, url, auth, insecure)
	if err != nil {
		return 0, "", err
	}
	defer done()
	if _, err := g.run(ctx, r.bare, "fetch", "-q", "--depth="+strconv.Itoa(limit), "--no-tags", "--", url, "refs/heads/"+branch); err != nil {
		return 0, "", fmt.Errorf("%s: %w", redact.URL(url), err)
	}
	out, err := g.run(ctx, r.bare, "rev-parse", "FETCH_HEAD^{commit}")
	if err != nil {
		return 0, "", err
	}
	tip := strings.TrimSpace(string(out))
	if !c.has(ctx, g, r, base) {
		return -1, tip, nil
	}
	if _, err := g.run(ctx, r.bare, "merge-base", "--is-ancestor", base, tip); err != nil {
		return -1, tip, nil
	}
	out, err = g.run(ctx, r.bare, "rev-list", "--count", base+".."+tip)
	if err != nil {
		return -1, tip, nil
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n, tip, nil
}
