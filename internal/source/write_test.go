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
