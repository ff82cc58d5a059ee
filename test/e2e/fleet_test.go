//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/cli"
	"converge.dev/converge/internal/testutil/kubetest"
)

// clusterB is the second local cluster (make cluster-up CLUSTER=b), which
// `make test-e2e` starts and names in CONVERGE_CLUSTER_B.
type clusterB struct {
	dir, kubeconfig string
	client          client.Client
}

func startClusterB(t *testing.T) *clusterB {
	t.Helper()
	dir := os.Getenv("CONVERGE_CLUSTER_B")
	if dir == "" {
		t.Skip("CONVERGE_CLUSTER_B is not set: run through make test-e2e, which starts the second local cluster")
	}
	b := &clusterB{dir: dir, kubeconfig: filepath.Join(dir, "kubeconfig")}
	cfg, err := clientcmd.BuildConfigFromFlags("", b.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if b.client, err = client.New(cfg, client.Options{}); err != nil {
		t.Fatal(err)
	}
	return b
}

// localcluster runs the cluster tool on B: stop COMPONENT, or up.
func (b *clusterB) localcluster(t *testing.T, args ...string) {
	t.Helper()
	root, err := kubetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "bin/localcluster"), append([]string{"--dir", b.dir, "--name", "b", "--module-dir", filepath.Join(root, "tools/localcluster")}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("localcluster %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func readyCondition(app *v1alpha1.Application) *metav1.Condition {
	return apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
}

func TestFleet_AppDeploysToAnotherClusterHealsDriftThereAndRidesOutItsOutage(t *testing.T) {
	b := startClusterB(t)
	a := startAgent(t)
	ctx := context.Background()
	ns := kubetest.Namespace(t, cluster.Client)
	kubeconfigA, _ := kubetest.LocalKubeconfig()

	// Register B: a ServiceAccount there, its token here.
	if r := convergeOffline(t, "cluster", "add", "e2e-b", "--kubeconfig", b.kubeconfig, "--management-kubeconfig", kubeconfigA, "--label", "env=staging"); r.code != 0 {
		t.Fatalf("cluster add: %s", r.output())
	}
	// Cluster-scoped: a failing test must not leave it to the next
	// tests' agents.
	t.Cleanup(func() {
		_ = a.client.Delete(context.Background(), &v1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "e2e-b"}})
	})
	kubetest.Eventually(t, 30*time.Second, "Cluster e2e-b probed reachable", func(ctx context.Context) (bool, error) {
		rows := clusterRows(t)
		row, ok := rows["e2e-b"]
		return ok && row.Reachable == "True" && strings.HasPrefix(row.Version, "v1."), nil
	})

	remoteRepo, remoteRev := a.repoWith(t, ns+"-remote", map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "remote")}, "remote settings")
	remote := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "remote", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:      v1alpha1.ApplicationSource{RepoURL: a.git.URL(remoteRepo.Name), Path: "deploy"},
			Destination: v1alpha1.ApplicationDestination{Cluster: "e2e-b", Namespace: ns},
			SyncPolicy:  automated(true, true),
		}}
	remote.Spec.SyncPolicy.CreateNamespace = true
	a.create(t, remote)
	// A local app beside it: B's outage must leave it alone.
	_, localRev := a.newApp(t, ns, "local", automated(true, true))
	a.waitApp(t, ns, "remote", 60*time.Second, "remote app synced to B", synced(remoteRev))
	a.waitApp(t, ns, "local", 60*time.Second, "local app synced", synced(localRev))

	settings := types.NamespacedName{Namespace: ns, Name: "settings"}
	var cm corev1.ConfigMap
	if err := b.client.Get(ctx, settings, &cm); err != nil || cm.Data["mode"] != "remote" {
		t.Fatalf("the remote app's ConfigMap in B: %v %v", err, cm.Data)
	}
	// The remote app's inventory is here, with the Application; B holds
	// no record of converge's.
	var inv corev1.ConfigMap
	if err := cluster.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "converge-app-remote"}, &inv); err != nil {
		t.Fatalf("the remote app's inventory is kept with the Application: %v", err)
	}
	if err := b.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "converge-app-remote"}, &inv); err == nil {
		t.Fatal("an inventory was written in B")
	}

	// Drift in B is healed from a watch on B.
	heal := func(what string) time.Duration {
		t.Helper()
		if err := b.client.Get(ctx, settings, &cm); err != nil {
			t.Fatal(err)
		}
		cm.Data["mode"] = "drifted"
		start := time.Now()
		if err := b.client.Update(ctx, &cm); err != nil {
			t.Fatal(err)
		}
		kubetest.Eventually(t, 10*time.Second, what, func(ctx context.Context) (bool, error) {
			var live corev1.ConfigMap
			if err := b.client.Get(ctx, settings, &live); err != nil {
				return false, err
			}
			return live.Data["mode"] == "remote", nil
		})
		took := time.Since(start)
		t.Logf("%s: healed in %s", what, took.Round(time.Millisecond))
		return took
	}
	if took := heal("drift in B healed"); took > time.Second {
		t.Errorf("drift in B took %s to heal; a watch should take well under a second", took)
	}

	// History names the cluster.
	r := converge(t, "history", "remote", "-n", ns, "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"cluster": "e2e-b"`) {
		t.Fatalf("history does not name the cluster: %s", r.output())
	}

	// B's apiserver dies: only B's app says so.
	b.localcluster(t, "stop", "kube-apiserver")
	t.Cleanup(func() { b.localcluster(t, "up") })
	a.waitApp(t, ns, "remote", 40*time.Second, "remote app ClusterUnreachable", func(app *v1alpha1.Application) bool {
		c := readyCondition(app)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonClusterUnreachable && strings.Contains(c.Message, "Cluster e2e-b")
	})
	// The app may notice first (a failed request); the Cluster's probe
	// says so within its interval.
	kubetest.Eventually(t, 20*time.Second, "cluster list showing B unreachable", func(ctx context.Context) (bool, error) {
		row := clusterRows(t)["e2e-b"]
		return row.Reachable == "False" && row.Reason == v1alpha1.ReasonClusterUnreachable, fmt.Errorf("%+v", row)
	})
	local := &v1alpha1.Application{}
	if err := a.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "local"}, local); err != nil {
		t.Fatal(err)
	}
	if c := readyCondition(local); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("the local app was touched by B's outage: %+v", c)
	}
	var out v1alpha1.Application
	if err := a.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "remote"}, &out); err != nil {
		t.Fatal(err)
	}
	if out.Status.Attempts != 0 {
		t.Errorf("an outage counted as %d failed sync attempts", out.Status.Attempts)
	}

	// B comes back: the app recovers, and its watch there heals again.
	b.localcluster(t, "up")
	a.waitApp(t, ns, "remote", 60*time.Second, "remote app Ready again", synced(remoteRev))
	if took := heal("drift in B healed after the outage"); took > time.Second {
		t.Errorf("drift after the outage took %s to heal", took)
	}

	// The Cluster cannot be removed from under its app; deleting the app
	// prunes its objects in B, and then the Cluster goes.
	if r := converge(t, "cluster", "remove", "e2e-b"); r.code == 0 || !strings.Contains(r.stderr, ns+"/remote") {
		t.Fatalf("cluster remove with an app on it: %s", r.output())
	}
	if err := a.client.Delete(ctx, remote); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 30*time.Second, "remote app's objects pruned in B", func(ctx context.Context) (bool, error) {
		err := b.client.Get(ctx, settings, &corev1.ConfigMap{})
		return client.IgnoreNotFound(err) == nil && err != nil, nil
	})
	// The app goes once its prune is recorded (its finalizer), just after.
	kubetest.Eventually(t, 30*time.Second, "remote app gone", func(ctx context.Context) (bool, error) {
		err := a.client.Get(ctx, client.ObjectKeyFromObject(remote), &v1alpha1.Application{})
		return apierrors.IsNotFound(err), err
	})
	if r := converge(t, "cluster", "remove", "e2e-b"); r.code != 0 {
		t.Fatalf("cluster remove: %s", r.output())
	}
}

// clusterRows runs `converge cluster list -o json` against cluster A.
func clusterRows(t *testing.T) map[string]cli.ClusterSummary {
	t.Helper()
	r := converge(t, "cluster", "list", "-o", "json")
	if r.code != 0 {
		t.Fatalf("cluster list: %s", r.output())
	}
	var rows []cli.ClusterSummary
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("cluster list -o json: %v\n%s", err, r.stdout)
	}
	out := map[string]cli.ClusterSummary{}
	for _, row := range rows {
		out[row.Name] = row
	}
	return out
}
