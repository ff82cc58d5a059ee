// Package charts fetches Helm charts from Helm repositories (an HTTP(S)
// index.yaml) and OCI registries, by exact version or semver range, into
// one cache of chart archives keyed by digest. It only fetches and checks:
// charts are loaded and rendered by the render worker, within its limits.
package charts

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	repo "helm.sh/helm/v4/pkg/repo/v1"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/internal/egress"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/render"
)

// Limits on what a repository may make the agent download.
const (
	// MaxIndexSize bounds an index.yaml (the largest public ones are a
	// few tens of MiB).
	MaxIndexSize = 64 << 20
	// MaxChartSize bounds a chart archive.
	MaxChartSize = 20 << 20
)

// Helm's media type for a chart's content layer in an OCI artifact.
const chartLayerMediaType = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

// Request names a chart.
type Request struct {
	// RepoURL is a Helm repository (https:// or http://, serving
	// index.yaml) or an OCI registry path (oci://host/path).
	RepoURL string
	// Chart is the chart's name; in an OCI registry the repository is
	// RepoURL/Chart.
	Chart string
	// Version is an exact version or a semver range ("4.x", ">=1.2 <2");
	// empty takes the newest version that is not a pre-release.
	Version string
	// Digest, when set ("sha256:<hex>"), must be the chart's: the
	// archive's for a Helm repository (as index.yaml lists it), the
	// manifest's for an OCI registry.
	Digest string
	Auth   *Auth
	// Insecure allows sending credentials over plain http.
	Insecure bool
	// Allow, when set, must accept every URL fetched for the request:
	// the repository, the chart URL its index lists, and (in Render) the
	// repository of each dependency. The app's Tenant decides.
	Allow func(rawURL string) error
	// MaxAge lets an index or tag list fetched less than MaxAge ago
	// answer without asking the server again.
	MaxAge time.Duration
}

// Auth holds a repository's credentials and CA.
type Auth struct {
	// Username and Password: HTTP basic auth, or a registry login.
	Username, Password string
	// Token is a bearer token: sent as "Authorization: Bearer" to a Helm
	// repository, used as the registry token for an OCI registry.
	Token string
	// CA is a PEM bundle trusted for the repository's TLS.
	CA []byte
}

func (a *Auth) has() bool { return a != nil && (a.Username != "" || a.Password != "" || a.Token != "") }

func (a *Auth) identity() string {
	if a == nil {
		return ""
	}
	sum := sha256.Sum256([]byte(a.Username + "\x00" + a.Password + "\x00" + a.Token + "\x00" + string(a.CA)))
	return hex.EncodeToString(sum[:8])
}

// Chart is a fetched chart.
type Chart struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Digest identifies exactly what was fetched (see Request.Digest).
	Digest string `json:"digest"`
	// URL is where it came from, credentials removed.
	URL string `json:"url"`
	// Path is the archive in the cache. It is shared: never write to it.
	Path string `json:"-"`
}

// Cache fetches charts into dir.
type Cache struct {
	dir string
	// AllowedHosts, when not empty, are the only hosts charts may come
	// from ("charts.example.com", "*.example.com", with a port or not).
	AllowedHosts []string
	// Timeout bounds each request; zero means a minute.
	Timeout time.Duration
	// Egress is checked on every connection; nil reaches everything but
	// link-local and metadata addresses.
	Egress *egress.Policy

	mu      sync.Mutex
	indexes map[string]listing
	locks   map[string]*sync.Mutex
}

// listing is a cached index.yaml or OCI tag list.
type listing struct {
	at    time.Time
	index *repo.IndexFile
	tags  []string
	// artifact is an OCI artifact a reference resolved to.
	artifact *Artifact
}

// NewCache returns a cache of charts in dir.
func NewCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &Cache{dir: dir, indexes: map[string]listing{}, locks: map[string]*sync.Mutex{}}, nil
}

// EmptyDir is an empty directory: the repository root of an app whose
// only source is a chart.
func (c *Cache) EmptyDir() string {
	dir := filepath.Join(c.dir, "empty")
	_ = os.MkdirAll(dir, 0o500)
	return dir
}

// Fetch resolves req to one chart version and returns its archive,
// downloading it unless the cache holds that digest.
func (c *Cache) Fetch(ctx context.Context, req Request) (*Chart, error) {
	if req.Chart == "" {
		return nil, errors.New("chart: a chart name is required")
	}
	u, err := neturl.Parse(req.RepoURL)
	if err != nil {
		return nil, fmt.Errorf("chart repository %s: %w", redact.Message(req.RepoURL), err)
	}
	if u.User != nil {
		return nil, fmt.Errorf("chart repository %s: credentials go in the secretRef, not the URL", redact.URL(req.RepoURL))
	}
	if err := c.allowed(u.Host); err != nil {
		return nil, err
	}
	if req.Allow != nil {
		if err := req.Allow(req.RepoURL); err != nil {
			return nil, err
		}
	}
	key := req.RepoURL + "\x00" + req.Chart + "\x00" + req.Auth.identity()
	lock := c.lock(key)
	lock.Lock()
	defer lock.Unlock()
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch u.Scheme {
	case "oci":
		return c.fetchOCI(ctx, key, u, req)
	case "https":
	case "http":
		if req.Auth.has() && !req.Insecure {
			return nil, fmt.Errorf("chart repository %s: refusing to send credentials over plain http (set insecure to allow it)", req.RepoURL)
		}
	default:
		return nil, fmt.Errorf("chart repository %s: use https://, http:// or oci://", redact.URL(req.RepoURL))
	}
	return c.fetchHTTP(ctx, key, u, req)
}

func (c *Cache) lock(key string) *sync.Mutex {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.locks[key]
	if l == nil {
		l = &sync.Mutex{}
		c.locks[key] = l
	}
	return l
}

func (c *Cache) listing(key string, maxAge time.Duration) (listing, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.indexes[key]
	return l, ok && maxAge > 0 && time.Since(l.at) < maxAge
}

func (c *Cache) remember(key string, l listing) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.indexes[key] = l
}

func (c *Cache) allowed(host string) error {
	if len(c.AllowedHosts) == 0 {
		return nil
	}
	host = strings.ToLower(host)
	bare := host
	if h, _, ok := strings.Cut(host, ":"); ok {
		bare = h
	}
	for _, a := range c.AllowedHosts {
		a = strings.ToLower(a)
		if host == a || bare == a || (strings.HasPrefix(a, "*.") && (strings.HasSuffix(host, a[1:]) || strings.HasSuffix(bare, a[1:]))) {
			return nil
		}
	}
	return fmt.Errorf("chart repository host %s is not among the allowed source hosts", host)
}

// client is an HTTP client trusting the request's CA, if any, that follows
// a redirect only to an allowed host (see AllowedHosts).
func (c *Cache) client(req Request) (*http.Client, error) {
	policy := c.Egress
	if policy == nil {
		policy = egress.Open()
	}
	t := policy.Transport()
	if req.Auth != nil && len(req.Auth.CA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(req.Auth.CA) {
			return nil, errors.New("the repository's CA holds no PEM certificate")
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		return c.allowed(r.URL.Host)
	}}, nil
}

func (c *Cache) fetchHTTP(ctx context.Context, key string, u *neturl.URL, req Request) (*Chart, error) {
	hc, err := c.client(req)
	if err != nil {
		return nil, fmt.Errorf("chart repository %s: %w", req.RepoURL, err)
	}
	l, fresh := c.listing(key, req.MaxAge)
	if !fresh {
		indexURL := u.JoinPath("index.yaml")
		data, err := get(ctx, hc, indexURL.String(), u.Host, req.Auth, MaxIndexSize)
		if err != nil {
			return nil, fmt.Errorf("chart repository %s: index.yaml: %w", req.RepoURL, err)
		}
		idx, err := parseIndex(data)
		if err != nil {
			return nil, fmt.Errorf("chart repository %s: index.yaml: %w", req.RepoURL, err)
		}
		l = listing{at: time.Now(), index: idx}
		c.remember(key, l)
	}
	cv, err := l.index.Get(req.Chart, req.Version)
	if err != nil {
		return nil, fmt.Errorf("chart %s %s in %s: %w", req.Chart, orNewest(req.Version), req.RepoURL, err)
	}
	if len(cv.URLs) == 0 {
		return nil, fmt.Errorf("chart %s %s in %s: the index gives no URL", req.Chart, cv.Version, req.RepoURL)
	}
	listed := ""
	if cv.Digest != "" {
		listed = "sha256:" + strings.TrimPrefix(cv.Digest, "sha256:")
	}
	if req.Digest != "" && listed != "" && listed != req.Digest {
		return nil, fmt.Errorf("chart %s %s in %s: the index lists another digest than the %s asked for", req.Chart, cv.Version, redact.URL(req.RepoURL), req.Digest)
	}
	out := &Chart{Name: req.Chart, Version: cv.Version}
	if listed != "" {
		if path := c.path(listed, req.Auth); exists(path) {
			out.Digest, out.Path, out.URL = listed, path, redact.URL(cv.URLs[0])
			return out, nil
		}
	}
	chartURL, err := u.Parse(cv.URLs[0])
	if err != nil {
		return nil, fmt.Errorf("chart %s %s: URL %s: %w", req.Chart, cv.Version, redact.URL(cv.URLs[0]), err)
	}
	if chartURL.Scheme != "https" && chartURL.Scheme != "http" {
		return nil, fmt.Errorf("chart %s %s: URL %s: only http(s) is fetched", req.Chart, cv.Version, redact.URL(chartURL.String()))
	}
	if err := c.allowed(chartURL.Host); err != nil {
		return nil, err
	}
	if req.Allow != nil {
		if err := req.Allow(chartURL.String()); err != nil {
			return nil, fmt.Errorf("chart %s %s: the URL its index lists: %w", req.Chart, cv.Version, err)
		}
	}
	// Credentials go only to the repository's own host, as Helm does.
	data, err := get(ctx, hc, chartURL.String(), u.Host, req.Auth, MaxChartSize)
	if err != nil {
		return nil, fmt.Errorf("chart %s %s: %w", req.Chart, cv.Version, err)
	}
	sum := sha256.Sum256(data)
	got := "sha256:" + hex.EncodeToString(sum[:])
	// What answered is not named: its digest would tell of content the
	// tenant should not learn from the agent.
	if listed != "" && listed != got {
		return nil, fmt.Errorf("chart %s %s from %s: the archive does not match the digest its index lists", req.Chart, cv.Version, redact.URL(chartURL.String()))
	}
	if req.Digest != "" && req.Digest != got {
		return nil, fmt.Errorf("chart %s %s from %s: the archive does not match the digest %s asked for", req.Chart, cv.Version, redact.URL(chartURL.String()), req.Digest)
	}
	path, err := c.store(got, req.Auth, data)
	if err != nil {
		return nil, err
	}
	out.Digest, out.Path, out.URL = got, path, redact.URL(chartURL.String())
	return out, nil
}

// parseIndex reads a repository's index.yaml (hostile input: fuzzed).
func parseIndex(data []byte) (*repo.IndexFile, error) {
	idx := &repo.IndexFile{}
	if err := yaml.Unmarshal(data, idx); err != nil {
		return nil, err
	}
	// An entry without its chart metadata (null, or a bare list item)
	// would crash lookups: it is dropped, as Helm's own loader drops it.
	for name, versions := range idx.Entries {
		kept := versions[:0]
		for _, cv := range versions {
			if cv != nil && cv.Metadata != nil {
				kept = append(kept, cv)
			}
		}
		if len(kept) == 0 {
			delete(idx.Entries, name)
			continue
		}
		idx.Entries[name] = kept
	}
	idx.SortEntries()
	return idx, nil
}

// get reads url, sending auth only when url is on authHost, at most limit
// bytes.
func get(ctx context.Context, hc *http.Client, url, authHost string, auth *Auth, limit int64) ([]byte, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if auth.has() && r.URL.Host == authHost {
		if auth.Token != "" {
			r.Header.Set("Authorization", "Bearer "+auth.Token)
		} else {
			r.SetBasicAuth(auth.Username, auth.Password)
		}
	}
	resp, err := hc.Do(r)
	if err != nil {
		if egress.IsRefused(err) {
			return nil, sanitized(err)
		}
		return nil, &netError{msg: redact.Message(err.Error()), transient: transientNet(err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &netError{msg: fmt.Sprintf("GET %s: %s", redact.URL(url), resp.Status),
			transient: resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", redact.URL(url), err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("GET %s: over the %d byte limit", redact.URL(url), limit)
	}
	return data, nil
}

func (c *Cache) fetchOCI(ctx context.Context, key string, u *neturl.URL, req Request) (*Chart, error) {
	repoPath := strings.TrimSuffix(u.Host+u.Path, "/")
	if !strings.HasSuffix(repoPath, "/"+req.Chart) {
		repoPath += "/" + req.Chart
	}
	var nameOpts []name.Option
	if req.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	repository, err := name.NewRepository(repoPath, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("chart registry %s: %w", req.RepoURL, err)
	}
	opts, err := c.registryOptions(ctx, req.Auth)
	if err != nil {
		return nil, fmt.Errorf("chart registry %s: %w", req.RepoURL, err)
	}

	tag, err := c.ociTag(ctx, key, repository, req, opts)
	if err != nil {
		return nil, err
	}
	ref := repository.Tag(tag)
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("chart %s:%s: %w", repoPath, tag, sanitized(err))
	}
	digest := desc.Digest.String()
	if req.Digest != "" && req.Digest != digest {
		return nil, fmt.Errorf("chart %s:%s: the manifest does not match the digest %s asked for", repoPath, tag, req.Digest)
	}
	version := strings.ReplaceAll(tag, "_", "+") // Helm's tag spelling of build metadata
	out := &Chart{Name: req.Chart, Version: version, Digest: digest, URL: "oci://" + repoPath + ":" + tag}
	if path := c.path(digest, req.Auth); exists(path) {
		out.Path = path
		return out, nil
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("chart %s:%s: %w", repoPath, tag, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("chart %s:%s: %w", repoPath, tag, err)
	}
	for _, l := range layers {
		mt, err := l.MediaType()
		if err != nil || string(mt) != chartLayerMediaType {
			continue
		}
		if size, err := l.Size(); err != nil || size > MaxChartSize {
			return nil, fmt.Errorf("chart %s:%s: the chart layer is over the %d byte limit", repoPath, tag, MaxChartSize)
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, fmt.Errorf("chart %s:%s: %w", repoPath, tag, err)
		}
		data, err := io.ReadAll(io.LimitReader(rc, MaxChartSize+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("chart %s:%s: %w", repoPath, tag, err)
		}
		if len(data) > MaxChartSize {
			return nil, fmt.Errorf("chart %s:%s: the chart layer is over the %d byte limit", repoPath, tag, MaxChartSize)
		}
		want, _ := l.Digest()
		if sum := sha256.Sum256(data); "sha256:"+hex.EncodeToString(sum[:]) != want.String() {
			return nil, fmt.Errorf("chart %s:%s: the chart layer does not match its digest", repoPath, tag)
		}
		if out.Path, err = c.store(digest, req.Auth, data); err != nil {
			return nil, err
		}
		return out, nil
	}
	return nil, fmt.Errorf("chart %s:%s: no Helm chart layer (%s) in the artifact", repoPath, tag, chartLayerMediaType)
}

// registryOptions reach a registry as auth, through the egress policy.
func (c *Cache) registryOptions(ctx context.Context, auth *Auth) ([]remote.Option, error) {
	hc, err := c.client(Request{Auth: auth})
	if err != nil {
		return nil, err
	}
	var a authn.Authenticator = authn.Anonymous
	if auth.has() {
		a = authn.FromConfig(authn.AuthConfig{Username: auth.Username, Password: auth.Password, RegistryToken: auth.Token})
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(a), remote.WithTransport(hc.Transport)}, nil
}

// ociTag picks the tag for req.Version: the version itself when exact,
// else the highest tag matching the range.
func (c *Cache) ociTag(ctx context.Context, key string, repository name.Repository, req Request, opts []remote.Option) (string, error) {
	if req.Version != "" {
		if v, err := semver.StrictNewVersion(strings.TrimPrefix(req.Version, "v")); err == nil && !strings.ContainsAny(req.Version, "^~*xX<>=| ,") {
			_ = v
			return strings.ReplaceAll(req.Version, "+", "_"), nil
		}
	}
	constraint := "*"
	if req.Version != "" {
		constraint = req.Version
	}
	cons, err := semver.NewConstraint(constraint)
	if err != nil {
		return "", fmt.Errorf("chart %s: version %q: %w", req.Chart, req.Version, err)
	}
	l, fresh := c.listing(key, req.MaxAge)
	if !fresh {
		tags, err := remote.List(repository, opts...)
		if err != nil {
			return "", fmt.Errorf("chart registry %s: listing tags: %w", repository, sanitized(err))
		}
		l = listing{at: time.Now(), tags: tags}
		c.remember(key, l)
	}
	type tv struct {
		tag string
		v   *semver.Version
	}
	var match []tv
	for _, t := range l.tags {
		v, err := semver.NewVersion(strings.ReplaceAll(t, "_", "+"))
		if err == nil && cons.Check(v) {
			match = append(match, tv{t, v})
		}
	}
	if len(match) == 0 {
		return "", fmt.Errorf("chart %s: no tag in %s matches %s", req.Chart, repository, orNewest(req.Version))
	}
	sort.Slice(match, func(i, j int) bool { return match[i].v.GreaterThan(match[j].v) })
	return match[0].tag, nil
}

// path is where the archive of digest, fetched with auth, is kept: by
// digest and credential identity, as Git checkouts are, so a chart fetched
// with one tenant's credentials never answers another's request.
func (c *Cache) path(digest string, auth *Auth) string {
	name := strings.ReplaceAll(digest, ":", "-")
	if id := auth.identity(); id != "" {
		name += "-" + id
	}
	return filepath.Join(c.dir, name+".tgz")
}

// store writes data, whose digest is digest, into the cache atomically.
func (c *Cache) store(digest string, auth *Auth, data []byte) (string, error) {
	path := c.path(digest, auth)
	tmp, err := os.CreateTemp(c.dir, ".chart-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func orNewest(v string) string {
	if v == "" {
		return "(newest)"
	}
	return v
}

// Render renders opts, first fetching into the cache the chart
// dependencies it needs from Helm repositories and OCI registries (those
// not vendored in charts/): the render names what it lacks, the cache
// fetches it, and the render runs again with the archives.
// allow, when set, must accept each dependency's repository (see
// Request.Allow).
func (c *Cache) Render(ctx context.Context, opts render.Options, maxAge time.Duration, allow func(rawURL string) error) (*render.Result, error) {
	for round := 0; ; round++ {
		res, err := render.Render(ctx, opts)
		var missing *render.MissingDependenciesError
		if !errors.As(err, &missing) || c == nil || round == maxDependencyRounds {
			return res, err
		}
		deps := make(map[string]string, len(opts.Helm.Dependencies)+len(missing.Deps))
		for k, v := range opts.Helm.Dependencies {
			deps[k] = v
		}
		for _, d := range missing.Deps {
			if d.Repository == "" || strings.HasPrefix(d.Repository, "@") || strings.HasPrefix(d.Repository, "alias:") {
				return nil, fmt.Errorf("%s: dependency %q: repository %q: name the repository by its URL (https:// or oci://); local Helm repository names mean nothing here", missing.Chart, d.Name, d.Repository)
			}
			ch, err := c.Fetch(ctx, Request{RepoURL: d.Repository, Chart: d.Name, Version: d.Version, MaxAge: maxAge, Allow: allow})
			if err != nil {
				return nil, &FetchError{fmt.Errorf("%s: dependency %q (version %q, %s): %w", missing.Chart, d.Name, d.Version, d.Repository, err)}
			}
			deps[render.DependencyKey(d)] = ch.Path
		}
		opts.Helm.Dependencies = deps
	}
}

// sanitized is err without credentials, or the egress policy's refusal as
// it is (it names no more than the address).
func sanitized(err error) error {
	var refused *egress.RefusedError
	if errors.As(err, &refused) {
		return refused
	}
	return errors.New(redact.Message(err.Error()))
}

// netError is a failed request; transient when retrying may help (a
// timeout, a refused or reset connection, a 5xx or 429 answer), not when
// the repository answered that there is no such thing or its name does
// not resolve.
type netError struct {
	msg       string
	transient bool
}

func (e *netError) Error() string { return e.msg }

func transientNet(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.IsTemporary || dns.IsTimeout
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Transient reports whether err, from Fetch or Render, may pass if tried
// again: the network or the repository failed, rather than the chart or
// version being absent.
func Transient(err error) bool {
	var ne *netError
	return errors.As(err, &ne) && ne.transient
}

// FetchError is a failure to fetch a chart dependency (see Transient).
type FetchError struct{ Err error }

func (e *FetchError) Error() string { return e.Err.Error() }
func (e *FetchError) Unwrap() error { return e.Err }

// maxDependencyRounds bounds how often a render asks for more
// dependencies (file:// charts may need some of their own).
const maxDependencyRounds = 3
