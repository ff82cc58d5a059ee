package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
	"converge.dev/converge/internal/testutil/otlptest"
)

// IdleMeasurement is an agent's cost while nothing changes: API requests
// beyond its watches (from the audit log, by the agent's own identity),
// CPU time, and memory.
type IdleMeasurement struct {
	Name          string  `json:"name"`
	Apps          int     `json:"apps"`
	ObjectsPerApp int     `json:"objectsPerApp"`
	Interval      string  `json:"interval"`
	Window        string  `json:"window"`
	SyncSeconds   float64 `json:"syncSeconds"`
	// AppsPerSecond is Apps / SyncSeconds: from creation to all Synced.
	AppsPerSecond   float64 `json:"appsPerSecond"`
	RequestsPerMin  float64 `json:"requestsPerMinute"`
	GitRequests     int64   `json:"gitRequests"`
	CPUSecondsTotal float64 `json:"cpuSeconds"`
	// CPUPerIdleReconcile is CPU time per app per interval.
	CPUPerIdleReconcileMs float64 `json:"cpuMsPerIdleReconcile"`
	RSSMiB                float64 `json:"rssMiB"`
	PeakRSSMiB            float64 `json:"peakRssMiB"`
	// AnonMiB is the agent's own part of RSS (heap, stacks); the rest
	// are its executable's pages, shared with the page cache.
	AnonMiB float64 `json:"anonRssMiB"`
	// Floor is the same objects applied by a plain loop in the same run
	// (fleets only), and FloorRatio the cold sync's time over the floor's
	// dry-run-and-apply time.
	Floor      *FleetFloor `json:"floor,omitempty"`
	FloorRatio float64     `json:"floorRatio,omitempty"`
	// NoopRequestSeconds is the median time from a sync request (the
	// annotation) on the one app of a single-app workload to the agent
	// having handled it with nothing to change; PushPlanSeconds is the
	// median `converge diff` of the same files against the same app (push
	// mode's plan, from the same machine).
	NoopRequestSeconds float64 `json:"noopRequestSeconds,omitempty"`
	PushPlanSeconds    float64 `json:"pushPlanSeconds,omitempty"`
	// NoopSpans are the median seconds of each step of those requests'
	// reconciles, from the agent's traces.
	NoopSpans map[string]float64 `json:"noopSpanSeconds,omitempty"`
	// Replicas is how many agent processes share the apps (-replicas,
	// with --shards=auto); memory figures are the largest replica's.
	Replicas int `json:"replicas"`
	// ColdCPU is the CPU seconds of the agent, kube-apiserver and etcd
	// from the Applications' creation to all Synced.
	ColdCPU map[string]float64 `json:"coldCpuSeconds,omitempty"`
	// Commit is a commit changing 10 apps of a fleet, seen as the apps
	// poll: seconds until every app shows it, and the agent's requests by
	// verb and resource until then.
	Commit *CommitMeasurement `json:"commit,omitempty"`
}

// CommitMeasurement is a commit changing a few apps of a fleet.
type CommitMeasurement struct {
	Changed  int            `json:"changedApps"`
	Seconds  float64        `json:"seconds"`
	Requests int            `json:"requests"`
	ByKind   map[string]int `json:"requestsByVerbAndResource"`
}

// idleBench runs one agent process for apps Applications of perApp
// ConfigMaps each, waits until they are synced and quiet, and measures a
// window of idling.
func (b *bench) idleBench(ctx context.Context, name, id string, apps, perApp int, interval, window time.Duration) (IdleMeasurement, error) {
	m := IdleMeasurement{Name: name, Apps: apps, ObjectsPerApp: perApp, Interval: interval.String(), Window: window.String()}
	ns := id + "-idle"
	c := b.env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return m, err
	}
	defer func() { _ = c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}) }()
	dir, err := os.MkdirTemp("", "converge-bench-idle-")
	if err != nil {
		return m, err
	}
	defer os.RemoveAll(dir)
	kubeconfig := filepath.Join(dir, "agent.kubeconfig")
	user, unbind, err := kubetest.AdminKubeconfig(ctx, c, b.env.Config, ns, "bench-agent", kubeconfig)
	if err != nil {
		return m, err
	}
	defer unbind()
	git, err := gitserver.New(filepath.Join(dir, "git"))
	if err != nil {
		return m, err
	}
	if err := git.Start("127.0.0.1:0"); err != nil {
		return m, err
	}
	defer git.Stop()
	repo, err := git.NewRepo("idle")
	if err != nil {
		return m, err
	}
	// The same objects the floor applies (fleetObjects), without a
	// namespace: the apps give theirs.
	files := map[string]string{}
	for a := range apps {
		for i, u := range fleetObjects("", a, perApp) {
			data, err := yaml.Marshal(u.Object)
			if err != nil {
				return m, err
			}
			files[fmt.Sprintf("apps/app-%03d/cm-%04d.yaml", a, i)] = string(data)
		}
	}
	if err := repo.Write(files); err != nil {
		return m, err
	}
	rev, err := repo.Commit("main", "idle bench")
	if err != nil {
		return m, err
	}
	bin := filepath.Join(dir, "converge")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/converge")
	if out, err := build.CombinedOutput(); err != nil {
		return m, fmt.Errorf("go build: %v\n%s", err, out)
	}
	// The agent's CRDs, as `converge sync` installs anything (a fresh
	// cluster has none).
	crds := exec.CommandContext(ctx, bin, "sync", "config/crd", "--app", "converge-crds", "-n", "default", "--wait", "--kubeconfig", b.kubeconfig)
	if out, err := crds.CombinedOutput(); err != nil {
		return m, fmt.Errorf("installing the CRDs: %v\n%s", err, out)
	}
	var traces *otlptest.Receiver
	if apps == 1 {
		// The no-op request's reconciles are traced: where its time goes.
		traces = otlptest.New()
		defer traces.Close()
	}
	agents, logName, err := startAgents(bin, dir, kubeconfig, ns, id, traces)
	defer func() {
		for _, a := range agents {
			_ = a.Process.Kill()
			_ = a.Wait()
		}
	}()
	if err != nil {
		return m, err
	}
	m.Replicas = len(agents)
	// Deleted while the agent runs, which prunes their objects and lets
	// them go.
	defer func() {
		_ = c.DeleteAllOf(context.Background(), &v1alpha1.Application{}, client.InNamespace(ns))
		_ = kubetest.WaitFor(context.Background(), 3*time.Minute, func(ctx context.Context) (bool, error) {
			var list v1alpha1.ApplicationList
			err := c.List(ctx, &list, client.InNamespace(ns))
			return err == nil && len(list.Items) == 0, err
		})
	}()

	if apps >= 100 {
		// The floor first, on the same warm apiserver the agent meets
		// next; its namespaces go at the very end.
		floor, cleanup, err := b.fleetFloor(ctx, ns, apps, perApp, agentConcurrency())
		defer cleanup()
		if err != nil {
			return m, err
		}
		m.Floor = &floor
	}

	meter := kubetest.NewClusterCPUMeter()
	for i, a := range agents {
		meter[fmt.Sprintf("agent-%d", i)] = a.Process.Pid
	}
	cpu := meter.Read()
	start := time.Now()
	for a := range apps {
		app := &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%03d", a), Namespace: ns, Labels: map[string]string{"converge.dev/bench": id}},
			Spec: v1alpha1.ApplicationSpec{
				Source: v1alpha1.ApplicationSource{RepoURL: git.URL(repo.Name), Path: fmt.Sprintf("apps/app-%03d", a)},
				SyncPolicy: v1alpha1.SyncPolicy{
					Automated: &v1alpha1.AutomatedSync{Prune: true, SelfHeal: true},
					Interval:  &metav1.Duration{Duration: interval},
				},
			},
		}
		if err := c.Create(ctx, app); err != nil {
			return m, err
		}
	}
	progress("%s: waiting for %d app(s) of %d object(s) to sync", name, apps, perApp)
	// Watched, not listed: listing 1,000 Applications over and over made
	// this observer one of the apiserver's busiest clients, slowing what it
	// measures.
	if err := b.waitSynced(ctx, ns, rev, apps, 15*time.Minute, logName); err != nil {
		return m, err
	}
	m.SyncSeconds = time.Since(start).Seconds()
	m.ColdCPU = meter.CPUSince(cpu)
	m.AppsPerSecond = float64(apps) / m.SyncSeconds
	progress("%s: %d apps synced in %.1f s (%.1f apps/s), CPU s: %s", name, apps, m.SyncSeconds, m.AppsPerSecond, secondsString(m.ColdCPU))
	if m.Floor != nil {
		m.FloorRatio = m.SyncSeconds / m.Floor.DryRunApplySeconds
		progress("%s: %.2fx the floor (dry-run+apply %.1f s, apply only %.1f s, %d workers)", name, m.FloorRatio, m.Floor.DryRunApplySeconds, m.Floor.ApplySeconds, m.Floor.Workers)
	}
	requests := func() (int, error) {
		events, err := b.audit.Since(func(e kubetest.AuditEvent) bool { return e.User.Username == user && e.Verb != "watch" })
		return len(events), err
	}
	progress("%s: waiting for the agent to go quiet", name)
	if err := kubetest.WaitFor(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		if err := b.audit.Mark(); err != nil {
			return false, err
		}
		time.Sleep(interval)
		n, err := requests()
		return err == nil && n == 0, fmt.Errorf("%d requests in an interval (%v)", n, err)
	}); err != nil {
		progress("%s: not quiet, measuring anyway: %v", name, err)
	}
	progress("%s: measuring %s of idling", name, window)
	if err := b.audit.Mark(); err != nil {
		return m, err
	}
	cpu0 := meter.Read()
	fetches0 := git.Fetches(repo.Name)
	time.Sleep(window)
	idleCPU := meter.CPUSince(cpu0)
	n, err := requests()
	if err != nil {
		return m, err
	}
	m.GitRequests = git.Fetches(repo.Name) - fetches0
	m.RequestsPerMin = float64(n) / window.Minutes()
	for i := range agents {
		m.CPUSecondsTotal += idleCPU[fmt.Sprintf("agent-%d", i)]
	}
	reconciles := float64(apps) * window.Seconds() / interval.Seconds()
	m.CPUPerIdleReconcileMs = m.CPUSecondsTotal / reconciles * 1000
	// Per replica: the largest.
	for _, a := range agents {
		rss, peak, err := kubetest.ProcessMemory(a.Process.Pid)
		if err != nil {
			return m, err
		}
		anon, err := kubetest.ProcessAnonMemory(a.Process.Pid)
		if err != nil {
			return m, err
		}
		m.RSSMiB, m.PeakRSSMiB, m.AnonMiB = max(m.RSSMiB, rss), max(m.PeakRSSMiB, peak), max(m.AnonMiB, anon)
	}
	// After the idle window, whose requests it would count.
	if apps >= 100 {
		c, err := b.commitBench(ctx, name, ns, user, repo, files, min(10, apps), apps)
		if err != nil {
			return m, err
		}
		m.Commit = &c
	}
	if apps == 1 {
		m.NoopRequestSeconds, m.PushPlanSeconds, m.NoopSpans, err = b.noopRequest(ctx, ns, bin, kubeconfig, files, traces)
	}
	return m, err
}

// commitBench commits a change to the first ConfigMap of changed apps
// (files is the tree as committed, and is updated) and waits for all apps
// to show the commit, counting the agent's (user's) requests meanwhile.
func (b *bench) commitBench(ctx context.Context, name, ns, user string, repo *gitserver.Repo, files map[string]string, changed, apps int) (CommitMeasurement, error) {
	m := CommitMeasurement{Changed: changed}
	for a := range changed {
		u := fleetObjects("", a, 1)[0]
		u.Object["data"] = map[string]any{"i": "changed"}
		data, err := yaml.Marshal(u.Object)
		if err != nil {
			return m, err
		}
		files[fmt.Sprintf("apps/app-%03d/cm-%04d.yaml", a, 0)] = string(data)
	}
	if err := repo.Write(files); err != nil {
		return m, err
	}
	if err := b.audit.Mark(); err != nil {
		return m, err
	}
	rev, err := repo.Commit("main", "change "+fmt.Sprint(changed)+" apps")
	if err != nil {
		return m, err
	}
	progress("%s: a commit changing %d of %d apps", name, changed, apps)
	start := time.Now()
	if err := b.waitSynced(ctx, ns, rev, apps, 5*time.Minute, ""); err != nil {
		return m, err
	}
	m.Seconds = time.Since(start).Seconds()
	time.Sleep(2 * time.Second) // requests right after count too
	events, err := b.audit.Since(func(e kubetest.AuditEvent) bool { return e.User.Username == user && e.Verb != "watch" })
	if err != nil {
		return m, err
	}
	m.Requests, m.ByKind = len(events), kubetest.ByVerbAndResource(events)
	progress("%s: every app at the commit in %.1f s, %d requests: %v", name, m.Seconds, m.Requests, m.ByKind)
	return m, nil
}

func printIdle(w io.Writer, ms []IdleMeasurement) {
	if len(ms) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "agent idle\treplicas\tinterval\twindow\tsync s (cold)\tapps/s\tAPI requests/min\tgit requests\tCPU ms per idle reconcile\tRSS MiB\tof which anon MiB\tpeak RSS MiB")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%.1f\t%.1f\t%.1f\t%d\t%.3f\t%.0f\t%.0f\t%.0f\n", m.Name, m.Replicas, m.Interval, m.Window, m.SyncSeconds, m.AppsPerSecond, m.RequestsPerMin, m.GitRequests, m.CPUPerIdleReconcileMs, m.RSSMiB, m.AnonMiB, m.PeakRSSMiB)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "fleet floor\tworkers\tapply only s\tdry-run+apply s\tits CPU s\tconverge cold s\tits CPU s\tconverge / dry-run+apply floor")
	for _, m := range ms {
		if m.Floor != nil {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%s\t%.1f\t%s\t%.2f\n", m.Name, m.Floor.Workers, m.Floor.ApplySeconds, m.Floor.DryRunApplySeconds, secondsString(m.Floor.DryRunApplyCPU), m.SyncSeconds, secondsString(m.ColdCPU), m.FloorRatio)
		}
	}
	tw.Flush()
}

// startAgents starts -replicas agent processes for the apps labelled id
// (with --shards=auto when more than one), logging to dir; the first
// serves -agent-pprof and sends traces to traces, if set.
func startAgents(bin, dir, kubeconfig, ns, id string, traces *otlptest.Receiver) ([]*exec.Cmd, string, error) {
	var agents []*exec.Cmd
	first := ""
	for i := range max(replicas, 1) {
		logName := filepath.Join(dir, fmt.Sprintf("agent-%d.log", i))
		if i == 0 {
			first = logName
		}
		logs, err := os.Create(logName)
		if err != nil {
			return agents, first, err
		}
		agent := exec.Command(bin, "agent", "--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
			"--webhook-bind-address", "", "--sealing-bind-address", "", "--cache-dir", filepath.Join(dir, fmt.Sprintf("cache-%d", i)),
			"--system-namespace", ns, "--key-bits", "2048", "--watch-label-selector", "converge.dev/bench="+id)
		if i == 0 {
			agent.Args = append(agent.Args, "--pprof-bind-address", agentPprof)
			if traces != nil {
				agent.Args = append(agent.Args, "--otlp-endpoint", traces.URL)
			}
		}
		if replicas > 1 {
			agent.Args = append(agent.Args, "--shards", "auto", "--shard-id", fmt.Sprintf("bench-%d", i))
		}
		agent.Args = append(agent.Args, strings.Fields(agentArgs)...)
		agent.Stdout, agent.Stderr = logs, logs
		err = agent.Start()
		logs.Close() // the child has it
		if err != nil {
			return agents, first, err
		}
		agents = append(agents, agent)
	}
	return agents, first, nil
}

// noopRequest times, five times each, a sync request on app-000 that has
// nothing to change, and push mode's plan of the same files.
func (b *bench) noopRequest(ctx context.Context, ns, bin, kubeconfig string, files map[string]string, traces *otlptest.Receiver) (agent, push float64, spans map[string]float64, err error) {
	dir, err := os.MkdirTemp("", "converge-bench-noop-")
	if err != nil {
		return 0, 0, nil, err
	}
	defer os.RemoveAll(dir)
	for name, content := range files {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			return 0, 0, nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return 0, 0, nil, err
		}
	}
	var requests, plans []float64
	first := time.Now()
	for i := range 5 {
		stamp := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)
		app := &v1alpha1.Application{}
		key := client.ObjectKey{Namespace: ns, Name: "app-000"}
		if err := b.env.Client.Get(ctx, key, app); err != nil {
			return 0, 0, nil, err
		}
		patch := client.MergeFrom(app.DeepCopy())
		metav1.SetMetaDataAnnotation(&app.ObjectMeta, v1alpha1.AnnotationRequestedAt, stamp)
		start := time.Now()
		if err := b.env.Client.Patch(ctx, app, patch); err != nil {
			return 0, 0, nil, err
		}
		if err := kubetest.WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, error) {
			err := b.env.Client.Get(ctx, key, app)
			return err == nil && app.Status.LastHandledRequest == stamp, err
		}); err != nil {
			return 0, 0, nil, fmt.Errorf("sync request: %w", err)
		}
		requests = append(requests, time.Since(start).Seconds())

		diff := exec.CommandContext(ctx, bin, "diff", filepath.Join(dir, "apps", "app-000"), "--app", "app-000", "-n", ns, "--kubeconfig", kubeconfig)
		start = time.Now()
		if out, err := diff.CombinedOutput(); err != nil {
			return 0, 0, nil, fmt.Errorf("converge diff (want no differences): %v\n%s", err, out)
		}
		plans = append(plans, time.Since(start).Seconds())
	}
	agent, push = median(requests), median(plans)
	progress("no-op: sync request %.2f s, push mode's plan %.2f s (medians of 5; %.2fx)", agent, push, agent/push)
	spans, err = stepTimes(ctx, traces, first, len(requests))
	return agent, push, spans, err
}

// stepTimes waits for the traces of n reconciles that started after
// since, and returns the median seconds of each step (span name).
func stepTimes(ctx context.Context, traces *otlptest.Receiver, since time.Time, n int) (map[string]float64, error) {
	var roots map[string]bool
	if err := kubetest.WaitFor(ctx, 30*time.Second, func(context.Context) (bool, error) {
		roots = map[string]bool{}
		for _, s := range traces.Spans() {
			if s.Name == "reconcile" && !s.Start.Before(since) {
				roots[s.TraceID] = true
			}
		}
		return len(roots) >= n, fmt.Errorf("%d of %d reconciles traced", len(roots), n)
	}); err != nil {
		return nil, err
	}
	byName := map[string][]float64{}
	for _, s := range traces.Spans() {
		if roots[s.TraceID] {
			byName[s.Name] = append(byName[s.Name], s.Duration.Seconds())
		}
	}
	out := map[string]float64{}
	for name, ds := range byName {
		out[name] = median(ds)
	}
	progress("no-op: its reconciles' steps, median seconds: %s", secondsString(out))
	return out, nil
}

// cpuString writes CPU seconds by process, in name order.
func secondsString(cpu map[string]float64) string {
	names := make([]string, 0, len(cpu))
	for n := range cpu {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %.3g", n, cpu[n])
	}
	return strings.Join(parts, ", ")
}

// agentConcurrency is the agent's --concurrency in this run.
func agentConcurrency() int {
	args := strings.Fields(agentArgs)
	for i, a := range args {
		v, ok := strings.CutPrefix(a, "--concurrency=")
		if !ok && a == "--concurrency" && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if n, err := strconv.Atoi(v); ok && err == nil {
			return n
		}
	}
	return 8
}

// waitSynced waits until want Applications in ns are Synced at rev,
// following a watch (relisting when it ends).
func (b *bench) waitSynced(ctx context.Context, ns, rev string, want int, timeout time.Duration, agentLog string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wc, err := client.NewWithWatch(b.env.Config, client.Options{Scheme: b.env.Scheme})
	if err != nil {
		return err
	}
	synced := map[string]bool{}
	isSynced := func(a *v1alpha1.Application) bool {
		return a.Status.Sync.Revision == rev && a.Status.Sync.Status == v1alpha1.SyncStatusSynced
	}
	count := func() int {
		n := 0
		for _, ok := range synced {
			if ok {
				n++
			}
		}
		return n
	}
	for {
		var list v1alpha1.ApplicationList
		if err := wc.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return fmt.Errorf("%w (%d of %d synced; agent log: %s)", err, count(), want, agentLog)
		}
		for i := range list.Items {
			synced[list.Items[i].Name] = isSynced(&list.Items[i])
		}
		if count() == want {
			return nil
		}
		w, err := wc.Watch(ctx, &v1alpha1.ApplicationList{}, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
		if err != nil {
			return err
		}
		for ev := range w.ResultChan() {
			if a, ok := ev.Object.(*v1alpha1.Application); ok {
				synced[a.Name] = ev.Type != watch.Deleted && isSynced(a)
			}
			if count() == want {
				w.Stop()
				return nil
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return fmt.Errorf("%d of %d synced (agent log: %s)", count(), want, agentLog)
		}
	}
}
