package kubetest

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
		if err := client.IgnoreNotFound(c.Delete(ctx, ns)); err != nil {
			t.Errorf("deleting test namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}
