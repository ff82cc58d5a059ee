//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

func TestImpersonation_AppMayTouchOnlyWhatItsServiceAccountMay(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	other := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	for _, obj := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"*"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "deployer"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: ns}}},
	} {
		if err := cluster.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	repo, err := a.git.NewRepo(ns + "-scoped")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{
		"deploy/cm.yaml":    fmt.Sprintf(agentCM, "scoped"),
		"deploy/other.yaml": fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: escape\n  namespace: %s\ndata: {a: b}\n", other),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "reaches into another namespace"); err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "scoped", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:             v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
			SyncPolicy:         automated(true, true),
			ServiceAccountName: "deployer",
		},
	}
	if err := a.client.Create(ctx, app); err != nil {
		t.Fatal(err)
	}
	a.waitApp(t, ns, "scoped", 30*time.Second, "refused: the ServiceAccount may not write there", func(app *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		return ready != nil && ready.Status == metav1.ConditionFalse && strings.Contains(ready.Message, "forbidden") &&
			strings.Contains(ready.Message, other) && strings.Contains(ready.Message, "system:serviceaccount:"+ns+":deployer")
	})
	if got := configMapMode(t, ns); !strings.Contains(got, "not found") {
		t.Errorf("a refused sync wrote into the app's own namespace: mode %q", got)
	}
	var escaped corev1.ConfigMap
	if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: other, Name: "escape"}, &escaped); err == nil {
		t.Fatal("the app wrote outside what its ServiceAccount may")
	}

	if err := repo.Write(map[string]string{"deploy/other.yaml": ""}); err != nil {
		t.Fatal(err)
	}
	fixed, err := repo.Commit("main", "stay in our namespace")
	if err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "scoped", 15*time.Second, "synced as the ServiceAccount", synced(fixed))
	if got := configMapMode(t, ns); got != "scoped" {
		t.Fatalf("mode = %q", got)
	}
}
