//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// metric reads one unlabelled metric from a Prometheus endpoint.
func metric(addr, name string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s", name)
}

// appSeries counts the converge_application_info series of namespace ns
// at addr that say Synced and Healthy.
func appSeries(addr, ns string) (int, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "converge_application_info{") && strings.Contains(line, `namespace="`+ns+`"`) &&
			strings.Contains(line, `sync="Synced"`) && strings.Contains(line, `health="Healthy"`) && strings.HasSuffix(line, " 1") {
			n++
		}
	}
	return n, sc.Err()
}

func TestShards_ThreeReplicasSplitTheAppsAndTakeOverFromOneKilled(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	kubeconfig, user := identityKubeconfig(t, ns, "shard-agent")
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	ids := []string{"shard-a", "shard-b", "shard-c"}
	metrics := map[string]string{}
	procs := map[string]func(){}
	for _, id := range ids {
		metrics[id] = freeAddr(t)
		cmd := agentProcess(t, id, kubeconfig, "--system-namespace", ns, "--watch-label-selector", strictAgentLabel+"=shards",
			"--shards", "auto", "--shard-id", id, "--metrics-bind-address", metrics[id])
		procs[id] = func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() }
	}

	const n = 300
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("apps/app-%03d/cm.yaml", i)] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%03d\ndata:\n  i: \"%d\"\n", i, i)
	}
	repo, rev := a.repoWith(t, ns+"-shards", files, "300 apps")
	for i := range n {
		app := &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%03d", i), Namespace: ns, Labels: map[string]string{strictAgentLabel: "shards"}},
			Spec: v1alpha1.ApplicationSpec{
				Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: fmt.Sprintf("apps/app-%03d", i)},
				SyncPolicy: automated(true, true),
			},
		}
		if err := a.client.Create(ctx, app); err != nil {
			t.Fatal(err)
		}
	}
	// Deleted while the replicas still run: they prune and let go.
	t.Cleanup(func() {
		_ = a.client.DeleteAllOf(context.Background(), &v1alpha1.Application{}, client.InNamespace(ns))
		_ = kubetest.WaitFor(context.Background(), 2*time.Minute, func(ctx context.Context) (bool, error) {
			var list v1alpha1.ApplicationList
			err := a.client.List(ctx, &list, client.InNamespace(ns))
			return err == nil && len(list.Items) == 0, err
		})
	})
	shardsOf := func(ctx context.Context, live map[string]bool) (map[string]int, error) {
		var list v1alpha1.ApplicationList
		if err := a.client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return nil, err
		}
		counts := map[string]int{}
		for _, app := range list.Items {
			if app.Status.Sync.Status != v1alpha1.SyncStatusSynced || app.Status.Sync.Revision != rev || !live[app.Status.Shard] {
				return counts, fmt.Errorf("%s: %s at %.8s by %q", app.Name, app.Status.Sync.Status, app.Status.Sync.Revision, app.Status.Shard)
			}
			counts[app.Status.Shard]++
		}
		return counts, nil
	}
	all := map[string]bool{"shard-a": true, "shard-b": true, "shard-c": true}
	var counts map[string]int
	kubetest.Eventually(t, 3*time.Minute, "300 apps synced, spread over three replicas", func(ctx context.Context) (bool, error) {
		counts, err = shardsOf(ctx, all)
		return err == nil, err
	})
	t.Logf("apps per replica: %v", counts)
	for _, id := range ids {
		if c := counts[id]; c < n/3*6/10 || c > n/3*14/10 {
			t.Errorf("%s reconciles %d of %d apps; want about a third", id, c, n)
		}
		owned, err := metric(metrics[id], "converge_shard_applications")
		if err != nil || int(owned) != counts[id] {
			t.Errorf("%s's converge_shard_applications = %v (%v), its apps' status says %d", id, owned, err, counts[id])
		}
		// Each replica reports its own apps, one series each.
		if series, err := appSeries(metrics[id], ns); err != nil || series != counts[id] {
			t.Errorf("%s reports %d Synced/Healthy converge_application_info series (%v), its apps' status says %d", id, series, err, counts[id])
		}
	}

	// shard-b dies: the others take its apps over within 30 s.
	procs["shard-b"]()
	killed := time.Now()
	live := map[string]bool{"shard-a": true, "shard-c": true}
	kubetest.Eventually(t, 30*time.Second, "shard-b's apps taken over", func(ctx context.Context) (bool, error) {
		counts, err = shardsOf(ctx, live)
		return err == nil, err
	})
	t.Logf("taken over %s after kill -9: %v", time.Since(killed).Round(100*time.Millisecond), counts)

	// No Application was written by two replicas within one second.
	events, err := audit.Since(func(e kubetest.AuditEvent) bool {
		return e.User.Username == user && e.Write() && e.ObjectRef != nil && e.ObjectRef.Resource == "applications" && e.ObjectRef.Namespace == ns
	})
	if err != nil {
		t.Fatal(err)
	}
	writers := map[string]map[string]bool{}
	for _, e := range events {
		key := e.ObjectRef.Name + "@" + e.Received.Truncate(time.Second).Format(time.RFC3339)
		if writers[key] == nil {
			writers[key] = map[string]bool{}
		}
		writers[key][e.UserAgent] = true
	}
	for key, agents := range writers {
		if len(agents) > 1 {
			t.Errorf("%s written by %d replicas: %v", key, len(agents), agents)
		}
	}
	t.Logf("%d writes to %d apps checked", len(events), n)
}
