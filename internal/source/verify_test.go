package source

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"converge.dev/converge/internal/testutil/gitserver"
)

func signers(t *testing.T) (pgp, sshKey *gitserver.Signer) {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Fatal("gpg is needed to make OpenPGP-signed commits (apt-get install gnupg)")
	}
	dir := t.TempDir()
	pgp, err := gitserver.NewGPGSigner(dir, "Alice Signer", "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pgp.Close)
	sshKey, err = gitserver.NewSSHSigner(dir, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return pgp, sshKey
}

func TestFetch_VerifiesSignedCommits(t *testing.T) {
	s, r := newServer(t)
	pgp, sshKey := signers(t)
	other, err := gitserver.NewSSHSigner(t.TempDir(), "mallory@example.com")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := ParseTrustedKeys(map[string][]byte{"alice.asc": []byte(pgp.Public), "allowed_signers": []byte(sshKey.Public)})
	if err != nil {
		t.Fatal(err)
	}
	c := newCache(t)
	ctx := context.Background()
	fetch := func(branch string) (*Artifact, error) {
		return c.Fetch(ctx, Request{URL: s.URL("shop"), Ref: Ref{Branch: branch}, Verify: &Verify{Mode: VerifyHead, Trust: trust}})
	}

	for _, tc := range []struct {
		branch string
		signer *gitserver.Signer
		typ    string
	}{{"pgp", pgp, "openpgp"}, {"ssh", sshKey, "ssh"}} {
		if err := r.Write(map[string]string{"a.yaml": "kind: ConfigMap\n# " + tc.branch}); err != nil {
			t.Fatal(err)
		}
		sha, err := r.CommitSigned(tc.branch, "signed", tc.signer)
		if err != nil {
			t.Fatal(err)
		}
		a, err := fetch(tc.branch)
		if err != nil {
			t.Fatalf("%s-signed commit refused: %v", tc.typ, err)
		}
		if a.Revision != sha || a.Signer == nil || a.Signer.Type != tc.typ || a.Signer.Fingerprint == "" {
			t.Fatalf("%s: got revision %s signer %+v", tc.typ, a.Revision, a.Signer)
		}
		// The second answer comes from the cache and must agree.
		if a, err := fetch(tc.branch); err != nil || a.Signer == nil {
			t.Fatalf("cached answer: %v %+v", err, a)
		}
	}

	for _, tc := range []struct {
		name, want string
		commit     func() (string, error)
	}{
		{"unsigned", "not signed", func() (string, error) { return r.Commit("unsigned", "unsigned") }},
		{"untrusted", "not in allowed_signers", func() (string, error) { return r.CommitSigned("untrusted", "by mallory", other) }},
	} {
		sha, err := tc.commit()
		if err != nil {
			t.Fatal(err)
		}
		_, err = fetch(tc.name)
		var verr *VerificationError
		if !errors.As(err, &verr) || verr.Revision != sha || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), sha[:12]) {
			t.Fatalf("%s commit: want a VerificationError naming %s and %q, got %v", tc.name, sha[:12], tc.want, err)
		}
	}
}

func TestFetch_AllowedSignersOptionsAreEnforced(t *testing.T) {
	s, r := newServer(t)
	_, sshKey := signers(t)
	commit(t, r, "main", "one", map[string]string{"a.yaml": "x: 1\n"})
	if _, err := r.CommitSigned("main", "signed", sshKey); err != nil {
		t.Fatal(err)
	}
	principal, key, _ := strings.Cut(sshKey.Public, " ")
	for opts, trusted := range map[string]bool{
		`namespaces="git"`:         true,
		`namespaces="file,other"`:  false,
		`valid-before="20000101Z"`: false,
		`valid-after="20000101Z"`:  true,
		`valid-after="29990101Z"`:  false,
	} {
		trust, err := ParseTrustedKeys(map[string][]byte{"allowed_signers": []byte(principal + " " + opts + " " + key)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = newCache(t).Fetch(context.Background(), Request{URL: s.URL("shop"), Verify: &Verify{Mode: VerifyHead, Trust: trust}})
		if (err == nil) != trusted {
			t.Errorf("%s: trusted = %v (%v), want %v", opts, err == nil, err, trusted)
		}
	}
}

func TestFetch_VerifiesSignedTags(t *testing.T) {
	s, r := newServer(t)
	pgp, sshKey := signers(t)
	trust, err := ParseTrustedKeys(map[string][]byte{"keys.asc": []byte(pgp.Public), "allowed_signers": []byte(sshKey.Public)})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, r, "main", "one", map[string]string{"a.yaml": "x: 1\n"})
	c := newCache(t)
	fetch := func(ref Ref) (*Artifact, error) {
		return c.Fetch(context.Background(), Request{URL: s.URL("shop"), Ref: ref, Verify: &Verify{Mode: VerifyTag, Trust: trust}})
	}
	if err := r.TagSigned("v1.0.0", "release 1", pgp); err != nil {
		t.Fatal(err)
	}
	if err := r.TagSigned("v1.1.0", "release 1.1", sshKey); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []Ref{{Tag: "v1.0.0"}, {Semver: "~1.1"}} {
		a, err := fetch(ref)
		if err != nil || a.Signer == nil {
			t.Fatalf("%s: %v", ref, err)
		}
	}
	if err := r.TagSigned("v2.0.0", "unsigned", nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Tag("v3.0.0"); err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[Ref]string{{Tag: "v2.0.0"}: "tag v2.0.0", {Tag: "v3.0.0"}: "lightweight", {Branch: "main"}: "needs the app to follow a tag"} {
		_, err := fetch(ref)
		var verr *VerificationError
		if !errors.As(err, &verr) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: want a VerificationError with %q, got %v", ref, want, err)
		}
	}
}

func TestParseTrustedKeys_Errors(t *testing.T) {
	_, sshKey := signers(t)
	key := strings.SplitN(sshKey.Public, " ", 2)[1] // "ssh-ed25519 AAAA... comment"
	for name, tc := range map[string]struct {
		data map[string][]byte
		want string
	}{
		"none":        {map[string][]byte{"README": []byte("hi")}, "no trusted keys"},
		"bad pgp":     {map[string][]byte{"a.asc": []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n-----END PGP PUBLIC KEY BLOCK-----\n")}, "a.asc: not an OpenPGP public key"},
		"bad signers": {map[string][]byte{"allowed_signers": []byte("alice@example.com ssh-ed25519 notbase64!\n")}, "allowed_signers: line 1"},
		"bad option":  {map[string][]byte{"allowed_signers": []byte("a@b frobnicate " + key)}, `unknown option "frobnicate"`},
		"ca line":     {map[string][]byte{"allowed_signers": []byte("a@b cert-authority " + key)}, "cert-authority keys are not supported"},
	} {
		_, err := ParseTrustedKeys(tc.data)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, tc.want)
		}
	}
	// Options that are understood keep the key trusted.
	if _, err := ParseTrustedKeys(map[string][]byte{"allowed_signers": []byte(`a@b namespaces="git",valid-after="20200101" ` + key)}); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
}

func TestRestore_WritesARollbackCommit(t *testing.T) {
	s, r := newServer(t)
	old := commit(t, r, "main", "one", map[string]string{"app/a.yaml": "v: 1\n", "other/b.yaml": "b: 1\n"})
	commit(t, r, "main", "two", map[string]string{"app/a.yaml": "v: 2\n", "app/new.yaml": "n: 1\n"})
	commit(t, r, "main", "three", map[string]string{"other/b.yaml": "b: 2\n"})
	c := newCache(t)
	ctx := context.Background()
	res, err := c.Restore(ctx, RestoreRequest{URL: s.URL("shop"), Branch: "main", Path: "app/", Target: old,
		Message: func(string) string { return "Roll back app" }, Author: "converge", AuthorEmail: "converge@localhost"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Fetch(ctx, Request{URL: s.URL("shop"), Ref: Ref{Branch: "main"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Revision != res.Commit || a.Commit.Subject != "Roll back app" {
		t.Fatalf("branch tip %s %q, want the restore commit %s", a.Revision, a.Commit.Subject, res.Commit)
	}
	if got := readFile(t, a, "app/a.yaml"); got != "v: 1\n" {
		t.Fatalf("app/a.yaml = %q", got)
	}
	if got := readFile(t, a, "other/b.yaml"); got != "b: 2\n" {
		t.Fatalf("other/b.yaml = %q: outside the path must stay", got)
	}
	if _, err := exec.Command("test", "-e", a.Dir+"/app/new.yaml").Output(); err == nil {
		t.Fatal("app/new.yaml should be gone")
	}
	if _, err := c.Restore(ctx, RestoreRequest{URL: s.URL("shop"), Branch: "main", Path: "app", Target: old, Message: func(string) string { return "again" }, Author: "c", AuthorEmail: "c@x"}); !errors.Is(err, ErrNothingToRestore) {
		t.Fatalf("restoring again: %v", err)
	}
	n, tip, err := c.CountBehind(ctx, s.URL("shop"), nil, false, "main", old, 100)
	if err != nil || n != 3 || tip != res.Commit {
		t.Fatalf("CountBehind = %d, %s, %v; want 3", n, tip, err)
	}
}
