package charts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/testutil/chartrepo"
	"converge.dev/converge/internal/testutil/sigstoretest"
)

func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A layer selector (Flux's layerSelector) picks the content layer by its
// media type, wherever it is among the layers; without one, an artifact
// whose layers are all of other types has no content, said as such; a
// selector no layer matches is named.
func TestFetchArtifact_LayerSelectorPicksTheContentLayer(t *testing.T) {
	reg := chartrepo.NewRegistry()
	defer reg.Close()
	const docs, manifests = "application/vnd.acme.docs.v1.tar+gzip", "application/vnd.acme.manifests.v1.tar+gzip"
	img, err := mutate.Append(empty.Image,
		mutate.Addendum{Layer: static.NewLayer(tarGz(t, map[string]string{"README.md": "docs"}), types.MediaType(docs))},
		mutate.Addendum{Layer: static.NewLayer(tarGz(t, map[string]string{"deploy/cm.yaml": "kind: ConfigMap"}), types.MediaType(manifests))})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg.Host + "/acme/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	c := newCache(t)
	ctx := context.Background()
	req := ArtifactRequest{URL: "oci://" + reg.Host + "/acme/app", Tag: "v1", Insecure: true}
	if _, err := c.FetchArtifact(ctx, req); err == nil || !strings.Contains(err.Error(), "no content layer") {
		t.Errorf("no selector, no layer of the known types: %v", err)
	}
	req.LayerMediaType = manifests
	a, err := c.FetchArtifact(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(a.Dir, "deploy/cm.yaml")); err != nil || string(data) != "kind: ConfigMap" {
		t.Errorf("the selected layer's file: %q, %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(a.Dir, "README.md")); err == nil {
		t.Error("the docs layer was extracted too")
	}
	req.LayerMediaType = "application/vnd.acme.other.v1.tar+gzip"
	if _, err := c.FetchArtifact(ctx, req); err == nil || !strings.Contains(err.Error(), "no layer of media type application/vnd.acme.other.v1.tar+gzip") {
		t.Errorf("a selector no layer matches: %v", err)
	}
}

// Keyless cosign verification: a signature whose certificate chains to the
// trusted Fulcio roots, names a matching OIDC identity and carries a Rekor
// bundle signed by the trusted log key passes; an unsigned artifact, a
// signer of another identity, a certificate of another authority and a
// bundle of another log are refused as VerificationErrors, before anything
// is extracted.
func TestFetchArtifact_KeylessCosign(t *testing.T) {
	reg := chartrepo.NewRegistry()
	defer reg.Close()
	trusted, err := sigstoretest.New()
	if err != nil {
		t.Fatal(err)
	}
	other, err := sigstoretest.New()
	if err != nil {
		t.Fatal(err)
	}
	push := func(repo string) string {
		t.Helper()
		img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: static.NewLayer(tarGz(t, map[string]string{"cm.yaml": "kind: ConfigMap"}), types.MediaType(FluxContentMediaType))})
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(reg.Host + "/" + repo + ":v1")
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		return d.String()
	}
	const issuer, subject = "https://token.actions.githubusercontent.com", "https://github.com/acme/app/.github/workflows/release.yaml@refs/heads/main"
	cases := []struct {
		name string
		sign func(repo, digest string) error
		ok   bool
		why  string
	}{
		{"signed by the trusted identity", func(r, d string) error { return trusted.Sign(reg.Host, r, d, issuer, subject) }, true, ""},
		{"unsigned", func(string, string) error { return nil }, false, "it is not signed"},
		{"another identity", func(r, d string) error {
			return trusted.Sign(reg.Host, r, d, issuer, "https://github.com/mallory/app/.github/workflows/x.yaml@refs/heads/main")
		}, false, "none of the expected identities"},
		{"another issuer", func(r, d string) error { return trusted.Sign(reg.Host, r, d, "https://accounts.example.com", subject) }, false, "none of the expected identities"},
		{"another authority and log", func(r, d string) error { return other.Sign(reg.Host, r, d, issuer, subject) }, false, "no keyless signature"},
		{"the trusted authority, another log", func(r, d string) error { return trusted.WithLogOf(other).Sign(reg.Host, r, d, issuer, subject) }, false, "no keyless signature"},
	}
	c := newCache(t)
	for i, tc := range cases {
		repo := fmt.Sprintf("acme/keyless-%d", i)
		digest := push(repo)
		if err := tc.sign(repo, digest); err != nil {
			t.Fatalf("%s: signing: %v", tc.name, err)
		}
		_, err := c.FetchArtifact(context.Background(), ArtifactRequest{URL: "oci://" + reg.Host + "/" + repo, Tag: "v1", Insecure: true,
			Keyless: &CosignKeyless{Roots: trusted.FulcioPEM, RekorKeys: trusted.RekorPub,
				Identities: []KeylessIdentity{{Issuer: regexp.QuoteMeta(issuer), Subject: `https://github\.com/acme/app/\.github/workflows/.*`}}}})
		var verr *source.VerificationError
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.ok && (!errors.As(err, &verr) || !strings.Contains(err.Error(), tc.why)):
			t.Errorf("%s: %v, want a VerificationError saying %q", tc.name, err, tc.why)
		}
	}
}
