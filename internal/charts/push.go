package charts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PushRequest is a directory to ship as an OCI artifact.
type PushRequest struct {
	// Dir is packed: regular files and directories (links refused).
	Dir string
	// URL is oci://host/repository:tag.
	URL string
	// Source and Revision are recorded as the artifact's
	// org.opencontainers.image.source and .revision.
	Source, Revision string
	Auth             *Auth
	Insecure         bool
}

// PushArtifact packs req.Dir as Flux packs it (`flux push artifact`): a
// gzipped tar layer of Flux's content media type, so that Flux and converge
// both read it. The archive is reproducible: sorted, with fixed times and
// owners. It returns the manifest's digest.
func (c *Cache) PushArtifact(ctx context.Context, req PushRequest) (string, error) {
	u, err := neturl.Parse(req.URL)
	if err != nil || u.Scheme != "oci" || u.Host == "" {
		return "", fmt.Errorf("%q: want oci://host/repository:tag", req.URL)
	}
	var nameOpts []name.Option
	if req.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	ref, err := name.ParseReference(strings.TrimSuffix(u.Host+u.Path, "/"), nameOpts...)
	if err != nil {
		return "", err
	}
	data, err := packDir(req.Dir)
	if err != nil {
		return "", err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: static.NewLayer(data, types.MediaType(FluxContentMediaType))})
	if err != nil {
		return "", err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.MediaType(FluxConfigMediaType))
	ann := map[string]string{"org.opencontainers.image.created": time.Now().UTC().Format(time.RFC3339)}
	if req.Source != "" {
		ann["org.opencontainers.image.source"] = req.Source
	}
	if req.Revision != "" {
		ann["org.opencontainers.image.revision"] = req.Revision
	}
	img = mutate.Annotations(img, ann).(v1.Image)
	opts, err := c.registryOptions(ctx, req.Auth)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, sanitized(err))
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// packDir is a reproducible gzipped tar of dir's regular files.
func packDir(dir string) ([]byte, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	size := int64(0)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if d.Name() == ".git" && d.IsDir() {
			return filepath.SkipDir
		}
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel) + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		case !d.Type().IsRegular():
			return fmt.Errorf("%s: links and special files cannot be pushed", p)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if size += info.Size(); size > MaxArtifactExtracted {
			return fmt.Errorf("%s: over %d bytes in all", dir, MaxArtifactExtracted)
		}
		if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Typeflag: tar.TypeReg, Mode: 0o644, Size: info.Size()}); err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
