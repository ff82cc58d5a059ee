package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"converge.dev/converge/internal/poll"
	"converge.dev/converge/internal/testutil/kubetest"
)

// fleetFigures is one tool's measurements of the fleet workload in one
// round: n apps of 10 ConfigMaps each, one repository.
type fleetFigures struct {
	Apps int `json:"apps"`
	// Cold is from the apps' creation to all applied; or, when that
	// takes longer than -fleet-timeout, to the timeout, with ColdApplied
	// the apps applied by then (the rest of the round is skipped).
	ColdSeconds  float64            `json:"coldSeconds"`
	ColdApplied  int                `json:"coldApplied"`
	AppsPerSec   float64            `json:"appsPerSecond"`
	ColdRequests int                `json:"coldRequests"`
	ColdCPU      map[string]float64 `json:"coldCpuSeconds"`
	// Change is one commit touching 10 apps, announced as a push would
	// be (converge: its webhook; Flux: the GitRepository's reconcile
	// request, as its Receiver makes): until those 10 are applied, and
	// the requests until every app has seen the commit.
	ChangeSeconds  float64 `json:"changeSeconds"`
	ChangeRequests int     `json:"changeRequests"`
	// ChangeRequestsBy counts them by verb and resource.
	ChangeRequestsBy map[string]int `json:"changeRequestsBy,omitempty"`
	IdlePerMinute    float64        `json:"idleRequestsPerMinute"`
	RSSMiB           float64        `json:"rssMiB"`
}

// fleetTool is a tool that can run the fleet workload.
type fleetTool interface {
	tool
	// createFleet makes n apps, app-0000…, for the repository at url,
	// each syncing apps/app-NNNN into ns.
	createFleet(ctx context.Context, ns, url string, n int) error
	// fleetAt reports which of the fleet's apps have applied rev.
	fleetAt(ctx context.Context, ns, rev string) (map[string]bool, error)
	// pushed announces a push to the repository at url.
	pushed(ctx context.Context, ns, url string) error
}

func fleetApp(i int) string { return fmt.Sprintf("app-%04d", i) }

// fleetManifests are n apps of 10 ConfigMaps; the first `changed` apps'
// first ConfigMap differs.
func fleetManifests(ns string, n, changed int) map[string]string {
	files := map[string]string{}
	for a := range n {
		for i := range 10 {
			v := "a"
			if a < changed && i == 0 {
				v = "b"
			}
			files[fmt.Sprintf("apps/%s/cm-%02d.yaml", fleetApp(a), i)] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a%04d-cm-%02d\n  namespace: %s\ndata:\n  v: %s\n", a, i, ns, v)
		}
	}
	return files
}

// fleetRound runs the fleet workload once for t in a fresh namespace.
func (p *peers) fleetRound(ctx context.Context, t fleetTool, ns string, n int) (fleetFigures, error) {
	f := fleetFigures{Apps: n}
	st, err := p.setUp(ctx, t, ns, fleetManifests(ns, n, 0))
	if err != nil {
		return f, err
	}
	defer st.close()
	repo, rev, requests := st.repo, st.rev, st.requests
	// Listing a thousand apps is not free: once a second, not faster.
	applied := 0
	waitApplied := func(what, rev string, timeout time.Duration, want func(map[string]bool) bool) error {
		return poll.Until(ctx, time.Second, timeout, func(ctx context.Context) (bool, error) {
			at, err := t.fleetAt(ctx, ns, rev)
			applied = len(at)
			return err == nil && want(at), fmt.Errorf("%s: %d of %d apps at %.12s (%v)", what, len(at), n, rev, err)
		})
	}
	all := func(at map[string]bool) bool { return len(at) == n }

	meter := kubetest.NewClusterCPUMeter()
	for i, pid := range t.pids() {
		meter[fmt.Sprintf("%s-%d", t.name(), i)] = pid
	}
	progress("%s: cold sync of %d apps", t.name(), n)
	if err := p.audit.Mark(); err != nil {
		return f, err
	}
	cpu := meter.Read()
	start := time.Now()
	if err := t.createFleet(ctx, ns, p.git.URL(repo.Name), n); err != nil {
		return f, err
	}
	coldErr := waitApplied("cold", rev, *fleetTimeout, all)
	f.ColdSeconds, f.ColdCPU, f.ColdApplied = time.Since(start).Seconds(), meter.CPUSince(cpu), applied
	f.AppsPerSec = float64(applied) / f.ColdSeconds
	time.Sleep(2 * time.Second) // requests right after count too
	if f.ColdRequests, err = requests(); err != nil {
		return f, err
	}
	progress("%s: %d of %d apps in %.1f s (%.2f apps/s), %d requests, CPU s %v", t.name(), applied, n, f.ColdSeconds, f.AppsPerSec, f.ColdRequests, f.ColdCPU)
	if coldErr != nil {
		progress("%s: not all applied within -fleet-timeout %s: the rest of its round is skipped", t.name(), *fleetTimeout)
		f.ChangeSeconds, f.ChangeRequests, f.IdlePerMinute = -1, -1, -1
		for _, pid := range t.pids() {
			if rss, _, err := kubetest.ProcessMemory(pid); err == nil {
				f.RSSMiB += rss
			}
		}
		return f, nil
	}

	if err := repo.Write(fleetManifests(ns, n, 10)); err != nil {
		return f, err
	}
	changed, err := repo.Commit("main", "10 apps changed")
	if err != nil {
		return f, err
	}
	progress("%s: one commit changing 10 apps", t.name())
	if err := p.audit.Mark(); err != nil {
		return f, err
	}
	start = time.Now()
	if err := t.pushed(ctx, ns, p.git.URL(repo.Name)); err != nil {
		return f, err
	}
	if err := waitApplied("10 changed", changed, *fleetTimeout, func(at map[string]bool) bool {
		for i := range 10 {
			if !at[fleetApp(i)] {
				return false
			}
		}
		return true
	}); err != nil {
		return f, err
	}
	f.ChangeSeconds = time.Since(start).Seconds()
	if err := waitApplied("every app at the commit", changed, *fleetTimeout, all); err != nil {
		return f, err
	}
	time.Sleep(2 * time.Second)
	events, err := st.events()
	if err != nil {
		return f, err
	}
	f.ChangeRequests, f.ChangeRequestsBy = len(events), kubetest.ByVerbAndResource(events)
	progress("%s: the commit cost %d requests: %v", t.name(), f.ChangeRequests, f.ChangeRequestsBy)

	// After a change, an app's next interval plans it once more (converge
	// then knows it idle); so idling is measured once an interval has
	// passed without a request, or after two intervals, whichever first
	// (Flux reconciles every app every interval: it is never quiet).
	progress("%s: waiting for an interval without requests (at most 2)", t.name())
	for range 2 {
		if err := p.audit.Mark(); err != nil {
			return f, err
		}
		time.Sleep(*interval)
		if n, err := requests(); err != nil || n == 0 {
			break
		}
	}
	f.IdlePerMinute, f.RSSMiB, _, err = p.idle(t, requests)
	return f, err
}

func printFleet(results map[string][]fleetFigures) {
	if len(results) == 0 {
		return
	}
	cpu := func(name string) func(fleetFigures) float64 {
		return func(f fleetFigures) float64 {
			if name != "" {
				return f.ColdCPU[name]
			}
			var sum float64
			for k, v := range f.ColdCPU {
				if k != "kube-apiserver" && k != "etcd" {
					sum += v
				}
			}
			return sum
		}
	}
	fmt.Println()
	printRows(results, []row[fleetFigures]{
		{"fleet: cold sync (s; to the timeout if not all applied)", func(f fleetFigures) float64 { return f.ColdSeconds }},
		{"fleet: cold, apps applied", func(f fleetFigures) float64 { return float64(f.ColdApplied) }},
		{"fleet: cold, apps/s", func(f fleetFigures) float64 { return f.AppsPerSec }},
		{"fleet: cold sync (requests)", func(f fleetFigures) float64 { return float64(f.ColdRequests) }},
		{"fleet: cold, the tool's CPU (s)", cpu("")},
		{"fleet: cold, kube-apiserver CPU (s)", cpu("kube-apiserver")},
		{"fleet: cold, etcd CPU (s)", cpu("etcd")},
		{"fleet: commit touching 10 apps, applied (s; -1: not reached)", func(f fleetFigures) float64 { return f.ChangeSeconds }},
		{"fleet: commit touching 10 apps (requests)", func(f fleetFigures) float64 { return float64(f.ChangeRequests) }},
		{"fleet: idle (requests/min; -1: not reached)", func(f fleetFigures) float64 { return f.IdlePerMinute }},
		{"fleet: RSS (MiB)", func(f fleetFigures) float64 { return f.RSSMiB }},
	})
}

// hasWorkload says whether -workloads names w.
func hasWorkload(w string) bool {
	for _, x := range strings.Split(*workloads, ",") {
		if strings.TrimSpace(x) == w {
			return true
		}
	}
	return false
}
