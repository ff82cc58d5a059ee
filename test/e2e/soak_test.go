//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/testutil/kubetest"
)

// Soak: 100 apps on one repository, a commit every few seconds changing
// one of them, for CONVERGE_SOAK (`make soak`: 10m). The agent's RSS and
// goroutines stay flat (the curve is logged), every app ends at the last
// commit, and every change of an app is in its history: no sync is lost.
func TestSoak_HundredAppsUnderSteadyCommits(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("CONVERGE_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("set CONVERGE_SOAK (make soak) to run the soak test")
	}
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	kubeconfig, _ := kubetest.LocalKubeconfig()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	agent := agentProcess(t, "soak", kubeconfig, "--system-namespace", ns, "--watch-label-selector", strictAgentLabel+"=soak",
		"--metrics-bind-address", metricsAddr)
	const n = 100
	const interval = 5 * time.Second
	repo, _ := a.manyApps(t, ns, n, interval, map[string]string{strictAgentLabel: "soak"}, func(app *v1alpha1.Application) {
		limit := int32(500)
		app.Spec.HistoryLimit = &limit
	})

	type change struct {
		app int
		rev string
	}
	var changes []change
	var revs []string // every commit, in order
	type sample struct {
		at         time.Duration
		rss        float64
		goroutines int
	}
	var samples []sample
	take := func(at time.Duration) {
		rss, _, err := kubetest.ProcessMemory(agent.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		samples = append(samples, sample{at, rss, goroutines(t, metricsAddr)})
	}
	start := time.Now()
	take(0)
	commit := time.NewTicker(3 * time.Second)
	defer commit.Stop()
	measure := time.NewTicker(30 * time.Second)
	defer measure.Stop()
	for i := 0; time.Since(start) < d; {
		select {
		case <-commit.C:
			app := i % n
			if err := repo.Write(map[string]string{fmt.Sprintf("apps/app-%02d/cm.yaml", app): fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%02d\ndata:\n  i: \"%d\"\n  commit: \"%d\"\n", app, app, i)}); err != nil {
				t.Fatal(err)
			}
			rev, err := repo.Commit("main", fmt.Sprintf("change %d (app %d)", i, app))
			if err != nil {
				t.Fatal(err)
			}
			changes = append(changes, change{app, rev})
			revs = append(revs, rev)
			i++
		case <-measure.C:
			take(time.Since(start))
		}
	}
	last := revs[len(revs)-1]
	kubetest.Eventually(t, 2*time.Minute, "every app at the last commit", func(ctx context.Context) (bool, error) {
		var list v1alpha1.ApplicationList
		if err := a.client.List(ctx, &list); err != nil {
			return false, err
		}
		behind := 0
		for i := range list.Items {
			if list.Items[i].Namespace == ns && !synced(last)(&list.Items[i]) {
				behind++
			}
		}
		return behind == 0, fmt.Errorf("%d apps behind", behind)
	})
	take(time.Since(start))
	for _, s := range samples {
		t.Logf("soak %6s: RSS %6.1f MiB, %4d goroutines", s.at.Round(time.Second), s.rss, s.goroutines)
	}
	// Flat: after the first quarter (caches filled), growth stays small.
	base := samples[len(samples)/4]
	end := samples[len(samples)-1]
	if end.rss > base.rss*1.5+32 {
		t.Errorf("RSS grew from %.1f MiB to %.1f MiB", base.rss, end.rss)
	}
	if end.goroutines > base.goroutines+50 {
		t.Errorf("goroutines grew from %d to %d", base.goroutines, end.goroutines)
	}

	// No sync lost: each change of an app is applied by a sync of that
	// commit or a later one before the app's next change.
	index := map[string]int{}
	for i, r := range revs {
		index[r] = i
	}
	next := map[int]int{} // app -> index of its next change, scanning backwards
	histories := map[int]*engine.History{}
	lost := 0
	for ci := len(changes) - 1; ci >= 0; ci-- {
		c := changes[ci]
		h := histories[c.app]
		if h == nil {
			if h, err = engine.LoadHistory(context.Background(), cluster.Client, engine.App{Name: fmt.Sprintf("app-%02d", c.app), Namespace: ns}); err != nil {
				t.Fatal(err)
			}
			histories[c.app] = h
		}
		upTo, ok := next[c.app]
		if !ok {
			upTo = len(revs)
		}
		from := index[c.rev]
		found := false
		for _, e := range h.Entries {
			if j, ok := index[e.Revision]; ok && j >= from && j < upTo && e.Result == engine.ResultSucceeded && slices.Contains(e.Changed, fmt.Sprintf("configured ConfigMap/%s/cm-%02d", ns, c.app)) {
				found = true
				break
			}
		}
		if !found {
			lost++
			if lost <= 5 {
				t.Errorf("app-%02d: change at %s has no sync in its history", c.app, source.ShortRevision(c.rev))
			}
		}
		next[c.app] = from
	}
	t.Logf("%s: %d commits, %d apps, %d changes without a sync", d, len(revs), n, lost)
}

// goroutines reads go_goroutines from an agent's metrics endpoint.
func goroutines(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	t.Fatal("no go_goroutines metric")
	return 0
}
