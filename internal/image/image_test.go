package image_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"converge.dev/converge/internal/image"
)

// The image as `make image` builds it, for this machine's architecture:
// pushed to a registry on loopback, read back, and run from its files.
func TestBuild_PushedReadBackAndRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	platform := "linux/" + runtime.GOARCH
	dir := t.TempDir()
	bin := filepath.Join(dir, "converge")
	if err := image.BuildBinary(ctx, "../..", bin, "linux", runtime.GOARCH, "v9.9.9-test", "0123456789abcdef"); err != nil {
		t.Fatal(err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	built, err := image.Build(ctx, image.Options{Version: "v9.9.9-test", Commit: "0123456789abcdef", Source: "https://example.com/converge",
		Created: created, Binaries: map[string]string{platform: bin}, CacheDir: filepath.Join(cache, "converge", "image"), Progress: t.Logf})
	if err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ref, err := name.ParseReference(host+"/converge/agent:v9.9.9-test", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := built.Push(ctx, ref); err != nil {
		t.Fatal(err)
	}

	idx, err := remote.Index(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Platform == nil || im.Manifests[0].Platform.String() != platform {
		t.Fatalf("index manifests: %+v", im.Manifests)
	}
	imgRef := ref.Context().Digest(im.Manifests[0].Digest.String())
	img, err := remote.Image(imgRef, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if got := strings.Join(c.Entrypoint, " "); got != "/usr/local/bin/converge" {
		t.Errorf("entrypoint %q", got)
	}
	if got := strings.Join(c.Cmd, " "); got != "agent --leader-elect" {
		t.Errorf("cmd %q", got)
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (non-root)", c.User)
	}
	if !slices.Contains(c.Env, "HOME=/tmp") {
		t.Errorf("env %v: want HOME=/tmp (writable under a read-only root filesystem)", c.Env)
	}
	for k, want := range map[string]string{"org.opencontainers.image.version": "v9.9.9-test", "org.opencontainers.image.revision": "0123456789abcdef",
		"org.opencontainers.image.source": "https://example.com/converge", "org.opencontainers.image.created": "2026-12-07T00:00:00Z"} {
		if c.Labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], want)
		}
	}
	if cf.Architecture != runtime.GOARCH || cf.OS != "linux" {
		t.Errorf("config platform %s/%s", cf.OS, cf.Architecture)
	}

	// Its SBOM and provenance, found through the registry's referrers API.
	arts, err := remote.Referrers(imgRef, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	am, err := arts.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string][]byte{}
	for _, d := range am.Manifests {
		art, err := remote.Image(ref.Context().Digest(d.Digest.String()), remote.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		layers, err := art.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s: %d layers (%v)", d.ArtifactType, len(layers), err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		found[d.ArtifactType], err = io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	var sbom struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct {
			Name         string `json:"name"`
			ExternalRefs []struct {
				Locator string `json:"referenceLocator"`
			} `json:"externalRefs"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(found[image.SBOMType], &sbom); err != nil {
		t.Fatalf("SBOM (%d bytes): %v", len(found[image.SBOMType]), err)
	}
	purls := map[string]bool{}
	for _, p := range sbom.Packages {
		for _, r := range p.ExternalRefs {
			purl, _, _ := strings.Cut(r.Locator, "@")
			purls[purl] = true
		}
	}
	for _, want := range []string{"pkg:deb/debian/git", "pkg:deb/debian/openssh-client", "pkg:deb/debian/libc6", "pkg:golang/k8s.io/client-go", "pkg:golang/stdlib"} {
		if !purls[want] {
			t.Errorf("the SBOM (%s) lists no %s", sbom.SPDXVersion, want)
		}
	}
	if purls["pkg:deb/debian/perl"] {
		t.Error("the SBOM lists perl, which the base leaves out")
	}
	var prov struct {
		Type          string `json:"_type"`
		PredicateType string `json:"predicateType"`
		Subject       []struct {
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
	}
	if err := json.Unmarshal(found[image.ProvenanceType], &prov); err != nil {
		t.Fatalf("provenance: %v", err)
	}
	if prov.PredicateType != "https://slsa.dev/provenance/v1" || len(prov.Subject) != 1 || prov.Subject[0].Digest["sha256"] != im.Manifests[0].Digest.Hex {
		t.Errorf("provenance: %+v, want SLSA v1 of %s", prov, im.Manifests[0].Digest)
	}

	// Its files: run the binary and the base's git and ssh from them.
	root := filepath.Join(dir, "rootfs")
	modes := extract(t, img, root)
	if m := modes["usr/local/bin/converge"]; m.mode != 0o755 || m.uid != 0 {
		t.Errorf("converge: mode %o uid %d", m.mode, m.uid)
	}
	if m := modes["tmp"]; m.mode&0o1777 != 0o1777 {
		t.Errorf("/tmp: mode %o", m.mode)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil || !strings.Contains(string(passwd), "converge:x:65532:65532:") {
		t.Errorf("/etc/passwd: %q %v", passwd, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")); err != nil || fi.Size() < 100_000 {
		t.Errorf("CA bundle: %v %v", fi, err)
	}
	out := runIn(t, filepath.Join(root, "usr/local/bin/converge"), "version")
	if !strings.Contains(out, "v9.9.9-test") {
		t.Errorf("converge version: %q", out)
	}
	if out := runIn(t, filepath.Join(root, "usr/local/bin/converge"), "agent", "--help"); !strings.Contains(out, "--leader-elect") {
		t.Errorf("converge agent --help: %q", out)
	}
	loader, libs := dynamicLoader(root)
	if loader == "" {
		t.Fatalf("no dynamic loader for %s in the image", runtime.GOARCH)
	}
	if out := runIn(t, loader, "--library-path", libs, filepath.Join(root, "usr/bin/git"), "--version"); !strings.HasPrefix(out, "git version 2.") {
		t.Errorf("the image's git: %q", out)
	}
	if out := runIn(t, loader, "--library-path", libs, filepath.Join(root, "usr/bin/ssh"), "-V"); !strings.Contains(out, "OpenSSH") {
		t.Errorf("the image's ssh: %q", out)
	}
}

type fileMode struct {
	mode int64
	uid  int
}

// extract writes img's files under root and returns each one's mode.
func extract(t *testing.T, img v1.Image, root string) map[string]fileMode {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	modes := map[string]fileMode{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if !filepath.IsLocal(name) {
			t.Fatalf("unsafe path %q in the image", hdr.Name)
		}
		modes[name] = fileMode{mode: hdr.Mode, uid: hdr.Uid}
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			err = os.Symlink(hdr.Linkname, p)
		case tar.TypeLink:
			err = os.Link(filepath.Join(root, hdr.Linkname), p)
		case tar.TypeReg:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(hdr.Mode&0o777)); err == nil {
				_, err = io.Copy(f, tr)
				f.Close()
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", hdr.Name, err)
		}
	}
	return modes
}

// dynamicLoader is the image's own loader and library path, to run its
// programs with its libraries rather than this machine's.
func dynamicLoader(root string) (loader, libs string) {
	triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	for _, l := range []string{"lib64/ld-linux-x86-64.so.2", "lib/ld-linux-aarch64.so.1", "lib/" + triplet + "/ld-linux-x86-64.so.2", "lib/" + triplet + "/ld-linux-aarch64.so.1"} {
		if _, err := os.Stat(filepath.Join(root, l)); err == nil {
			loader = filepath.Join(root, l)
			break
		}
	}
	return loader, filepath.Join(root, "lib", triplet) + ":" + filepath.Join(root, "usr/lib", triplet)
}

func runIn(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/nonexistent"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}
