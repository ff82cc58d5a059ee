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
