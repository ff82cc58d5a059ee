// Package image builds the agent's OCI image without a container runtime:
// Debian's packages for git and OpenSSH's client as the base (debian.go),
// the converge binary on top, run as a non-root account, one image per
// platform in an index, each with an SPDX SBOM and SLSA provenance
// attached as OCI referrers (attest.go).
package image

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Options describe the image to build.
type Options struct {
	// Version and Commit are converge's (version.Get); Source is the
	// repository's URL.
	Version, Commit, Source string
	// Created is the time every file and the image carry (the commit's
	// time makes the image reproducible).
	Created time.Time
	// Binaries are the converge binary per platform, e.g. "linux/amd64".
	Binaries map[string]string
	// CacheDir keeps apt's state and the packages between builds.
	CacheDir string
	// Progress, if set, is told what is being done.
	Progress func(format string, args ...any)
}

// Built is an image index and what is attached to its images.
type Built struct {
	Index v1.ImageIndex
	// Referrers are the SBOM and provenance of each image, each with its
	// image as its subject.
	Referrers []v1.Image
	// Packages are each platform's base packages.
	Packages map[string][]Package
}

// Build builds the image for every platform of opts.Binaries.
func Build(ctx context.Context, opts Options) (*Built, error) {
	progress := opts.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	b := &Built{Packages: map[string][]Package{}}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, platform := range slices.Sorted(maps.Keys(opts.Binaries)) {
		p, err := v1.ParsePlatform(platform)
		if err != nil {
			return nil, err
		}
		progress("image %s: resolving and fetching Debian's packages for %s", platform, p.Architecture)
		pkgs, err := DebianPackages(ctx, opts.CacheDir, p.Architecture)
		if err != nil {
			return nil, err
		}
		b.Packages[platform] = pkgs
		progress("image %s: %d packages; building the layers", platform, len(pkgs))
		img, err := platformImage(ctx, opts, *p, pkgs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", platform, err)
		}
		desc, err := describe(img, p)
		if err != nil {
			return nil, err
		}
		refs, err := attestations(opts, *p, desc, pkgs, opts.Binaries[platform])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", platform, err)
		}
		b.Referrers = append(b.Referrers, refs...)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	idx = mutate.AppendManifests(idx, adds...)
	b.Index = mutate.Annotations(idx, annotations(opts)).(v1.ImageIndex)
	return b, nil
}

// platformImage is the image for one platform.
func platformImage(ctx context.Context, opts Options, p v1.Platform, pkgs []Package) (v1.Image, error) {
	base, err := baseLayer(ctx, pkgs, opts.Created)
	if err != nil {
		return nil, err
	}
	binary, err := os.ReadFile(opts.Binaries[p.OS+"/"+p.Architecture])
	if err != nil {
		return nil, err
	}
	if err := checkBinary(opts.Binaries[p.OS+"/"+p.Architecture], p); err != nil {
		return nil, err
	}
	bin, err := binaryLayer(binary, opts.Created)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{Created: v1.Time{Time: opts.Created}, CreatedBy: "Debian packages: git, openssh-client, ca-certificates and their dependencies (internal/image)"}},
		mutate.Addendum{Layer: bin, MediaType: types.OCILayer, History: v1.History{Created: v1.Time{Time: opts.Created}, CreatedBy: "converge " + opts.Version}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: opts.Created}
	cf.Config.Entrypoint = []string{BinaryPath}
	cf.Config.Cmd = []string{"agent", "--leader-elect"}
	cf.Config.User = User
	cf.Config.WorkingDir = Home
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + Home, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cf.Config.Labels = annotations(opts)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, annotations(opts)).(v1.Image), nil
}

// checkBinary refuses a binary built for another platform, or with cgo
// (the base has no guarantee of the C library it was linked against).
func checkBinary(path string, p v1.Platform) error {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["GOOS"] != p.OS || settings["GOARCH"] != p.Architecture {
		return fmt.Errorf("%s is built for %s/%s, not %s/%s", path, settings["GOOS"], settings["GOARCH"], p.OS, p.Architecture)
	}
	if settings["CGO_ENABLED"] != "0" {
		return fmt.Errorf("%s is built with cgo; build it with CGO_ENABLED=0", path)
	}
	return nil
}

// annotations are the OCI annotations (and labels) of the index and its
// images.
func annotations(opts Options) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "converge",
		"org.opencontainers.image.description": "converge agent: GitOps continuous delivery for Kubernetes",
		"org.opencontainers.image.version":     opts.Version,
		"org.opencontainers.image.revision":    opts.Commit,
		"org.opencontainers.image.source":      opts.Source,
		"org.opencontainers.image.created":     opts.Created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.base.name":   "debian packages (see the SBOM)",
	}
}

func describe(img v1.Image, p *v1.Platform) (v1.Descriptor, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	size, err := img.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: size, Platform: p}, nil
}

// WriteLayout writes b to an OCI image layout at dir (a new one, or one
// that b's blobs are added to): the index, tagged ref in its
// annotations, and the referrers.
func (b *Built) WriteLayout(dir, ref string) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return err
		}
	}
	if err := p.AppendIndex(b.Index, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
		return err
	}
	for _, r := range b.Referrers {
		if err := p.AppendImage(r); err != nil {
			return err
		}
	}
	return nil
}

// Push pushes b's index to ref and its referrers by digest beside it.
func (b *Built) Push(ctx context.Context, ref name.Reference, opts ...remote.Option) error {
	opts = append(opts, remote.WithContext(ctx))
	if err := remote.WriteIndex(ref, b.Index, opts...); err != nil {
		return err
	}
	for _, r := range b.Referrers {
		d, err := r.Digest()
		if err != nil {
			return err
		}
		if err := remote.Write(ref.Context().Digest(d.String()), r, opts...); err != nil {
			return err
		}
	}
	return nil
}

// BuildBinary builds converge (the module at dir) for goos/goarch as the
// image runs it: no cgo, trimmed paths, no symbol tables, the version
// stamped.
func BuildBinary(ctx context.Context, dir, out, goos, goarch, version, commit string) error {
	out, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags",
		"-s -w -X converge.dev/converge/internal/version.Version="+version+" -X converge.dev/converge/internal/version.Commit="+commit,
		"-o", out, "./cmd/converge")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build for %s/%s: %w\n%s", goos, goarch, err, msg)
	}
	return nil
}
