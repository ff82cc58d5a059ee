package charts

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"converge.dev/converge/internal/testutil/chartrepo"
)

const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"

func newCache(t *testing.T) *Cache {
	t.Helper()
	c, err := NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFetch_HelmRepositoryVersionsRangesAndDigests(t *testing.T) {
	repo := chartrepo.NewHelmRepo()
	defer repo.Close()
	archives := map[string][]byte{}
	for _, v := range []string{"1.0.0", "1.1.0", "1.2.0-rc.1", "2.0.0"} {
		archives[v] = chartrepo.Package("web", v, map[string]string{"templates/cm.yaml": cm})
		repo.Add("web", v, archives[v])
	}
	c := newCache(t)
	ctx := context.Background()
	for version, want := range map[string]string{"": "2.0.0", "~1.0": "1.0.0", "1.x": "1.1.0", "1.1.0": "1.1.0", ">=1.2.0-0 <2": "1.2.0-rc.1"} {
		got, err := c.Fetch(ctx, Request{RepoURL: repo.URL, Chart: "web", Version: version})
		if err != nil {
			t.Fatalf("version %q: %v", version, err)
		}
		if got.Version != want {
			t.Errorf("version %q resolved to %s, want %s", version, got.Version, want)
		}
		data, err := os.ReadFile(got.Path)
		if err != nil || !bytes.Equal(data, archives[want]) || got.Digest != chartrepo.Digest(archives[want]) {
			t.Errorf("version %q: the cached archive is not the published one (digest %s)", version, got.Digest)
		}
	}
	// Cached by digest: fetching again downloads nothing.
	before := repo.Requests["/web-1.1.0.tgz"]
	if _, err := c.Fetch(ctx, Request{RepoURL: repo.URL, Chart: "web", Version: "1.1.0"}); err != nil {
		t.Fatal(err)
	}
	if repo.Requests["/web-1.1.0.tgz"] != before {
		t.Error("a cached chart was downloaded again")
	}
	if _, err := c.Fetch(ctx, Request{RepoURL: repo.URL, Chart: "web", Version: "1.1.0", Digest: "sha256:" + strings.Repeat("0", 64)}); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("a digest mismatch: %v", err)
	}
	if _, err := c.Fetch(ctx, Request{RepoURL: repo.URL, Chart: "web", Version: "3.x"}); err == nil || !strings.Contains(err.Error(), "web 3.x") {
		t.Errorf("no matching version: %v", err)
	}
	if _, err := c.Fetch(ctx, Request{RepoURL: repo.URL, Chart: "nope"}); err == nil {
		t.Error("an unknown chart was found")
	}
}

func TestFetch_HelmRepositoryCredentialsAndHosts(t *testing.T) {
	repo := chartrepo.NewHelmRepo()
	defer repo.Close()
	repo.Username, repo.Password = "reader", "s3cret-token"
	repo.Add("web", "1.0.0", chartrepo.Package("web", "1.0.0", map[string]string{"templates/cm.yaml": cm}))
	c := newCache(t)
	ctx := context.Background()
	_, err := c.Fetch(ctx, Request{RepoURL: repo.URL, Chart: "web"})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without credentials: %v", err)
	}
	auth := &Auth{Username: "reader", Password: "s3cret-token"}
	if _, err := c.Fetch(ctx, Request{RepoURL: repo.URL, Chart: "web", Auth: auth}); err == nil || !strings.Contains(err.Error(), "plain http") {
		t.Fatalf("credentials over http without insecure: %v", err)
	}
	if _, err := c.Fetch(ctx, Request{RepoURL: repo.URL, Chart: "web", Auth: auth, Insecure: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(ctx, Request{RepoURL: strings.Replace(repo.URL, "http://", "http://reader:s3cret-token@", 1), Chart: "web"}); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("credentials in the URL: %v", err)
	}
	c.AllowedHosts = []string{"charts.example.com"}
	n := repo.Requests["/index.yaml"]
	if _, err := c.Fetch(ctx, Request{RepoURL: repo.URL, Chart: "web", Auth: auth, Insecure: true}); err == nil || !strings.Contains(err.Error(), "not among the allowed") {
		t.Errorf("a host not allowed: %v", err)
	}
	if repo.Requests["/index.yaml"] != n {
		t.Error("a host not allowed was asked")
	}
}

func TestFetch_CredentialsStayOnTheRepositoryHost(t *testing.T) {
	files := chartrepo.NewHelmRepo() // where the index points
	defer files.Close()
	archive := chartrepo.Package("web", "1.0.0", map[string]string{"templates/cm.yaml": cm})
	files.Add("web", "1.0.0", archive)
	index := chartrepo.NewHelmRepo()
	defer index.Close()
	index.AddAt("web", "1.0.0", files.URL+"/web-1.0.0.tgz", archive)
	c := newCache(t)
	_, err := c.Fetch(context.Background(), Request{RepoURL: index.URL, Chart: "web", Auth: &Auth{Username: "u", Password: "p"}, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if index.Authorized["/index.yaml"] == 0 {
		t.Error("the repository's own host got no credentials")
	}
	if files.Requests["/web-1.0.0.tgz"] != 1 || files.Authorized["/web-1.0.0.tgz"] != 0 {
		t.Error("credentials went to another host")
	}
}

func TestFetch_OCIRegistryTagsRangesAndDigests(t *testing.T) {
	reg := chartrepo.NewRegistry()
	defer reg.Close()
	digests := map[string]string{}
	for _, v := range []string{"0.9.0", "1.0.0", "1.0.1", "2.0.0-beta.1"} {
		d, err := reg.Push("charts/api", v, chartrepo.Package("api", v, map[string]string{"templates/cm.yaml": cm}))
		if err != nil {
			t.Fatal(err)
		}
		digests[v] = d
	}
	c := newCache(t)
	ctx := context.Background()
	for version, want := range map[string]string{"": "1.0.1", "1.0.0": "1.0.0", "~1.0": "1.0.1", "<1": "0.9.0"} {
		got, err := c.Fetch(ctx, Request{RepoURL: "oci://" + reg.Host + "/charts", Chart: "api", Version: version})
		if err != nil {
			t.Fatalf("version %q: %v", version, err)
		}
		if got.Version != want || got.Digest != digests[want] {
			t.Errorf("version %q: got %s (%s), want %s (%s)", version, got.Version, got.Digest, want, digests[want])
		}
		data, err := os.ReadFile(got.Path)
		if err != nil || !bytes.Equal(data, chartrepo.Package("api", want, map[string]string{"templates/cm.yaml": cm})) {
			t.Errorf("version %q: the cached archive is not the pushed one", version)
		}
	}
	if _, err := c.Fetch(ctx, Request{RepoURL: "oci://" + reg.Host + "/charts", Chart: "api", Version: "1.0.0", Digest: digests["1.0.1"]}); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("a digest mismatch: %v", err)
	}
}

func TestFetch_TransientFailuresAreToldApart(t *testing.T) {
	repo := chartrepo.NewHelmRepo()
	repo.Add("web", "1.0.0", chartrepo.Package("web", "1.0.0", nil))
	c := newCache(t)
	ctx := context.Background()
	_, err := c.Fetch(ctx, Request{RepoURL: repo.URL + "/nothing-here", Chart: "web"})
	if err == nil || Transient(err) {
		t.Errorf("a 404: %v (transient %v), want a permanent failure", err, Transient(err))
	}
	if _, err := c.Fetch(ctx, Request{RepoURL: repo.URL, Chart: "web", Version: "9.x"}); err == nil || Transient(err) {
		t.Errorf("no such version: %v, want a permanent failure", err)
	}
	repo.Close()
	if _, err := c.Fetch(ctx, Request{RepoURL: repo.URL, Chart: "web"}); err == nil || !Transient(err) {
		t.Errorf("a refused connection: %v, want a transient failure", err)
	}
}

func TestFetch_BearerToken(t *testing.T) {
	repo := chartrepo.NewHelmRepo()
	defer repo.Close()
	repo.Token = "t0ken"
	repo.Add("web", "1.0.0", chartrepo.Package("web", "1.0.0", nil))
	c := newCache(t)
	if _, err := c.Fetch(context.Background(), Request{RepoURL: repo.URL, Chart: "web"}); err == nil {
		t.Fatal("fetched without the token")
	}
	if _, err := c.Fetch(context.Background(), Request{RepoURL: repo.URL, Chart: "web", Auth: &Auth{Token: "t0ken"}, Insecure: true}); err != nil {
		t.Fatal(err)
	}
}

func TestFetch_RedirectsOnlyToAllowedHosts(t *testing.T) {
	files := chartrepo.NewHelmRepo()
	defer files.Close()
	archive := chartrepo.Package("web", "1.0.0", nil)
	files.Add("web", "1.0.0", archive)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, files.URL+r.URL.Path, http.StatusFound)
	}))
	defer redirector.Close()
	index := chartrepo.NewHelmRepo()
	defer index.Close()
	index.AddAt("web", "1.0.0", redirector.URL+"/web-1.0.0.tgz", archive)
	c := newCache(t)
	host := func(u string) string { return strings.TrimPrefix(u, "http://") }
	c.AllowedHosts = []string{host(index.URL), host(redirector.URL)}
	_, err := c.Fetch(context.Background(), Request{RepoURL: index.URL, Chart: "web"})
	if err == nil || !strings.Contains(err.Error(), "not among the allowed") {
		t.Fatalf("a redirect to a host not allowed: %v", err)
	}
	if files.Requests["/web-1.0.0.tgz"] != 0 {
		t.Error("the redirect was followed")
	}
	c.AllowedHosts = append(c.AllowedHosts, host(files.URL))
	if _, err := c.Fetch(context.Background(), Request{RepoURL: index.URL, Chart: "web"}); err != nil {
		t.Fatal(err)
	}
}
