// Package images scans container registries for tags, picks the latest
// tag a policy allows, and writes it into manifests at their markers:
// the parts of image update automation that are not a reconciler. A
// registry's answers are hostile input: a scan is bounded in tags, bytes
// and time, and reaches the registry only through the egress policy.
package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/egress"
	"converge.dev/converge/internal/redact"
)

// Limits of one scan.
const (
	// DefaultTagLimit is the most tags a scan reads unless its
	// ImageRepository says otherwise; MaxTagLimit the most it may say.
	DefaultTagLimit = 1000
	MaxTagLimit     = 10000
	// MaxResponseBytes bounds each answer the registry gives (a page of
	// tags, a manifest, a token).
	MaxResponseBytes = 4 << 20
	// ScanTimeout bounds a whole scan, signatures included.
	ScanTimeout = 2 * time.Minute
	// maxTagLength is the longest tag the OCI distribution spec allows.
	maxTagLength = 128
)

// DefaultExclusions leave out cosign's signature, attestation and SBOM
// tags.
var DefaultExclusions = []string{`^sha256-[0-9a-f]+\.(sig|att|sbom)$`}

// Scan asks for the tags of one image repository.
type Scan struct {
	// Image is "registry/path" without a tag.
	Image    string
	Insecure bool
	Auth     *charts.Auth
	// Egress reaches the registry; egress.Open() when nil.
	Egress *egress.Policy
	// TagLimit bounds the tags read: a registry listing more is an error.
	TagLimit int
	// Exclude are regular expressions of tags to leave out.
	Exclude []string
}

// Repository parses the image as a registry repository.
func (s Scan) Repository() (name.Repository, error) {
	var opts []name.Option
	if s.Insecure {
		opts = append(opts, name.Insecure)
	}
	opts = append(opts, name.StrictValidation)
	repo, err := name.NewRepository(s.Image, opts...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("image %q: %w", s.Image, err)
	}
	return repo, nil
}

// Options are the remote options that reach the registry: the egress
// policy's transport, each answer bounded to MaxResponseBytes, and the
// credentials.
func (s Scan) Options(ctx context.Context) []remote.Option {
	policy := s.Egress
	if policy == nil {
		policy = egress.Open()
	}
	var a authn.Authenticator = authn.Anonymous
	if s.Auth != nil && (s.Auth.Username != "" || s.Auth.Password != "" || s.Auth.Token != "") {
		a = authn.FromConfig(authn.AuthConfig{Username: s.Auth.Username, Password: s.Auth.Password, RegistryToken: s.Auth.Token})
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(a), remote.WithTransport(bounded{policy.Transport()})}
}

// Tags lists the repository's tags, leaving out the excluded ones, sorted.
// More than TagLimit tags is an error, not a silent cut: a policy must
// never pick from part of the list.
func (s Scan) Tags(ctx context.Context) ([]string, error) {
	limit := s.TagLimit
	if limit <= 0 {
		limit = DefaultTagLimit
	}
	limit = min(limit, MaxTagLimit)
	exclude := make([]*regexp.Regexp, 0, len(s.Exclude))
	for i, e := range s.Exclude {
		re, err := regexp.Compile(e)
		if err != nil {
			return nil, fmt.Errorf("spec.exclusionList[%d]: %w", i, err)
		}
		exclude = append(exclude, re)
	}
	repo, err := s.Repository()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, ScanTimeout)
	defer cancel()
	puller, err := remote.NewPuller(s.Options(ctx)...)
	if err != nil {
		return nil, err
	}
	lister, err := puller.Lister(ctx, repo)
	if err != nil {
		return nil, fmt.Errorf("listing the tags of %s: %w", repo, Sanitized(err))
	}
	read := 0
	// Never nil: an empty repository is a scan result too.
	tags := []string{}
	for lister.HasNext() {
		page, err := lister.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing the tags of %s: %w", repo, Sanitized(err))
		}
		read += len(page.Tags)
		if read > limit {
			return nil, fmt.Errorf("%s lists more than spec.tagLimit (%d) tags: raise it (at most %d) or exclude tags", repo, limit, MaxTagLimit)
		}
	next:
		for _, t := range page.Tags {
			if t == "" || len(t) > maxTagLength {
				continue
			}
			for _, re := range exclude {
				if re.MatchString(t) {
					continue next
				}
			}
			tags = append(tags, t)
		}
	}
	slices.Sort(tags)
	return slices.Compact(tags), nil
}

// Digest is the manifest digest of repo:tag (a HEAD request).
func Digest(repo name.Repository, tag string, opts []remote.Option) (string, error) {
	desc, err := remote.Head(repo.Tag(tag), opts...)
	if err != nil {
		return "", fmt.Errorf("%s:%s: %w", repo, tag, Sanitized(err))
	}
	return desc.Digest.String(), nil
}

// ListDigest is a short digest of a sorted tag list: it changes when a
// tag appears or goes.
func ListDigest(tags []string) string {
	h := sha256.New()
	for _, t := range tags {
		h.Write([]byte(t))
		h.Write([]byte{0})
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Sanitized is err without credentials, or the egress policy's refusal as
// it is (it names no more than the address).
func Sanitized(err error) error {
	var refused *egress.RefusedError
	if errors.As(err, &refused) {
		return refused
	}
	return errors.New(redact.Message(err.Error()))
}

// bounded caps every response body at MaxResponseBytes: a registry that
// answers with more fails the request instead of filling memory.
type bounded struct{ next http.RoundTripper }

func (b bounded) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > MaxResponseBytes {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: the answer is over the %d byte limit", req.Method, redact.URL(req.URL.String()), MaxResponseBytes)
	}
	resp.Body = &limitedBody{r: resp.Body, left: MaxResponseBytes}
	return resp, nil
}

type limitedBody struct {
	r    io.ReadCloser
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// One byte more tells a body at the limit from one over it.
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("a registry answer is over the %d byte limit", MaxResponseBytes)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

func (l *limitedBody) Close() error { return l.r.Close() }
