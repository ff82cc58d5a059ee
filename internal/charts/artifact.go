package charts

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"converge.dev/converge/internal/redact"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Media types of manifests shipped as OCI artifacts: Flux's (`flux push
// artifact`, and converge's own push) and a plain image layer (Argo CD's
// OCI sources). The first layer of either kind is the content.
const (
	FluxContentMediaType = "application/vnd.cncf.flux.content.v1.tar+gzip"
	FluxConfigMediaType  = "application/vnd.cncf.flux.config.v1+json"
	ociLayerMediaType    = "application/vnd.oci.image.layer.v1.tar+gzip"
	dockerLayerMediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// Bounds on one artifact: what a registry answer can make the agent
// download and write.
const (
	MaxArtifactSize      = 64 << 20  // compressed layer
	MaxArtifactExtracted = 256 << 20 // all files
	MaxArtifactFiles     = 20000
)

// ArtifactRequest asks for manifests shipped as an OCI artifact.
type ArtifactRequest struct {
	// URL is oci://host/repository.
	URL string
	// One of Tag, Semver (the highest tag in range) or Digest; none: latest.
	Tag, Semver, Digest string
	Auth                *Auth
	Insecure            bool
	// MaxAge: a tag listing younger than this is reused.
	MaxAge time.Duration
	// Verify, when set, refuses an artifact without a cosign signature by
	// one of these keys, before anything of it is extracted; Keyless,
	// when set, without a keyless signature that meets it.
	Verify  CosignKeys
	Keyless *CosignKeyless
	// LayerMediaType, when set, picks the layer of that media type (a
	// gzipped tar) as the content, as Flux's layerSelector does;
	// otherwise the first layer of Flux's content type or a plain image
	// layer.
	LayerMediaType string
}

// Artifact is an extracted artifact.
type Artifact struct {
	// URL is oci://host/repository:tag (or @digest).
	URL string
	Tag string
	// Digest is the manifest's; Revision "<tag>@<digest>" (Flux's form).
	Digest, Revision string
	// Dir holds the content: shared, never write to it.
	Dir string
	// Source and SourceRevision are what the artifact says it was made
	// from (org.opencontainers.image.source and .revision).
	Source, SourceRevision string
	Created                time.Time
}

// FetchArtifact resolves req to one manifest and returns its content,
// extracted into the cache (by digest and credential identity) unless
// already there. The registry is reached through the egress policy; the
// layer is checked against its digest and bounded in size, files and
// paths (no links, nothing outside the directory).
func (c *Cache) FetchArtifact(ctx context.Context, req ArtifactRequest) (*Artifact, error) {
	u, err := neturl.Parse(req.URL)
	if err != nil || u.Scheme != "oci" || u.Host == "" {
		return nil, fmt.Errorf("OCI artifact %q: want oci://host/repository", redact.URL(req.URL))
	}
	if err := c.allowed(u.Host); err != nil {
		return nil, err
	}
	var nameOpts []name.Option
	if req.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	repoPath := strings.TrimSuffix(u.Host+u.Path, "/")
	repository, err := name.NewRepository(repoPath, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("OCI artifact %s: %w", req.URL, err)
	}
	opts, err := c.registryOptions(ctx, req.Auth)
	if err != nil {
		return nil, fmt.Errorf("OCI artifact %s: %w", req.URL, err)
	}
	ref, tag, err := c.artifactRef(repository, req, opts)
	if err != nil {
		return nil, err
	}
	// A recent resolution of the same reference (with the same
	// credentials) answers: drift reconciles cost no registry request.
	key := "artifact:" + ref.String() + "|" + req.Auth.identity() + "|" + req.Verify.identity() + "|" + req.Keyless.identity()
	if l, fresh := c.listing(key, req.MaxAge); fresh && l.artifact != nil && exists(l.artifact.Dir) {
		a := *l.artifact
		return &a, nil
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("OCI artifact %s: %w", ref, sanitized(err))
	}
	digest := desc.Digest.String()
	if req.Digest != "" && req.Digest != digest {
		return nil, fmt.Errorf("OCI artifact %s: the manifest does not match the digest %s asked for", ref, req.Digest)
	}
	if err := VerifySignature(ctx, repository, digest, opts, req.Verify, req.Keyless); err != nil {
		return nil, err
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("OCI artifact %s: %w", ref, err)
	}
	out := &Artifact{URL: "oci://" + ref.String(), Tag: tag, Digest: digest, Revision: digest}
	if tag != "" {
		out.Revision = tag + "@" + digest
	}
	if m, err := img.Manifest(); err == nil {
		out.Source, out.SourceRevision = m.Annotations["org.opencontainers.image.source"], m.Annotations["org.opencontainers.image.revision"]
		out.Created, _ = time.Parse(time.RFC3339, m.Annotations["org.opencontainers.image.created"])
	}
	dir := strings.TrimSuffix(c.path(digest, req.Auth), ".tgz") + ".d"
	if req.LayerMediaType != "" {
		sum := sha256.Sum256([]byte(req.LayerMediaType))
		dir = strings.TrimSuffix(dir, ".d") + "-" + hex.EncodeToString(sum[:6]) + ".d"
	}
	if exists(dir) {
		out.Dir = dir
	} else if out.Dir, err = c.extractArtifact(img, ref.String(), dir, req.LayerMediaType); err != nil {
		return nil, err
	}
	c.remember(key, listing{at: time.Now(), artifact: out})
	a := *out
	return &a, nil
}

// artifactRef is the reference to fetch: the digest, the tag, the
// highest tag in the semver range, or latest.
func (c *Cache) artifactRef(repository name.Repository, req ArtifactRequest, opts []remote.Option) (name.Reference, string, error) {
	switch {
	case req.Digest != "":
		return repository.Digest(req.Digest), "", nil
	case req.Tag != "":
		return repository.Tag(req.Tag), req.Tag, nil
	case req.Semver != "":
		tag, err := c.ociTag(context.Background(), "artifact-tags:"+repository.String(), repository, Request{Chart: repository.RepositoryStr(), Version: req.Semver, MaxAge: req.MaxAge}, opts)
		if err != nil {
			return nil, "", err
		}
		return repository.Tag(tag), tag, nil
	}
	return repository.Tag("latest"), "latest", nil
}

// extractArtifact writes the content layer of img into dir, atomically.
func (c *Cache) extractArtifact(img v1.Image, ref, dir, mediaType string) (string, error) {
	layers, err := img.Layers()
	if err != nil {
		return "", fmt.Errorf("OCI artifact %s: %w", ref, err)
	}
	for _, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			continue
		}
		switch {
		case mediaType != "" && string(mt) != mediaType:
			continue
		case mediaType != "":
		case string(mt) == FluxContentMediaType, string(mt) == ociLayerMediaType, string(mt) == dockerLayerMediaType:
		default:
			continue
		}
		if size, err := l.Size(); err != nil || size > MaxArtifactSize {
			return "", fmt.Errorf("OCI artifact %s: the content layer is over the %d byte limit", ref, MaxArtifactSize)
		}
		// Compressed verifies the layer's digest as it is read.
		rc, err := l.Compressed()
		if err != nil {
			return "", fmt.Errorf("OCI artifact %s: %w", ref, sanitized(err))
		}
		defer rc.Close()
		tmp, err := os.MkdirTemp(c.dir, ".artifact-*")
		if err != nil {
			return "", err
		}
		if err := untar(io.LimitReader(rc, MaxArtifactSize+1), tmp); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("OCI artifact %s: %w", ref, err)
		}
		if err := os.Rename(tmp, dir); err != nil {
			os.RemoveAll(tmp)
			if exists(dir) { // another fetch of the same digest won
				return dir, nil
			}
			return "", err
		}
		return dir, nil
	}
	if mediaType != "" {
		return "", fmt.Errorf("OCI artifact %s: no layer of media type %s (layerSelector)", ref, mediaType)
	}
	return "", fmt.Errorf("OCI artifact %s: no content layer (%s or %s)", ref, FluxContentMediaType, ociLayerMediaType)
}

// untar extracts a gzipped tar stream into dir: regular files and
// directories only, every path inside dir, bounded in files and bytes.
func untar(r io.Reader, dir string) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("the content is not gzip: %w", err)
	}
	tr := tar.NewReader(gz)
	files, total := 0, int64(0)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("the content is not a tar archive: %w", err)
		}
		clean := path.Clean("/" + h.Name)
		if clean == "/" {
			continue
		}
		if strings.Contains(h.Name, "..") && clean != "/"+strings.TrimPrefix(h.Name, "/") {
			return fmt.Errorf("%q: a path that leaves the artifact", h.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(clean))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			continue
		case tar.TypeReg:
		default:
			return fmt.Errorf("%q: links and special files are not allowed in an artifact", h.Name)
		}
		files++
		total += h.Size
		if files > MaxArtifactFiles || total > MaxArtifactExtracted {
			return fmt.Errorf("the content is over %d files or %d bytes", MaxArtifactFiles, MaxArtifactExtracted)
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o444)
		if err != nil {
			return fmt.Errorf("%q: %w", h.Name, err)
		}
		_, err = io.Copy(f, io.LimitReader(tr, h.Size))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}
