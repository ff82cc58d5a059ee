package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"converge.dev/converge/internal/testutil/gitserver"
)

// A directory written on a branch that does not exist yet, then on one
// that does, signed with an SSH key the verifier trusts; the rest of the
// tree stays, files the directory no longer has go.
func TestWrite_CommitsADirectorySignedOnNewAndExistingBranches(t *testing.T) {
	s, _ := newServer(t)
	if _, err := s.NewRepo("fleet"); err != nil {
		t.Fatal(err)
	}
	signer, err := gitserver.NewSSHSigner(t.TempDir(), "bootstrap@example.com")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := ParseTrustedKeys(map[string][]byte{"allowed_signers": []byte(signer.Public)})
	if err != nil {
		t.Fatal(err)
	}
	c := newCache(t)
	ctx := context.Background()
	req := WriteRequest{URL: s.URL("fleet"), Branch: "main", Dir: "clusters/a/converge-system",
		Files:   map[string][]byte{"crds.yaml": []byte("a: 1\n"), "agent.yaml": []byte("b: 1\n")},
		Message: "bootstrap\n", Author: "converge", AuthorEmail: "converge@localhost",
		Sign: &Signing{Format: "ssh", Key: signer.Key}}
	first, err := c.Write(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if first.Parent != "" {
		t.Errorf("the first commit of a new branch has parent %q", first.Parent)
	}
	fresh := newCache(t)
	a, err := fresh.Fetch(ctx, Request{URL: s.URL("fleet"), Ref: Ref{Branch: "main"}, Verify: &Verify{Mode: VerifyHead, Trust: trust}})
	if err != nil {
		t.Fatalf("fetching the signed commit with its key trusted: %v", err)
	}
	if a.Revision != first.Commit || readFile(t, a, "clusters/a/converge-system/crds.yaml") != "a: 1\n" {
		t.Fatalf("branch at %s, want %s", a.Revision, first.Commit)
	}

	// Again, with one file changed and one gone, beside another directory.
	req.Files = map[string][]byte{"crds.yaml": []byte("a: 2\n")}
	req.Sign = nil
	second, err := c.Write(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if second.Parent != first.Commit {
		t.Errorf("parent %s, want %s", second.Parent, first.Commit)
	}
	a, err = fresh.Fetch(ctx, Request{URL: s.URL("fleet"), Ref: Ref{Branch: "main"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, a, "clusters/a/converge-system/crds.yaml"); got != "a: 2\n" {
		t.Errorf("crds.yaml = %q", got)
	}
	if _, err := os.Stat(filepath.Join(a.Dir, "clusters/a/converge-system/agent.yaml")); !os.IsNotExist(err) {
		t.Errorf("agent.yaml should be gone: %v", err)
	}
	if _, err := c.Write(ctx, req); !errors.Is(err, ErrUnchanged) {
		t.Errorf("writing the same again: %v, want ErrUnchanged", err)
	}
	req.Files = map[string][]byte{"../escape.yaml": []byte("x")}
	if _, err := c.Write(ctx, req); err == nil {
		t.Error("a file outside the directory was written")
	}
}

// An edit changes the named files and nothing else; one made on a base
// the branch has moved on from is refused as ErrBranchMoved (the caller
// reads again); pushed to its own branch, the same change again is
// ErrUnchanged, and a new change rebuilds that branch on the base.
func TestEdit_ChangesOnlyItsFilesAndKnowsAMovedBranch(t *testing.T) {
	s, r := newServer(t)
	base := commit(t, r, "main", "first", map[string]string{"apps/web.yaml": "image: web:1.0\n", "apps/db.yaml": "image: db:1.0\n"})
	c := newCache(t)
	ctx := context.Background()
	req := EditRequest{URL: s.URL("shop"), Branch: "main", Base: base, Files: map[string][]byte{"apps/web.yaml": []byte("image: web:1.1\n")},
		Message: "web 1.1\n", Author: "converge", AuthorEmail: "converge@localhost"}
	edited, err := c.Edit(ctx, req)
	if err != nil || edited.Parent != base {
		t.Fatalf("edit: %+v, %v", edited, err)
	}
	a, err := newCache(t).Fetch(ctx, Request{URL: s.URL("shop"), Ref: Ref{Branch: "main"}})
	if err != nil || a.Revision != edited.Commit || readFile(t, a, "apps/web.yaml") != "image: web:1.1\n" || readFile(t, a, "apps/db.yaml") != "image: db:1.0\n" {
		t.Fatalf("main at %s (%v), want %s with web changed and db kept", a.Revision, err, edited.Commit)
	}
	req.Files = map[string][]byte{"apps/db.yaml": []byte("image: db:2.0\n")}
	if _, err := c.Edit(ctx, req); !errors.Is(err, ErrBranchMoved) {
		t.Errorf("an edit of a stale base: %v, want ErrBranchMoved", err)
	}
	req.Files = map[string][]byte{"apps/new.yaml": []byte("x: 1\n")}
	req.Base = edited.Commit
	if _, err := c.Edit(ctx, req); err == nil {
		t.Error("an edit created a file")
	}

	req.Push, req.Files = "image-updates", map[string][]byte{"apps/db.yaml": []byte("image: db:2.0\n")}
	first, err := c.Edit(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.Edit(ctx, req); !errors.Is(err, ErrUnchanged) || again.Commit != first.Commit {
		t.Errorf("the same change again: %+v, %v; want ErrUnchanged at %s", again, err, first.Commit)
	}
	req.Files = map[string][]byte{"apps/db.yaml": []byte("image: db:2.1\n")}
	second, err := c.Edit(ctx, req)
	if err != nil || second.Parent != edited.Commit || second.Commit == first.Commit {
		t.Fatalf("a new change: %+v, %v; want a commit on %s", second, err, edited.Commit)
	}
	p, err := newCache(t).Fetch(ctx, Request{URL: s.URL("shop"), Ref: Ref{Branch: "image-updates"}})
	if err != nil || p.Revision != second.Commit || readFile(t, p, "apps/db.yaml") != "image: db:2.1\n" {
		t.Errorf("image-updates at %s (%v), want %s", p.Revision, err, second.Commit)
	}
}
