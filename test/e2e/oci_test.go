//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	cosignmutate "github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	cosignstatic "github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/chartrepo"
	"converge.dev/converge/internal/testutil/kubetest"
	"converge.dev/converge/internal/testutil/sigstoretest"
)

// Manifests shipped as an OCI artifact: `converge push artifact` (Flux's
// format) to a loopback registry, an Application following a semver range
// of its tags syncs it, and a newer tag in range syncs at the next poll.
// An artifact whose tar leaves its directory is refused, naming the path,
// and nothing of it is applied.
func TestOCI_PushedArtifactSyncsAndANewTagFollows(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	reg := chartrepo.NewRegistry()
	defer reg.Close()
	push := func(tag, color string) {
		t.Helper()
		dir := writeTree(t, ns, map[string]string{
			"deploy/kustomization.yaml": "resources: [cm.yaml]\n",
			"deploy/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\ndata:\n  color: " + color + "\n",
		})
		r := convergeOffline(t, "push", "artifact", dir, "oci://"+reg.Host+"/apps/shop:"+tag, "--source", "https://git.example.com/org/shop", "--revision", "main@sha1:abc", "--insecure")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "sha256:") {
			t.Fatalf("push artifact: exit %d\n%s", r.code, r.output())
		}
	}
	push("1.0.0", "blue")
	policy := automated(true, true)
	policy.Interval = &metav1.Duration{Duration: 2 * time.Second}
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns}, Spec: v1alpha1.ApplicationSpec{
		Source:     v1alpha1.ApplicationSource{OCI: &v1alpha1.OCISource{URL: "oci://" + reg.Host + "/apps/shop", Semver: ">=1.0.0 <2", Insecure: true}, Path: "deploy"},
		SyncPolicy: policy,
	}}
	a.create(t, app)
	color := func(want string) {
		t.Helper()
		kubetest.Eventually(t, 30*time.Second, "shop is "+want, func(context.Context) (bool, error) {
			cm := get(t, "v1", "ConfigMap", ns, "shop")
			if cm == nil {
				return false, nil
			}
			got, _, _ := unstructured.NestedString(cm.Object, "data", "color")
			return got == want, nil
		})
	}
	color("blue")
	got := a.waitApp(t, ns, "shop", 30*time.Second, "synced at 1.0.0", func(app *v1alpha1.Application) bool {
		return strings.HasPrefix(app.Status.Sync.Revision, "1.0.0@sha256:") && app.Status.Sync.Status == v1alpha1.SyncStatusSynced
	})
	if c := got.Status.Sync.Commit; c == nil || !strings.Contains(c.Subject, "main@sha1:abc") {
		t.Errorf("commit info %+v, want the artifact's source revision", c)
	}
	push("1.1.0", "green")
	push("2.0.0", "red") // outside the range
	color("green")

	// A hostile artifact: a tar entry that climbs out of its directory.
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	body := []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: evil}\n")
	_ = tw.WriteHeader(&tar.Header{Name: "../../evil.yaml", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
	_, _ = tw.Write(body)
	_ = tw.Close()
	_ = gz.Close()
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: static.NewLayer(buf.Bytes(), "application/vnd.cncf.flux.content.v1.tar+gzip")})
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	ref, _ := name.ParseReference(reg.Host + "/apps/shop:1.2.0")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	a.waitApp(t, ns, "shop", 30*time.Second, "FetchFailed naming the path", func(app *v1alpha1.Application) bool {
		c := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		return c != nil && c.Reason == v1alpha1.ReasonFetchFailed && strings.Contains(c.Message, "../../evil.yaml")
	})
	if get(t, "v1", "ConfigMap", ns, "evil") != nil {
		t.Error("the hostile artifact's object was applied")
	}
	color("green")
}

// cosignSign signs digest in the registry as `cosign sign --key` does,
// with cosign's and sigstore's own modules: the simple-signing payload,
// signed with key, attached as a signature beside the artifact.
func cosignSign(t *testing.T, host, repository, digest string, key *ecdsa.PrivateKey) {
	t.Helper()
	ref, err := name.NewDigest(host + "/" + repository + "@" + digest)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := (&payload.Cosign{Image: ref}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadECDSASignerVerifier(key, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := sv.SignMessage(bytes.NewReader(pl))
	if err != nil {
		t.Fatal(err)
	}
	ociSig, err := cosignstatic.NewSignature(pl, base64.StdEncoding.EncodeToString(sig))
	if err != nil {
		t.Fatal(err)
	}
	se, err := ociremote.SignedEntity(ref)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := cosignmutate.AttachSignatureToEntity(se, ociSig)
	if err != nil {
		t.Fatal(err)
	}
	if err := ociremote.WriteSignatures(ref.Repository, signed); err != nil {
		t.Fatal(err)
	}
}

// With spec.source.oci.verify, an unsigned artifact and one signed with
// another key are refused (VerificationFailed) before anything is
// extracted or applied; once signed by cosign with the trusted key, it
// syncs.
func TestOCI_VerificationRefusesUnsignedAndWronglySignedArtifacts(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	reg := chartrepo.NewRegistry()
	defer reg.Close()
	digest := pushConfigMapArtifact(t, reg, ns, "signed")
	trusted, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := cryptoutils.MarshalPublicKeyToPEM(&trusted.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keys := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cosign-keys", Namespace: ns}, Data: map[string][]byte{"cosign.pub": pub}}
	if err := cluster.Client.Create(ctx, keys); err != nil {
		t.Fatal(err)
	}
	policy := automated(true, true)
	policy.Interval = &metav1.Duration{Duration: 2 * time.Second}
	a.create(t, &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "signed", Namespace: ns}, Spec: v1alpha1.ApplicationSpec{
		Source: v1alpha1.ApplicationSource{Path: "deploy", OCI: &v1alpha1.OCISource{URL: "oci://" + reg.Host + "/apps/signed", Tag: "1.0.0", Insecure: true,
			Verify: &v1alpha1.OCIVerification{Provider: "cosign", SecretRef: v1alpha1.LocalObjectReference{Name: "cosign-keys"}}}},
		SyncPolicy: policy,
	}})
	refused := func(why string) { t.Helper(); verificationRefused(t, a, ns, "signed", why) }
	refused("it is not signed")
	cosignSign(t, reg.Host, "apps/signed", digest, other)
	refused("no signature made by a trusted key")
	cosignSign(t, reg.Host, "apps/signed", digest, trusted)
	a.waitApp(t, ns, "signed", 30*time.Second, "synced once signed", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && strings.HasSuffix(app.Status.Sync.Revision, digest)
	})
	if get(t, "v1", "ConfigMap", ns, "signed") == nil {
		t.Error("the signed artifact's ConfigMap is missing")
	}
}

// Keyless cosign (Flux's matchOIDCIdentity): an artifact signed by another
// workflow, or by another Sigstore, is refused before anything is applied;
// once signed keylessly by the trusted workflow, with a bundle of the
// trusted log, it syncs.
func TestOCI_KeylessVerificationAcceptsOnlyTheTrustedIdentity(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	reg := chartrepo.NewRegistry()
	defer reg.Close()
	digest := pushConfigMapArtifact(t, reg, ns, "keyless")
	trusted, err := sigstoretest.New()
	if err != nil {
		t.Fatal(err)
	}
	other, err := sigstoretest.New()
	if err != nil {
		t.Fatal(err)
	}
	trust := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sigstore-trust", Namespace: ns},
		Data: map[string][]byte{"fulcio.crt.pem": trusted.FulcioPEM, "rekor.pub": trusted.RekorPub}}
	if err := cluster.Client.Create(ctx, trust); err != nil {
		t.Fatal(err)
	}
	const issuer = "https://token.actions.githubusercontent.com"
	policy := automated(true, true)
	policy.Interval = &metav1.Duration{Duration: 2 * time.Second}
	a.create(t, &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "keyless", Namespace: ns}, Spec: v1alpha1.ApplicationSpec{
		Source: v1alpha1.ApplicationSource{Path: "deploy", OCI: &v1alpha1.OCISource{URL: "oci://" + reg.Host + "/apps/keyless", Tag: "1.0.0", Insecure: true,
			Verify: &v1alpha1.OCIVerification{Provider: "cosign", SecretRef: v1alpha1.LocalObjectReference{Name: "sigstore-trust"},
				MatchOIDCIdentity: []v1alpha1.OIDCIdentityMatch{{Issuer: regexp.QuoteMeta(issuer), Subject: `https://github\.com/acme/app/\.github/workflows/release\.yaml@refs/tags/.*`}}}}},
		SyncPolicy: policy,
	}})
	refused := func(why string) { t.Helper(); verificationRefused(t, a, ns, "keyless", why) }
	refused("it is not signed")
	if err := trusted.Sign(reg.Host, "apps/keyless", digest, issuer, "https://github.com/mallory/app/.github/workflows/release.yaml@refs/tags/v1"); err != nil {
		t.Fatal(err)
	}
	refused("none of the expected identities")
	good := "https://github.com/acme/app/.github/workflows/release.yaml@refs/tags/v1.0.0"
	if err := other.Sign(reg.Host, "apps/keyless", digest, issuer, good); err != nil {
		t.Fatal(err)
	}
	refused("no keyless signature by a trusted identity")
	if err := trusted.Sign(reg.Host, "apps/keyless", digest, issuer, good); err != nil {
		t.Fatal(err)
	}
	a.waitApp(t, ns, "keyless", 30*time.Second, "synced once signed by the trusted workflow", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && strings.HasSuffix(app.Status.Sync.Revision, digest)
	})
	if get(t, "v1", "ConfigMap", ns, "keyless") == nil {
		t.Error("the signed artifact's ConfigMap is missing")
	}
}

// verificationRefused waits until app (whose artifact holds a ConfigMap of
// the same name) is refused with VerificationFailed saying why, and checks
// that nothing of it was applied.
func verificationRefused(t *testing.T, a *agentEnv, ns, app, why string) {
	t.Helper()
	a.waitApp(t, ns, app, 30*time.Second, "VerificationFailed: "+why, func(got *v1alpha1.Application) bool {
		c := apimeta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady)
		return c != nil && c.Reason == v1alpha1.ReasonVerificationFailed && strings.Contains(c.Message, why)
	})
	if get(t, "v1", "ConfigMap", ns, app) != nil {
		t.Fatal("an artifact that failed verification was applied")
	}
}

// pushConfigMapArtifact pushes, with `converge push artifact`, an artifact
// holding deploy/cm.yaml, a ConfigMap named name, to reg's apps/name:1.0.0,
// and returns its digest.
func pushConfigMapArtifact(t *testing.T, reg *chartrepo.Registry, ns, name string) string {
	t.Helper()
	dir := writeTree(t, ns, map[string]string{"deploy/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\ndata: {k: v}\n"})
	r := convergeOffline(t, "push", "artifact", dir, "oci://"+reg.Host+"/apps/"+name+":1.0.0", "--insecure")
	if r.code != 0 {
		t.Fatalf("push: %s", r.output())
	}
	return strings.TrimSpace(r.stdout)
}
