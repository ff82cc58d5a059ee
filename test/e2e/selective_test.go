//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// `converge sync APP --resource GROUP:KIND:NAMESPACE/NAME` (Argo CD's
// selective sync): the agent applies the selected object only; the other
// changed one stays as it was, not selected, and the app says OutOfSync;
// the history names the request and its selection. A bad selector is
// refused before anything is asked of the agent.
func TestSync_SelectiveSyncAppliesOnlyTheSelectedObjects(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	cm := func(name, v string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\ndata:\n  v: \"" + v + "\"\n"
	}
	repo, first := a.repoWith(t, ns+"-partial", map[string]string{"deploy/a.yaml": cm("a", "1"), "deploy/b.yaml": cm("b", "1")}, "first")
	// Manual sync: nothing applies until asked.
	a.create(t, &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "partial", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"}}})
	if r := converge(t, "sync", "partial", "-n", ns, "--wait", "--timeout", "60s"); r.code != 0 {
		t.Fatalf("the first sync: exit %d\n%s", r.code, r.output())
	}
	a.waitApp(t, ns, "partial", 30*time.Second, "synced", synced(first))

	if err := repo.Write(map[string]string{"deploy/a.yaml": cm("a", "2"), "deploy/b.yaml": cm("b", "2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "both change"); err != nil {
		t.Fatal(err)
	}
	if r := converge(t, "sync", "partial", "-n", ns, "--resource", "apps:Deployment"); r.code == 0 || !strings.Contains(r.stderr, "GROUP:KIND:NAME") {
		t.Errorf("a bad selector: exit %d\n%s", r.code, r.output())
	}
	r := converge(t, "sync", "partial", "-n", ns, "--resource", ":ConfigMap:"+ns+"/a", "--timeout", "60s")
	if r.code != 0 {
		t.Fatalf("selective sync: exit %d\n%s", r.code, r.output())
	}
	kubetest.Eventually(t, 30*time.Second, "a updated", func(ctx context.Context) (bool, error) {
		var live corev1.ConfigMap
		if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "a"}, &live); err != nil {
			return false, err
		}
		return live.Data["v"] == "2", nil
	})
	app := a.waitApp(t, ns, "partial", 30*time.Second, "the request handled, OutOfSync", func(app *v1alpha1.Application) bool {
		return app.Status.LastHandledRequest != "" && app.Status.LastHandledRequest == app.Annotations[v1alpha1.AnnotationRequestedAt] &&
			app.Status.Sync.Status == v1alpha1.SyncStatusOutOfSync
	})
	var b corev1.ConfigMap
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "b"}, &b); err != nil || b.Data["v"] != "1" {
		t.Errorf("b = %v (%v): a selective sync of a must leave b as it was", b.Data, err)
	}
	for _, res := range app.Status.Resources {
		if res.Name == "b" && res.Status != v1alpha1.SyncStatusOutOfSync {
			t.Errorf("b's status %+v, want OutOfSync", res)
		}
	}
	h := history(t, ns, "partial")
	if len(h.Entries) < 2 || h.Entries[0].ChangedTotal != 1 || h.Entries[0].Trigger.Type != "manual" || h.Entries[0].Changed[0] != "configured ConfigMap/"+ns+"/a" {
		t.Errorf("newest history entry %+v, want the manual selective sync changing a alone", h.Entries[0])
	}
	var actions []string
	for _, act := range history(t, ns, "partial", "--actions").Actions {
		actions = append(actions, act.Action+" "+act.Detail)
	}
	if !strings.Contains(strings.Join(actions, "\n"), "sync-request only :ConfigMap:"+ns+"/a") {
		t.Errorf("actions %v, want the selective request recorded with its selection", actions)
	}
}
