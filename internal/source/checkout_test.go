package source

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"converge.dev/converge/internal/testutil/gitserver"
)

func TestFetch_LinkBesideDirectoryOfOneNameWritesNothingOutside(t *testing.T) {
	s, r := newServer(t)
	outside := t.TempDir()
	commit(t, r, "main", "first", map[string]string{"a.yaml": "a: 1\n"})
	if _, err := r.CommitRaw("main", "write through a link", []gitserver.RawEntry{
		{Mode: "100644", Path: "a.yaml", Content: "a: 2\n"},
		{Mode: "120000", Path: "evil", Content: outside},
		{Mode: "100644", Path: "evil/pwned", Content: "written outside the checkout\n"},
	}); err != nil {
		t.Fatal(err)
	}
	_, err := newCache(t).Fetch(context.Background(), Request{URL: s.URL(r.Name)})
	if err == nil {
		t.Fatal("a tree with a symlink and a directory of one name was checked out")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("the checkout wrote outside its directory: %v", entries)
	}
}

func TestFetch_DotDotEntriesAreRefused(t *testing.T) {
	s, r := newServer(t)
	if _, err := r.CommitRaw("main", "escape", []gitserver.RawEntry{
		{Mode: "100644", Path: "../../escaped.yaml", Content: "a: 1\n"},
	}); err != nil {
		t.Fatal(err)
	}
	c := newCache(t)
	_, err := c.Fetch(context.Background(), Request{URL: s.URL(r.Name)})
	if err == nil {
		t.Fatal("a tree with a \"..\" entry was checked out")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(c.dir), "escaped.yaml")); err == nil {
		t.Fatal("the \"..\" entry was written")
	}
}

// The cache's bare repository is where a filter, a hook or an fsmonitor
// would be configured. Even with all three set there, and asked for by the
// tree's .gitattributes, a checkout runs none of them.
func TestFetch_RunsNoFilterHookOrFsmonitor(t *testing.T) {
	s, r := newServer(t)
	commit(t, r, "main", "first", map[string]string{"a.yaml": "a: 1\n"})
	c := newCache(t)
	if _, err := c.Fetch(context.Background(), Request{URL: s.URL(r.Name)}); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	hooks := t.TempDir()
	writeExecutable(t, filepath.Join(hooks, "post-checkout"), "#!/bin/sh\ntouch "+marker+"-hook\n")
	writeExecutable(t, filepath.Join(hooks, "reference-transaction"), "#!/bin/sh\ntouch "+marker+"-hook\n")
	config := fmt.Sprintf("[filter \"evil\"]\n\tsmudge = touch %[1]s-smudge; cat\n\tclean = cat\n\trequired = true\n[core]\n\thooksPath = %[2]s\n\tfsmonitor = touch %[1]s-fsmonitor\n", marker, hooks)
	bare := c.repo(s.URL(r.Name), nil).bare
	f, err := os.OpenFile(filepath.Join(bare, "config"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(config); err != nil {
		t.Fatal(err)
	}
	f.Close()
	second := commit(t, r, "main", "ask for the filter", map[string]string{".gitattributes": "* filter=evil\n*.yaml export-subst\n", "a.yaml": "a: 2 $Format:%H$\n"})
	a, err := c.Fetch(context.Background(), Request{URL: s.URL(r.Name)})
	if err != nil {
		t.Fatal(err)
	}
	if a.Revision != second || readFile(t, a, "a.yaml") != "a: 2 $Format:%H$\n" {
		t.Errorf("got %s %q, want the blob as committed", a.Revision, readFile(t, a, "a.yaml"))
	}
	for _, suffix := range []string{"-smudge", "-hook", "-fsmonitor"} {
		if _, err := os.Stat(marker + suffix); err == nil {
			t.Errorf("git ran a program from the repository's configuration (%s)", suffix)
		}
	}
}

func writeExecutable(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestParseTree_RefusesUnsafeShapes(t *testing.T) {
	blob := "100644 blob 0123456789012345678901234567890123456789\t"
	link := "120000 blob 0123456789012345678901234567890123456789\t"
	tree := "040000 tree 0123456789012345678901234567890123456789\t"
	for name, listing := range map[string][]string{
		"a name twice":              {blob + "a", blob + "a"},
		"a file below a link":       {link + "a", tree + "a", blob + "a/b"},
		"a file below a file":       {blob + "a", blob + "a/b"},
		"dot-dot":                   {blob + "../x"},
		"dot-dot inside":            {tree + "a", blob + "a/../../x"},
		"absolute":                  {blob + "/etc/passwd"},
		"dot":                       {blob + "./x"},
		"empty component":           {blob + "a//b"},
		"backslash":                 {blob + "..\\x"},
		"no tab":                    {"100644 blob 0123456789012345678901234567890123456789 a"},
		"a link then its directory": {link + "d", tree + "d", tree + "d/e", blob + "d/e/f"},
	} {
		t.Run(name, func(t *testing.T) {
			out := strings.Join(listing, "\x00") + "\x00"
			if _, err := parseTree([]byte(out), DefaultCheckoutLimits()); err == nil {
				t.Errorf("parseTree accepted %q", listing)
			}
		})
	}
	ok := strings.Join([]string{tree + "a", blob + "a/b", link + "c", blob + "d"}, "\x00") + "\x00"
	entries, err := parseTree([]byte(ok), DefaultCheckoutLimits())
	if err != nil || len(entries) != 4 {
		t.Fatalf("parseTree(a sound tree) = %v, %v", entries, err)
	}
	if _, err := parseTree([]byte(ok), CheckoutLimits{MaxEntries: 3, MaxBytes: 1}); err == nil {
		t.Error("a tree over MaxEntries was accepted")
	}
}

func TestWithoutRemoteLines_DropsWhatTheServerSaid(t *testing.T) {
	got := withoutRemoteLines("remote: {\"metadata\": \"secret\"}\nremote: more\nfatal: repository not found\n")
	if got != "fatal: repository not found" {
		t.Errorf("got %q", got)
	}
}

// FuzzExtract feeds arbitrary tree listings and link targets to the tree
// check and the writer. Whatever it accepts must land inside the checkout.
func FuzzExtract(f *testing.F) {
	blob := "100644 blob 0123456789012345678901234567890123456789\t"
	link := "120000 blob 0123456789012345678901234567890123456789\t"
	tree := "040000 tree 0123456789012345678901234567890123456789\t"
	f.Add(tree+"a\x00"+blob+"a/b\x00", "../outside")
	f.Add(link+"a\x00"+tree+"a\x00"+blob+"a/b\x00", "../outside")
	f.Add(link+"l\x00"+blob+"f\x00", "/tmp")
	f.Add(blob+"../x\x00", "x")
	f.Fuzz(func(t *testing.T, listing, target string) {
		entries, err := parseTree([]byte(listing), CheckoutLimits{MaxEntries: 64, MaxBytes: 1 << 20})
		if err != nil {
			return
		}
		base := t.TempDir()
		dir, outside := filepath.Join(base, "checkout"), filepath.Join(base, "outside")
		for _, d := range []string{dir, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		var stream strings.Builder
		var blobs []treeEntry
		for _, e := range entries {
			switch e.typ {
			case "tree":
				if err := root.Mkdir(e.path, 0o755); err != nil {
					return
				}
			case "blob":
				content := "x"
				if e.mode == "120000" {
					content = target
				}
				fmt.Fprintf(&stream, "%s blob %d\n%s\n", e.id, len(content), content)
				blobs = append(blobs, e)
			}
		}
		_ = writeBlobs(root, bufio.NewReader(strings.NewReader(stream.String())), blobs, CheckoutLimits{MaxEntries: 64, MaxBytes: 1 << 20})
		if got, _ := os.ReadDir(outside); len(got) != 0 {
			t.Fatalf("listing %q, target %q wrote outside the checkout: %v", listing, target, got)
		}
		if got, _ := os.ReadDir(base); len(got) != 2 {
			t.Fatalf("listing %q, target %q wrote beside the checkout: %v", listing, target, got)
		}
	})
}

func TestFetch_CachedPrivateContentIsNeverServedToOtherCredentials(t *testing.T) {
	s, r := newServer(t)
	s.Username, s.Password = "team-b", "b-s3cret-token"
	rev := commit(t, r, "main", "private", map[string]string{"a.yaml": "private: true\n"})
	c := newCache(t)
	ctx := context.Background()
	owner := &Auth{Username: "team-b", Password: "b-s3cret-token"}
	if _, err := c.Fetch(ctx, Request{URL: s.URL(r.Name), Auth: owner, Insecure: true}); err != nil {
		t.Fatalf("the owner's fetch: %v", err)
	}
	for name, req := range map[string]Request{
		"no credentials, by branch":    {URL: s.URL(r.Name)},
		"no credentials, by commit":    {URL: s.URL(r.Name), Ref: Ref{Commit: rev}},
		"wrong credentials, by commit": {URL: s.URL(r.Name), Ref: Ref{Commit: rev}, Auth: &Auth{Username: "team-a", Password: "a-token-123"}, Insecure: true},
	} {
		if a, err := c.Fetch(ctx, req); err == nil {
			t.Errorf("%s: served %s from the cache", name, a.Revision)
		}
	}
}

func TestFetch_CredentialsAreNeverSentOverPlainHTTP(t *testing.T) {
	s, r := newServer(t)
	commit(t, r, "main", "first", map[string]string{"a.yaml": "a: 1\n"})
	_, err := newCache(t).Fetch(context.Background(), Request{URL: s.URL(r.Name), Auth: &Auth{Username: "u", Password: "p4ssword"}})
	if err == nil || !strings.Contains(err.Error(), "plain http://") {
		t.Fatalf("error = %v, want a refusal to send credentials over http://", err)
	}
	if n := s.Fetches(r.Name); n != 0 {
		t.Errorf("the server was asked %d time(s)", n)
	}
}

func TestFetch_OnlyAllowedHosts(t *testing.T) {
	s, r := newServer(t)
	commit(t, r, "main", "first", map[string]string{"a.yaml": "a: 1\n"})
	c := newCache(t)
	c.AllowedHosts = []string{"git.example.com", "*.example.org"}
	_, err := c.Fetch(context.Background(), Request{URL: s.URL(r.Name)})
	if err == nil || !strings.Contains(err.Error(), "not among the allowed source hosts") || s.Fetches(r.Name) != 0 {
		t.Fatalf("error = %v, fetches %d; want a refusal before any request", err, s.Fetches(r.Name))
	}
	c.AllowedHosts = append(c.AllowedHosts, strings.TrimPrefix(strings.Split(s.URL(r.Name), "/")[2], ""))
	if _, err := c.Fetch(context.Background(), Request{URL: s.URL(r.Name)}); err != nil {
		t.Fatalf("an allowed host: %v", err)
	}
	for raw, want := range map[string]string{
		"https://Git.Example.com/a.git":    "git.example.com",
		"https://git.example.com:443/a":    "git.example.com",
		"ssh://git@git.example.com:2222/a": "git.example.com:2222",
		"git@git.example.com:org/a.git":    "git.example.com",
		"http://x.example.org:80/a":        "x.example.org",
	} {
		if got := repoHost(raw); got != want {
			t.Errorf("repoHost(%q) = %q, want %q", raw, got, want)
		}
	}
}

// A server that accepts connections and never answers fails the fetch
// within the timeout, naming the repository, and frees it for the next
// caller.
func TestFetch_StallingServerTimesOut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	c := newCache(t)
	c.Timeout = 2 * time.Second
	url := "http://" + l.Addr().String() + "/stall.git"
	start := time.Now()
	_, err = c.Fetch(context.Background(), Request{URL: url})
	if err == nil || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "no answer within 2s") {
		t.Fatalf("error = %v, want a timeout naming %s", err, url)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the fetch took %s", d)
	}
}
