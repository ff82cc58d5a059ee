package kubetest

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestLabel marks every namespace the harness creates, with the test's name
// as its value (made label-safe), so leftovers can be traced to their test.
const TestLabel = "converge.dev/test"

var unsafeLabel = regexp.MustCompile(`[^a-z0-9]+`)

// Namespace creates a namespace of its own for t and deletes it when t ends
// (unless CONVERGE_KEEP_NAMESPACES is set, to look at a failure). The name
// is derived from the test's name plus a random suffix.
func Namespace(t testing.TB, c client.Client) string {
	t.Helper()
	base := strings.Trim(unsafeLabel.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   base + "-" + rand.String(5),
		Labels: map[string]string{TestLabel: base},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Create(ctx, ns); err != nil {
		t.Fatalf("creating test namespace: %v", err)
	}
	t.Cleanup(func() {
		if keepNamespaces() {
			t.Logf("keeping namespace %s", ns.Name)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		releaseApplications(ctx, t, c, ns.Name)
		if err := client.IgnoreNotFound(c.Delete(ctx, ns)); err != nil {
			t.Errorf("deleting test namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// releaseApplications deletes the Applications left in ns and removes their
// finalizers, so that they (and so the namespace) go: the test's agent may
// stop before it has finalized them. Each is deleted first: an agent still
// running would otherwise add the finalizer back to an app not yet being
// deleted, then stop halfway through its deletion, and the namespace
// would wait for ever. A cluster without converge's API has none.
func releaseApplications(ctx context.Context, t testing.TB, c client.Client, ns string) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(schema.GroupVersionKind{Group: "converge.dev", Version: "v1alpha1", Kind: "ApplicationList"})
	if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
		return // no such API, or nothing to list
	}
	for i := range list.Items {
		app := &list.Items[i]
		if err := client.IgnoreNotFound(c.Delete(ctx, app)); err != nil {
			t.Logf("deleting Application %s/%s: %v", ns, app.GetName(), err)
		}
		if len(app.GetFinalizers()) == 0 {
			continue
		}
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))
		if err := client.IgnoreNotFound(c.Patch(ctx, app, patch)); err != nil {
			t.Logf("releasing Application %s/%s: %v", ns, app.GetName(), err)
		}
	}
}
