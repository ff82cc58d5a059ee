//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/testutil/kubetest"
)

// bigApp creates a repository of n ConfigMaps and an Application for it,
// labelled for the agent selected by label.
func (a *agentEnv) bigApp(t *testing.T, ns, name string, n int, label string) string {
	t.Helper()
	repo, err := a.git.NewRepo(ns + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("deploy/cm-%04d.yaml", i)] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%04d\ndata:\n  i: \"%d\"\n", i, i)
	}
	if err := repo.Write(files); err != nil {
		t.Fatal(err)
	}
	rev, err := repo.Commit("main", fmt.Sprintf("%d ConfigMaps", n))
	if err != nil {
		t.Fatal(err)
	}
	policy := automated(true, true)
	policy.Interval = &metav1.Duration{Duration: 5 * time.Second}
	policy.Retry = &v1alpha1.RetryPolicy{Backoff: &v1alpha1.Backoff{Duration: &metav1.Duration{Duration: time.Second}, MaxDuration: &metav1.Duration{Duration: 2 * time.Second}}}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{strictAgentLabel: label}},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
			SyncPolicy: policy,
		},
	}
	if err := a.client.Create(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	return rev
}

// ownedConfigMaps counts the ConfigMaps app owns in ns (not its records).
func ownedConfigMaps(ctx context.Context, ns, app string) (int, error) {
	var list metav1.PartialObjectMetadataList
	list.SetGroupVersionKind(metav1.SchemeGroupVersion.WithKind("List"))
	list.APIVersion, list.Kind = "v1", "ConfigMapList"
	if err := cluster.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{engine.LabelApp: app}); err != nil {
		return 0, err
	}
	n := 0
	for _, o := range list.Items {
		if o.Labels[engine.LabelRecord] == "" {
			n++
		}
	}
	return n, nil
}

// waitMidSync waits until app has created some of its n objects, not all.
func waitMidSync(t *testing.T, ns, app string, n int) int {
	t.Helper()
	var got int
	kubetest.Eventually(t, time.Minute, "the sync under way", func(ctx context.Context) (bool, error) {
		var err error
		got, err = ownedConfigMaps(ctx, ns, app)
		return got >= 20, err
	})
	if got >= n {
		t.Fatalf("the sync finished before the fault could hit it (%d objects)", got)
	}
	return got
}

// checkConverged checks the end state after a fault: every object exists,
// the inventory holds every one, and the history has the revision once,
// succeeded.
func checkConverged(t *testing.T, a *agentEnv, ns, app, rev string, n int) []engine.HistoryEntry {
	t.Helper()
	ctx := context.Background()
	a.waitApp(t, ns, app, 3*time.Minute, "converged", synced(rev))
	if got, err := ownedConfigMaps(ctx, ns, app); err != nil || got != n {
		t.Errorf("%d ConfigMaps exist (%v), want %d: something was lost or pruned", got, err, n)
	}
	eng, err := engine.New(cluster.Config, engine.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	inv, err := eng.Inventory(ctx, engine.App{Name: app, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Entries) != n || inv.Revision != rev {
		t.Errorf("inventory holds %d entries at %s, want %d at %s", len(inv.Entries), inv.Revision, n, rev)
	}
	h, err := engine.LoadHistory(ctx, cluster.Client, engine.App{Name: app, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	var succeeded []engine.HistoryEntry
	for _, e := range h.Entries {
		if e.Revision == rev && e.Result == engine.ResultSucceeded {
			succeeded = append(succeeded, e)
		}
	}
	if len(succeeded) != 1 {
		t.Errorf("history holds %d succeeded syncs of %s, want 1: %+v", len(succeeded), rev, h.Entries)
	}
	return h.Entries
}

// An agent killed with SIGKILL while applying 1,000 objects: the next
// one converges, loses track of nothing and prunes nothing, and the sync
// is in the history once.
func TestFaults_AgentKilledMidSync(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	kubeconfig, _ := kubetest.LocalKubeconfig()
	const n = 1000
	first := agentProcess(t, "crash-1", kubeconfig, "--system-namespace", ns, "--watch-label-selector", strictAgentLabel+"=crash")
	rev := a.bigApp(t, ns, "big", n, "crash")
	at := waitMidSync(t, ns, "big", n)
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	left, _ := ownedConfigMaps(context.Background(), ns, "big")
	t.Logf("killed the agent with %d of %d objects applied (%d when the kill was sent)", left, n, at)

	agentProcess(t, "crash-2", kubeconfig, "--system-namespace", ns, "--watch-label-selector", strictAgentLabel+"=crash")
	start := time.Now()
	checkConverged(t, a, ns, "big", rev, n)
	t.Logf("the restarted agent converged in %s", time.Since(start).Round(100*time.Millisecond))
}
