package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"converge.dev/converge/internal/redact"
)

// Request asks for a revision of a repository.
type Request struct {
	URL  string
	Ref  Ref
	Auth *Auth
	// MaxAge lets the cache answer without asking the server when it
	// resolved the same URL and ref less than MaxAge ago. Zero always asks,
	// unless NotBefore says otherwise.
	MaxAge time.Duration
	// NotBefore, when set, lets the cache answer from a resolution that
	// started after it: the answer reflects every push made before then.
	NotBefore time.Time
	// Verify, when set, refuses a revision whose signature is missing or
	// not made by a trusted key, before anything is extracted from it.
	Verify *Verify
	// Insecure allows sending a username and password over plain http://.
	// Without it such a request is refused before anything is sent.
	Insecure bool
}

// Artifact is a fetched revision: a read-only checkout of its tree.
type Artifact struct {
	URL string
	// RefName is the ref that was resolved (refs/heads/main), empty for a
	// pinned commit.
	RefName  string
	Revision string
	// Dir holds the tree. It is shared: never write to it.
	Dir    string
	Commit CommitInfo
	// Signer is set when the revision's signature was verified.
	Signer *Signer
	// CheckedAt is when the ref was last resolved against the server (the
	// ls-remote began): the answer holds every push made before it.
	CheckedAt time.Time
}

// CommitInfo describes a commit: for status, history (where it is stored
// as this JSON) and previews. It is converge's one commit type.
type CommitInfo struct {
	Author         string    `json:"author,omitempty"`
	AuthorEmail    string    `json:"authorEmail,omitempty"`
	Committer      string    `json:"committer,omitempty"`
	CommitterEmail string    `json:"committerEmail,omitempty"`
	Date           time.Time `json:"date"`
	Subject        string    `json:"subject,omitempty"`
}

// Cache fetches and keeps revisions, one bare repository per URL, shared by
// every caller. Concurrent requests for one repository wait for a single
// fetch.
type Cache struct {
	dir string
	// AllowFileURLs permits file:// repositories (tests only).
	AllowFileURLs bool
	// Keep is how many checkouts each repository keeps (default 5).
	Keep int
	// Limits bound each checkout; zero takes DefaultCheckoutLimits.
	Limits CheckoutLimits
	// Timeout bounds each git command; zero means DefaultTimeout.
	Timeout time.Duration
	// AllowedHosts, when not empty, are the only hosts repositories may be
	// fetched from: exact names ("git.example.com") or "*.example.com" for
	// any subdomain. A host may carry a port ("git.example.com:8443").
	AllowedHosts []string

	mu    sync.Mutex
	repos map[string]*repo
}

type repo struct {
	mu       sync.Mutex // one git operation at a time per repository
	bare     string
	resolved map[Ref]resolution
	trees    []string // checkout dirs, oldest first
	// known holds what was learnt of each checked-out commit, so a request
	// answered from the cache runs no git at all.
	known map[string]CommitInfo
	// verified caches signature checks by commit, tag object, mode and
	// trusted keys.
	verified map[string]verifyResult
	// tags holds the annotated tag objects known to be present.
	tags map[string]bool
}

type verifyResult struct {
	signer *Signer
	err    error
}

type resolution struct {
	refName, commit string
	// tagObject is the annotated tag object refName points to, if any.
	tagObject string
	at        time.Time
}

// NewCache keeps its repositories under dir.
func NewCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &Cache{dir: dir, Keep: 5, repos: map[string]*repo{}}, nil
}

// repo returns the repository for url as seen with auth. The cache is
// keyed by URL and credential identity: what one set of credentials
// fetched is never served to a caller with other credentials, or none, so
// an app cannot read a private repository by naming a URL another app
// fetched.
func (c *Cache) repo(url string, auth *Auth) *repo {
	key := url + "\x00" + auth.identity()
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.repos[key]
	if r == nil {
		sum := sha256.Sum256([]byte(key))
		r = &repo{bare: filepath.Join(c.dir, hex.EncodeToString(sum[:12])), resolved: map[Ref]resolution{}}
		c.repos[key] = r
	}
	return r
}

// Fetch resolves req.Ref and returns a checkout of that commit, fetching it
// only if the cache does not hold it yet. One request resolves the ref
// (ls-remote) unless MaxAge allows reusing a recent answer; one shallow
// fetch brings a commit the cache lacks.
func (c *Cache) Fetch(ctx context.Context, req Request) (*Artifact, error) {
	r, g, done, err := c.open(ctx, req.URL, req.Auth, req.Insecure)
	if err != nil {
		return nil, err
	}
	defer done()
	safeURL := redact.URL(req.URL)
	fail := func(err error) (*Artifact, error) {
		return nil, fmt.Errorf("%s: %w", safeURL, err)
	}
	res, ok := r.resolved[req.Ref]
	pinned := req.Ref.pinnedCommit()
	fresh := ok && ((req.MaxAge > 0 && time.Since(res.at) < req.MaxAge) ||
		(!req.NotBefore.IsZero() && res.at.After(req.NotBefore)))
	if !fresh || pinned != "" {
		if pinned != "" {
			res = resolution{commit: pinned, at: time.Now()}
		} else {
			// at is when the question was asked: the answer holds every
			// push made before it.
			asked := time.Now()
			out, err := g.run(ctx, r.bare, "ls-remote", "--", req.URL)
			if err != nil {
				return fail(err)
			}
			refs, tags := parseLsRemote(string(out))
			name, commit, err := refs.resolve(req.Ref)
			if err != nil {
				return fail(err)
			}
			res = resolution{refName: name, commit: commit, tagObject: tags[name], at: asked}
		}
		r.resolved[req.Ref] = res
	}

	if info, ok := r.known[res.commit]; ok && (res.tagObject == "" || r.tags[res.tagObject]) {
		dir := filepath.Join(r.bare+"-trees", res.commit)
		if _, err := os.Stat(dir); err == nil {
			signer, err := c.verify(ctx, g, r, req, res)
			if err != nil {
				return nil, err
			}
			return &Artifact{URL: safeURL, RefName: res.refName, Revision: res.commit, Dir: dir, Commit: info, Signer: signer, CheckedAt: res.at}, nil
		}
	}
	if !c.has(ctx, g, r, res.commit) || (res.tagObject != "" && !c.has(ctx, g, r, res.tagObject)) {
		// Fetch by ref name when there is one: every server serves its
		// advertised refs, not every one serves a bare commit id.
		want := res.commit
		if res.refName != "" {
			want = res.refName
		}
		if _, err := g.run(ctx, r.bare, "fetch", "-q", "--depth=1", "--no-tags", "--", req.URL, want); err != nil {
			return fail(err)
		}
		if res.refName != "" {
			// The ref may have moved since it was resolved: take what came.
			out, err := g.run(ctx, r.bare, "rev-parse", "FETCH_HEAD", "FETCH_HEAD^{commit}")
			if err != nil {
				return fail(err)
			}
			ids := strings.Fields(string(out))
			if len(ids) != 2 {
				return fail(fmt.Errorf("unexpected rev-parse output"))
			}
			res.tagObject, res.commit = "", ids[1]
			if ids[0] != ids[1] {
				res.tagObject = ids[0]
			}
			r.resolved[req.Ref] = res
		}
	}
	if res.tagObject != "" {
		if r.tags == nil {
			r.tags = map[string]bool{}
		}
		r.tags[res.tagObject] = true
	}
	// Verify before extracting: an untrusted tree is never written out.
	signer, err := c.verify(ctx, g, r, req, res)
	if err != nil {
		return nil, err
	}
	dir, err := c.checkout(ctx, g, r, res.commit)
	if err != nil {
		return fail(err)
	}
	info, err := commitInfo(ctx, g, r.bare, res.commit)
	if err != nil {
		return fail(err)
	}
	if r.known == nil {
		r.known = map[string]CommitInfo{}
	}
	r.known[res.commit] = info
	return &Artifact{URL: safeURL, RefName: res.refName, Revision: res.commit, Dir: dir, Commit: info, Signer: signer, CheckedAt: res.at}, nil
}

// verify checks the signature req.Verify asks for, remembering the answer.
func (c *Cache) verify(ctx context.Context, g *gitRunner, r *repo, req Request, res resolution) (*Signer, error) {
	v := req.Verify
	if v == nil {
		return nil, nil
	}
	if v.Trust == nil {
		return nil, &VerificationError{Revision: res.commit, Object: "commit", Reason: "no trusted keys"}
	}
	key := strings.Join([]string{res.commit, res.refName, res.tagObject, v.Mode, v.Trust.ID}, "\x00")
	if got, ok := r.verified[key]; ok {
		return got.signer, got.err
	}
	signer, err := c.check(ctx, g, r, v, res)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if r.verified == nil || len(r.verified) > 1024 {
		r.verified = map[string]verifyResult{}
	}
	r.verified[key] = verifyResult{signer, err}
	return signer, err
}

func (c *Cache) check(ctx context.Context, g *gitRunner, r *repo, v *Verify, res resolution) (*Signer, error) {
	switch v.Mode {
	case VerifyTag:
		tag, isTag := strings.CutPrefix(res.refName, "refs/tags/")
		if !isTag {
			return nil, &VerificationError{Revision: res.commit, Object: "commit", Reason: "verify mode \"tag\" needs the app to follow a tag or a semver range"}
		}
		object := "tag " + tag
		if res.tagObject == "" {
			return nil, &VerificationError{Revision: res.commit, Object: object, Reason: "it is a lightweight tag; only annotated tags can be signed"}
		}
		raw, err := g.run(ctx, r.bare, "cat-file", "tag", res.tagObject)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", redact.URL(g.url), err)
		}
		signer, err := v.Trust.VerifyTag(raw)
		if err != nil {
			return nil, &VerificationError{Revision: res.commit, Object: object, Reason: err.Error()}
		}
		return signer, nil
	case VerifyHead, "":
		raw, err := g.run(ctx, r.bare, "cat-file", "commit", res.commit)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", redact.URL(g.url), err)
		}
		signer, err := v.Trust.VerifyCommit(raw)
		if err != nil {
			return nil, &VerificationError{Revision: res.commit, Object: "commit", Reason: err.Error()}
		}
		return signer, nil
	}
	return nil, fmt.Errorf("unknown verify mode %q (want head or tag)", v.Mode)
}

// open locks url's repository (one git operation at a time per
// repository), creates its bare repository if need be, and returns a git
// runner with a scratch directory for this call; done unlocks and cleans up.
func (c *Cache) open(ctx context.Context, url string, auth *Auth, insecure bool) (r *repo, g *gitRunner, done func(), err error) {
	if err := c.allowed(url, auth, insecure); err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", redact.URL(url), err)
	}
	r = c.repo(url, auth)
	r.mu.Lock()
	tmp, err := os.MkdirTemp(c.dir, "call-")
	if err != nil {
		r.mu.Unlock()
		return nil, nil, nil, err
	}
	done = func() {
		_ = os.RemoveAll(tmp)
		r.mu.Unlock()
	}
	g = &gitRunner{url: url, auth: auth, tmp: tmp, allowFile: c.AllowFileURLs, timeout: c.Timeout}
	if _, err := os.Stat(filepath.Join(r.bare, "HEAD")); err != nil {
		if _, err := g.run(ctx, "", "init", "--bare", "-q", r.bare); err != nil {
			done()
			return nil, nil, nil, fmt.Errorf("%s: %w", redact.URL(url), err)
		}
	}
	return r, g, done, nil
}

// allowed refuses, before anything is sent, a URL whose scheme or host this
// cache may not reach, and credentials that would cross the network in
// clear text.
func (c *Cache) allowed(raw string, auth *Auth, insecure bool) error {
	if strings.HasPrefix(raw, "file://") {
		if !c.AllowFileURLs {
			return fmt.Errorf("file:// repositories are not allowed")
		}
		return nil
	}
	inline := false
	if u, err := neturl.Parse(raw); err == nil && u.User != nil {
		_, inline = u.User.Password()
	}
	if strings.HasPrefix(raw, "http://") && (inline || (auth != nil && (auth.Username != "" || auth.Password != ""))) && !insecure {
		return fmt.Errorf("refusing to send credentials over plain http:// (use https://, or set insecure: true to allow it)")
	}
	if host := repoHost(raw); !HostAllowed(c.AllowedHosts, host) {
		return fmt.Errorf("host %q is not among the allowed source hosts", host)
	}
	return nil
}

// HostAllowed says whether host (lower-case, with its port when not the
// scheme's default) matches one of allowed (host, host:port or
// *.domain); any host does when allowed is empty.
func HostAllowed(allowed []string, host string) bool {
	if len(allowed) == 0 {
		return true
	}
	host = strings.ToLower(host)
	for _, h := range allowed {
		h = strings.ToLower(h)
		if host == h || (strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:])) {
			return true
		}
	}
	return false
}

// repoHost is the lower-cased host (and port, when not the scheme's
// default) of a repository URL, scp-like SSH forms included.
func repoHost(raw string) string {
	s := raw
	if !strings.Contains(s, "://") {
		if at := strings.Index(s, "@"); at >= 0 {
			if host, _, ok := strings.Cut(s[at+1:], ":"); ok {
				return strings.ToLower(host)
			}
		}
	}
	u, err := neturl.Parse(s)
	if err != nil {
		return ""
	}
	host := strings.ToLower(u.Hostname())
	switch p := u.Port(); {
	case p == "":
	case (u.Scheme == "https" && p == "443") || (u.Scheme == "http" && p == "80") || (u.Scheme == "ssh" && p == "22"):
	default:
		host += ":" + p
	}
	return host
}

func (c *Cache) has(ctx context.Context, g *gitRunner, r *repo, commit string) bool {
	_, err := g.run(ctx, r.bare, "cat-file", "-e", commit+"^{commit}")
	return err == nil
}

// checkout extracts commit's tree into trees/<commit> once, keeping the
// newest Keep trees.
func (c *Cache) checkout(ctx context.Context, g *gitRunner, r *repo, commit string) (string, error) {
	dir := filepath.Join(r.bare+"-trees", commit)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	limits := c.Limits
	if limits == (CheckoutLimits{}) {
		limits = DefaultCheckoutLimits()
	}
	if err := extract(ctx, g, r.bare, commit, tmp, limits); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("checking out %s: %w", commit, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	r.trees = append(r.trees, dir)
	keep := c.Keep
	if keep <= 0 {
		keep = 5
	}
	for len(r.trees) > keep {
		_ = os.RemoveAll(r.trees[0])
		delete(r.known, filepath.Base(r.trees[0]))
		r.trees = r.trees[1:]
	}
	return dir, nil
}

func commitInfo(ctx context.Context, g *gitRunner, bare, commit string) (CommitInfo, error) {
	out, err := g.run(ctx, bare, "log", "-1", "--format=%an%x00%ae%x00%cn%x00%ce%x00%cI%x00%s", commit)
	if err != nil {
		return CommitInfo{}, err
	}
	f := strings.SplitN(strings.TrimRight(string(out), "\n"), "\x00", 6)
	if len(f) != 6 {
		return CommitInfo{}, fmt.Errorf("unexpected git log output")
	}
	date, _ := time.Parse(time.RFC3339, f[4])
	return CommitInfo{Author: f[0], AuthorEmail: f[1], Committer: f[2], CommitterEmail: f[3], Date: date, Subject: f[5]}, nil
}
