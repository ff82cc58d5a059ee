package kubetest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/testutil/kubetest"
)

var env *kubetest.Env

func TestMain(m *testing.M) { kubetest.Main(m, kubetest.EnvOptions{}, &env) }

func TestNamespace_IsFreshAndLabelledPerCall(t *testing.T) {
	ctx := context.Background()
	a := kubetest.Namespace(t, env.Client)
	b := kubetest.Namespace(t, env.Client)
	if a == b {
		t.Fatalf("two calls returned the same namespace %q", a)
	}
	for _, name := range []string{a, b} {
		var ns corev1.Namespace
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
			t.Fatalf("namespace %s not in the cluster: %v", name, err)
		}
		if got := ns.Labels[kubetest.TestLabel]; got != "testnamespace-isfreshandlabelledpercall" {
			t.Errorf("namespace %s label %s = %q", name, kubetest.TestLabel, got)
		}
	}
}

func TestNamespace_DeletedWhenTestEnds(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) { name = kubetest.Namespace(t, env.Client) })
	kubetest.Eventually(t, 10*time.Second, "namespace deleted or terminating", func(ctx context.Context) (bool, error) {
		var ns corev1.Namespace
		err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &ns)
		if client.IgnoreNotFound(err) != nil {
			return false, err
		}
		// envtest runs no namespace controller, so a deleted namespace stays
		// Terminating instead of disappearing.
		return err != nil || ns.DeletionTimestamp != nil, fmt.Errorf("namespace %s still active", name)
	})
}

func TestServerSideApply_RecordsConvergeFieldManager(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	cm := corev1ac.ConfigMap("settings", ns).WithData(map[string]string{"mode": "fast"})
	if err := env.Client.Apply(ctx, cm, client.FieldOwner("converge.dev"), client.ForceOwnership); err != nil {
		t.Fatalf("server-side apply: %v", err)
	}
	var got corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "settings"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Data["mode"] != "fast" {
		t.Errorf("data.mode = %q, want fast", got.Data["mode"])
	}
	managers := map[string]bool{}
	for _, mf := range got.ManagedFields {
		managers[mf.Manager+"/"+string(mf.Operation)] = true
	}
	if !managers["converge.dev/Apply"] {
		t.Errorf("managedFields lack converge.dev/Apply: %v", managers)
	}
}
