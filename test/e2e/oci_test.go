//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/chartrepo"
	"converge.dev/converge/internal/testutil/kubetest"
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
