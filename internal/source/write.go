package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"converge.dev/converge/internal/redact"
)

// WriteRequest asks for a commit on Branch whose directory Dir holds
// exactly Files (names relative to Dir), the rest of the tree as it is at
// the branch's tip. A branch that does not exist yet starts with it.
type WriteRequest struct {
	URL    string
	Auth   *Auth
	Branch string
	Dir    string
	Files  map[string][]byte
	// Message is the commit message; Author and AuthorEmail its author and
	// committer.
	Message             string
	Author, AuthorEmail string
	// Sign, if set, signs the commit.
	Sign *Signing
	// Insecure allows credentials over plain http:// (see Request).
	Insecure bool
}

// Signing is a commit signing key: Format "ssh" with Key the private key
// file, or "openpgp" with Key gpg's key ID (GNUPGHome, if set, is gpg's
// home).
type Signing struct {
	Format, Key, GNUPGHome string
}

// ErrUnchanged means the branch already has Dir exactly as asked.
var ErrUnchanged = errors.New("the branch already has that content")

// Write writes and pushes the commit. The push is an ordinary
// fast-forward; if the branch moves meanwhile, the commit is made again
// on the new tip once.
func (c *Cache) Write(ctx context.Context, req WriteRequest) (*Restored, error) {
	dir := strings.Trim(path.Clean("/"+filepath.ToSlash(req.Dir)), "/")
	if dir == "" {
		return nil, fmt.Errorf("a directory to write is required (not the repository's root)")
	}
	for name := range req.Files {
		if !filepath.IsLocal(name) || strings.Contains(name, "\\") {
			return nil, fmt.Errorf("%q: not a path inside %s", name, dir)
		}
	}
	return c.commitOnBranch(ctx, req.URL, req.Auth, req.Insecure, req.Branch, func(g *gitRunner, r *repo) (*Restored, error) {
		return c.writeOnce(ctx, g, r, req, dir)
	})
}

func (c *Cache) writeOnce(ctx context.Context, g *gitRunner, r *repo, req WriteRequest, dir string) (*Restored, error) {
	ref := "refs/heads/" + req.Branch
	head := ""
	if out, err := g.run(ctx, r.bare, "ls-remote", "--", req.URL, ref); err != nil {
		return nil, err
	} else if len(bytes.TrimSpace(out)) > 0 {
		if _, err := g.run(ctx, r.bare, "fetch", "-q", "--depth=1", "--no-tags", "--", req.URL, ref); err != nil {
			return nil, err
		}
		out, err := g.run(ctx, r.bare, "rev-parse", "FETCH_HEAD^{commit}")
		if err != nil {
			return nil, err
		}
		head = strings.TrimSpace(string(out))
	}
	var entries bytes.Buffer
	names := make([]string, 0, len(req.Files))
	for name := range req.Files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		blob, err := g.runEnv(ctx, r.bare, nil, bytes.NewReader(req.Files[name]), "hash-object", "-w", "--stdin")
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&entries, "100644 blob %s\t%s/%s\x00", strings.TrimSpace(string(blob)), dir, filepath.ToSlash(name))
	}
	tree, err := replacedTree(ctx, g, r.bare, head, dir, entries.Bytes(), filepath.Join(g.tmp, "index"))
	if err != nil {
		return nil, err
	}
	if head != "" {
		out, err := g.run(ctx, r.bare, "rev-parse", head+"^{tree}")
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(string(out)) == tree {
			return &Restored{Commit: head, Parent: head}, ErrUnchanged
		}
	}
	sha, err := commitAndPush(ctx, g, r, req.URL, ref, tree, head, req.Message, req.Author, req.AuthorEmail, req.Sign)
	if err != nil {
		return nil, err
	}
	return &Restored{Commit: sha, Parent: head}, nil
}

// EditRequest asks for a commit on Base, a commit of Branch, that changes
// Files (paths from the repository's root, each an existing file) and
// nothing else. It is pushed to Branch as a fast-forward or, when Push
// names another branch, to Push as a forced update: that branch is
// rebuilt on Branch every time.
type EditRequest struct {
	URL      string
	Auth     *Auth
	Insecure bool
	Branch   string
	Push     string
	Base     string
	Files    map[string][]byte
	// Message, Author, AuthorEmail and Sign are as in WriteRequest.
	Message             string
	Author, AuthorEmail string
	Sign                *Signing
}

// ErrBranchMoved means Branch moved on from Base: read it again and edit
// the new tip.
var ErrBranchMoved = errors.New("the branch moved on since it was read")

// Edit writes and pushes the commit.
func (c *Cache) Edit(ctx context.Context, req EditRequest) (*Restored, error) {
	if len(req.Files) == 0 {
		return nil, ErrUnchanged
	}
	for name := range req.Files {
		if !filepath.IsLocal(name) || strings.Contains(name, "\\") {
			return nil, fmt.Errorf("%q: not a path inside the repository", name)
		}
	}
	r, g, done, err := c.open(ctx, req.URL, req.Auth, req.Insecure)
	if err != nil {
		return nil, err
	}
	defer done()
	out, err := c.editOnce(ctx, g, r, req)
	if errors.Is(err, errRejected) {
		err = ErrBranchMoved
	}
	for ref := range r.resolved {
		if ref.Branch == req.Branch || (req.Branch == "main" && ref == (Ref{})) {
			delete(r.resolved, ref)
		}
	}
	if err != nil && !errors.Is(err, ErrBranchMoved) && !errors.Is(err, ErrUnchanged) {
		return nil, fmt.Errorf("%s: %w", redact.URL(req.URL), err)
	}
	return out, err
}

func (c *Cache) editOnce(ctx context.Context, g *gitRunner, r *repo, req EditRequest) (*Restored, error) {
	if !c.has(ctx, g, r, req.Base) {
		if _, err := g.run(ctx, r.bare, "fetch", "-q", "--depth=1", "--no-tags", "--", req.URL, req.Base); err != nil {
			return nil, fmt.Errorf("fetching %s: %w", ShortRevision(req.Base), err)
		}
	}
	listing, err := g.run(ctx, r.bare, "ls-tree", "-r", "-z", "--full-tree", req.Base)
	if err != nil {
		return nil, err
	}
	var all bytes.Buffer
	seen := map[string]bool{}
	for _, e := range bytes.Split(listing, []byte{0}) {
		meta, name, ok := bytes.Cut(e, []byte("\t"))
		if !ok {
			continue
		}
		data, edited := req.Files[string(name)]
		fields := strings.Fields(string(meta))
		if !edited || len(fields) != 3 || fields[1] != "blob" {
			all.Write(e)
			all.WriteByte(0)
			continue
		}
		blob, err := g.runEnv(ctx, r.bare, nil, bytes.NewReader(data), "hash-object", "-w", "--stdin")
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&all, "%s blob %s\t%s\x00", fields[0], strings.TrimSpace(string(blob)), name)
		seen[string(name)] = true
	}
	for name := range req.Files {
		if !seen[name] {
			return nil, fmt.Errorf("%s: not a file of %s", name, ShortRevision(req.Base))
		}
	}
	index := filepath.Join(g.tmp, "index")
	env := []string{"GIT_INDEX_FILE=" + index}
	if _, err := g.runEnv(ctx, r.bare, env, nil, "read-tree", "--empty"); err != nil {
		return nil, err
	}
	if _, err := g.runEnv(ctx, r.bare, env, &all, "update-index", "-z", "--index-info"); err != nil {
		return nil, err
	}
	tree, err := g.runEnv(ctx, r.bare, env, nil, "write-tree")
	if err != nil {
		return nil, err
	}
	ref := "refs/heads/" + req.Branch
	if req.Push != "" && req.Push != req.Branch {
		ref = "+refs/heads/" + req.Push
		// The push branch already one commit on Base with this tree: the
		// same change, not pushed again.
		if tip, ok := c.sameChange(ctx, g, r, req, strings.TrimSpace(string(tree))); ok {
			return &Restored{Commit: tip, Parent: req.Base}, ErrUnchanged
		}
	}
	sha, err := commitAndPush(ctx, g, r, req.URL, ref, strings.TrimSpace(string(tree)), req.Base, req.Message, req.Author, req.AuthorEmail, req.Sign)
	if err != nil {
		return nil, err
	}
	return &Restored{Commit: sha, Parent: req.Base}, nil
}

// sameChange reports whether req's push branch is already a commit of
// tree whose parent is req.Base, and its tip.
func (c *Cache) sameChange(ctx context.Context, g *gitRunner, r *repo, req EditRequest, tree string) (string, bool) {
	ref := "refs/heads/" + req.Push
	out, err := g.run(ctx, r.bare, "ls-remote", "--", req.URL, ref)
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return "", false
	}
	if _, err := g.run(ctx, r.bare, "fetch", "-q", "--depth=2", "--no-tags", "--", req.URL, ref); err != nil {
		return "", false
	}
	info, err := g.run(ctx, r.bare, "log", "-1", "--format=%H %T %P", "FETCH_HEAD")
	if err != nil {
		return "", false
	}
	f := strings.Fields(string(info))
	if len(f) != 3 || f[1] != tree || f[2] != req.Base {
		return "", false
	}
	return f[0], true
}
