//go:build e2e

package e2e

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"converge.dev/converge/api/v1alpha1"
)

// busyChart renders one ConfigMap after a loop that keeps a render busy
// for seconds of CPU.
const busyChart = `{{- $x := 0 }}{{- range $i := until 6000000 }}{{- $x = add1 $x }}{{- end }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-busy
data:
  n: "{{ $x }}"
`

// One tenant's 10 apps, each a render of seconds of CPU, hold at most
// half the render slots: another tenant's commit syncs within twice the
// time it takes when the agent is idle.
func TestFairness_ATenantsSlowRendersDoNotHoldBackAnother(t *testing.T) {
	busy, other := newTenant(t), newTenant(t)
	repo, _ := other.repoWith(t, other.ns+"-quick", map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "m0")}, "m0")
	other.create(t, "quick", other.git.URL(repo.Name), nil)
	other.waitApp(t, other.ns, "quick", 60*time.Second, "the quick app synced", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced
	})
	round := 0
	commitAndWait := func() time.Duration {
		round++
		mode := fmt.Sprintf("m%d", round)
		if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, mode)}); err != nil {
			t.Fatal(err)
		}
		rev, err := repo.Commit("main", mode)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		other.push(t, repo, "refs/heads/main")
		other.waitApp(t, other.ns, "quick", 2*time.Minute, "commit "+mode+" synced", synced(rev))
		return time.Since(start)
	}
	median := func(ds []time.Duration) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	idle := median([]time.Duration{commitAndWait(), commitAndWait(), commitAndWait()})

	// The busy tenant's 10 apps all want a render now.
	slow, _ := busy.repoWith(t, busy.ns+"-slow", map[string]string{
		"deploy/Chart.yaml":          "apiVersion: v2\nname: busy\nversion: 0.1.0\n",
		"deploy/templates/busy.yaml": busyChart,
	}, "busy")
	for i := range 10 {
		busy.create(t, fmt.Sprintf("busy-%02d", i), busy.git.URL(slow.Name), nil)
	}
	// Once the first busy render is under way, the other tenant commits.
	busy.waitApp(t, busy.ns, "busy-00", 2*time.Minute, "a busy render under way or done", func(app *v1alpha1.Application) bool {
		return app.Status.ObservedGeneration > 0 || app.Status.Sync.Status != ""
	})
	loaded := median([]time.Duration{commitAndWait(), commitAndWait(), commitAndWait()})
	t.Logf("the other tenant's commit: %v idle, %v beside 10 busy renders", idle, loaded)
	if loaded > 2*idle+250*time.Millisecond {
		t.Errorf("beside the busy tenant, a commit took %v to sync; idle it takes %v (want at most twice)", loaded, idle)
	}
}
