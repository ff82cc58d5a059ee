package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"converge.dev/converge/internal/redact"

	"converge.dev/converge/internal/testutil/gitserver"
)

func newServer(t *testing.T) (*gitserver.Server, *gitserver.Repo) {
	t.Helper()
	s, err := gitserver.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	r, err := s.NewRepo("shop")
	if err != nil {
		t.Fatal(err)
	}
	return s, r
}

func commit(t *testing.T, r *gitserver.Repo, branch, msg string, files map[string]string) string {
	t.Helper()
	if err := r.Write(files); err != nil {
		t.Fatal(err)
	}
	sha, err := r.Commit(branch, msg)
	if err != nil {
		t.Fatal(err)
	}
	return sha
}

func newCache(t *testing.T) *Cache {
	t.Helper()
	c, err := NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readFile(t *testing.T, a *Artifact, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(a.Dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestFetch_BranchTagSemverAndCommit(t *testing.T) {
	s, r := newServer(t)
	first := commit(t, r, "main", "first", map[string]string{"app/cm.yaml": "v: 1\n"})
	if err := r.Tag("v1.0.0"); err != nil {
		t.Fatal(err)
	}
	second := commit(t, r, "main", "second", map[string]string{"app/cm.yaml": "v: 2\n"})
	if err := r.Tag("v1.2.0"); err != nil {
		t.Fatal(err)
	}
	third := commit(t, r, "main", "third", map[string]string{"app/cm.yaml": "v: 3\n"})
	if err := r.Tag("v2.0.0"); err != nil {
		t.Fatal(err)
	}
	staging := commit(t, r, "staging", "staging work", map[string]string{"app/cm.yaml": "v: staging\n"})

	c := newCache(t)
	cases := []struct {
		ref  Ref
		want string
		file string
	}{
		{Ref{}, third, "v: 3\n"},
		{Ref{Branch: "staging"}, staging, "v: staging\n"},
		{Ref{Tag: "v1.0.0"}, first, "v: 1\n"},
		{Ref{Semver: ">=1.0.0 <2.0.0"}, second, "v: 2\n"},
		{Ref{Commit: first}, first, "v: 1\n"},
	}
	for _, tc := range cases {
		a, err := c.Fetch(context.Background(), Request{URL: s.URL("shop"), Ref: tc.ref})
		if err != nil {
			t.Fatalf("%s: %v", tc.ref, err)
		}
		if a.Revision != tc.want {
			t.Errorf("%s: revision %s, want %s", tc.ref, a.Revision, tc.want)
		}
		if got := readFile(t, a, "app/cm.yaml"); got != tc.file {
			t.Errorf("%s: app/cm.yaml = %q, want %q", tc.ref, got, tc.file)
		}
	}
	a, err := c.Fetch(context.Background(), Request{URL: s.URL("shop")})
	if err != nil {
		t.Fatal(err)
	}
	if a.Commit.Author != "Test Author" || a.Commit.Subject != "third" || a.RefName != "refs/heads/main" {
		t.Errorf("commit info %+v, ref %s", a.Commit, a.RefName)
	}
}

func TestFetch_ManyCallersShareOneRequestPerInterval(t *testing.T) {
	s, r := newServer(t)
	commit(t, r, "main", "first", map[string]string{"a.yaml": "a: 1\n"})
	other, err := s.NewRepo("other")
	if err != nil {
		t.Fatal(err)
	}
	commit(t, other, "main", "first", map[string]string{"a.yaml": "a: 1\n"})
	c := newCache(t)

	// What one caller costs: one ls-remote and one fetch, each a few
	// smart-HTTP requests.
	if _, err := c.Fetch(context.Background(), Request{URL: s.URL("other"), MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	one := s.Fetches("other")

	req := Request{URL: s.URL("shop"), MaxAge: time.Hour}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Fetch(context.Background(), req); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := s.Fetches("shop"); n != one {
		t.Errorf("100 concurrent callers made %d upload-pack requests; one caller makes %d", n, one)
	}
}

func TestFetch_NewCommitIsSeenOnceMaxAgePasses(t *testing.T) {
	s, r := newServer(t)
	commit(t, r, "main", "first", map[string]string{"a.yaml": "a: 1\n"})
	c := newCache(t)
	if _, err := c.Fetch(context.Background(), Request{URL: s.URL("shop")}); err != nil {
		t.Fatal(err)
	}
	second := commit(t, r, "main", "second", map[string]string{"a.yaml": "a: 2\n"})
	a, err := c.Fetch(context.Background(), Request{URL: s.URL("shop"), MaxAge: 0})
	if err != nil {
		t.Fatal(err)
	}
	if a.Revision != second || readFile(t, a, "a.yaml") != "a: 2\n" {
		t.Errorf("got %s %q, want the new commit", a.Revision, readFile(t, a, "a.yaml"))
	}
}

func TestFetch_BasicAuthAndCredentialsNeverInErrors(t *testing.T) {
	s, r := newServer(t)
	s.Username, s.Password = "deploy", "s3cret-t0ken-value"
	commit(t, r, "main", "first", map[string]string{"a.yaml": "a: 1\n"})
	c := newCache(t)
	if _, err := c.Fetch(context.Background(), Request{URL: s.URL("shop"), Insecure: true, Auth: &Auth{Username: "deploy", Password: "s3cret-t0ken-value"}}); err != nil {
		t.Fatalf("with the right credentials: %v", err)
	}
	_, err := c.Fetch(context.Background(), Request{URL: s.URL("shop"), Insecure: true, Auth: &Auth{Username: "deploy", Password: "wrong-passw0rd-xyz"}})
	if err == nil {
		t.Fatal("wrong credentials were accepted")
	}
	if strings.Contains(err.Error(), "wrong-passw0rd-xyz") {
		t.Errorf("error leaks the password: %v", err)
	}
	withUserinfo := strings.Replace(s.URL("shop"), "http://", "http://deploy:inline-pass-123@", 1)
	_, err = c.Fetch(context.Background(), Request{URL: withUserinfo, Ref: Ref{Branch: "missing"}})
	if err == nil || strings.Contains(err.Error(), "inline-pass-123") {
		t.Errorf("error = %v; want one without the URL's password", err)
	}
}

func TestFetch_ServerDownIsAClearError(t *testing.T) {
	s, r := newServer(t)
	commit(t, r, "main", "first", map[string]string{"a.yaml": "a: 1\n"})
	c := newCache(t)
	s.Stop()
	_, err := c.Fetch(context.Background(), Request{URL: s.URL("shop")})
	if err == nil || !strings.Contains(err.Error(), s.URL("shop")) {
		t.Errorf("error = %v, want one naming the repository", err)
	}
}

func TestFetch_UnknownRefAndBadSemverAreNamed(t *testing.T) {
	s, r := newServer(t)
	commit(t, r, "main", "first", map[string]string{"a.yaml": "a: 1\n"})
	c := newCache(t)
	for ref, want := range map[Ref]string{
		{Branch: "nope"}:      "branch nope not found",
		{Tag: "v9"}:           "tag v9 not found",
		{Semver: "not a rng"}: `semver range "not a rng"`,
		{Semver: ">=5.0.0"}:   `no tag matches semver range ">=5.0.0"`,
	} {
		_, err := c.Fetch(context.Background(), Request{URL: s.URL("shop"), Ref: ref})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error = %v, want %q", ref, err, want)
		}
	}
}

func TestFetch_SSHWithoutKnownHostsIsRefused(t *testing.T) {
	c := newCache(t)
	_, err := c.Fetch(context.Background(), Request{URL: "ssh://git@127.0.0.1:1/shop.git", Auth: &Auth{Identity: []byte("key")}})
	if err == nil || !strings.Contains(err.Error(), "known_hosts") {
		t.Errorf("error = %v, want a refusal naming known_hosts", err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pass@git.example.com/a.git": "https://git.example.com/a.git",
		"https://git.example.com/a.git":           "https://git.example.com/a.git",
		"git@github.com:org/repo.git":             "git@github.com:org/repo.git",
	} {
		if got := redact.URL(in); got != want {
			t.Errorf("redact.URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFetch_PinnedOlderCommitIntoAnEmptyCache(t *testing.T) {
	s, r := newServer(t)
	first := commit(t, r, "main", "first", map[string]string{"a.yaml": "a: 1\n"})
	commit(t, r, "main", "second", map[string]string{"a.yaml": "a: 2\n"})
	a, err := newCache(t).Fetch(context.Background(), Request{URL: s.URL("shop"), Ref: Ref{Commit: first}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Revision != first || readFile(t, a, "a.yaml") != "a: 1\n" {
		t.Errorf("got %s %q", a.Revision, readFile(t, a, "a.yaml"))
	}
}

func startSSH(t *testing.T, s *gitserver.Server) *gitserver.SSHServer {
	t.Helper()
	ssh, err := s.StartSSH(t.TempDir())
	if errors.Is(err, gitserver.ErrNoSSHD) {
		t.Skip("openssh-server is not installed; .ci/run installs it")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ssh.Stop)
	return ssh
}

func TestFetch_OverSSHWithKnownHosts(t *testing.T) {
	s, r := newServer(t)
	sha := commit(t, r, "main", "first", map[string]string{"a.yaml": "a: ssh\n"})
	ssh := startSSH(t, s)
	a, err := newCache(t).Fetch(context.Background(), Request{URL: ssh.URL("shop"), Auth: &Auth{Identity: ssh.ClientKey, KnownHosts: ssh.KnownHosts}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Revision != sha || readFile(t, a, "a.yaml") != "a: ssh\n" {
		t.Errorf("got %s %q", a.Revision, readFile(t, a, "a.yaml"))
	}
}

func TestFetch_SSHUnknownHostKeyIsRefused(t *testing.T) {
	s, r := newServer(t)
	commit(t, r, "main", "first", map[string]string{"a.yaml": "a: ssh\n"})
	ssh := startSSH(t, s)
	other := startSSH(t, s) // a different host key
	_, err := newCache(t).Fetch(context.Background(), Request{URL: ssh.URL("shop"), Auth: &Auth{Identity: ssh.ClientKey, KnownHosts: other.KnownHosts}})
	if err == nil || !strings.Contains(err.Error(), "Host key verification failed") {
		t.Errorf("error = %v, want a host key verification failure", err)
	}
	if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("error leaks the private key: %v", err)
	}
}
