// Command bench measures converge's sync engine on the local cluster
// (make bench): a cold sync and a no-op resync of 1,000 objects, a resync
// after 10 of them change, and, in the same run, the same objects applied by
// `kubectl apply --server-side` and by a plain parallel server-side-apply
// loop (the apiserver's own limit on this machine). Request counts come from
// the apiserver's audit log. It prints a table and writes JSON.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/cli"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/testutil/kubetest"
)

// Measurement is one row of the results.
type Measurement struct {
	Name     string         `json:"name"`
	Objects  int            `json:"objects"`
	Seconds  float64        `json:"seconds"`
	Runs     []float64      `json:"runs"`
	Requests map[string]int `json:"requests,omitempty"`
	DryRuns  int            `json:"dryRuns"`
	Writes   int            `json:"writes"`
	Note     string         `json:"note,omitempty"`
}

// Results is the JSON document written by the benchmark.
type Results struct {
	Date         string            `json:"date"`
	Machine      string            `json:"machine"`
	Objects      int               `json:"objects"`
	Namespaces   int               `json:"namespaces"`
	Concurrency  int               `json:"concurrency"`
	Measurements []Measurement     `json:"measurements"`
	Idle         []IdleMeasurement `json:"idle,omitempty"`
	RequestCosts []RequestCost     `json:"requestCosts,omitempty"`
}

func main() {
	// In-process syncs re-execute this binary as their render worker.
	render.ServeWorkerIfRequested()
	out := flag.String("out", ".cluster/bench.json", "where to write the JSON results")
	namespaces := flag.Int("namespaces", 10, "namespaces to spread the objects over")
	perNS := flag.Int("per-namespace", 100, "objects per namespace (50% ConfigMaps, 30% Services, 20% Deployments)")
	runs := flag.Int("runs", 3, "repetitions of each cold sync; the median is reported")
	kubectl := flag.String("kubectl", "", "kubectl binary (default: kubectl next to the cluster binaries, else on PATH)")
	flag.DurationVar(&idleWindow, "idle-window", 2*time.Minute, "how long the agent is watched idling (0: skip the idle benchmarks)")
	flag.DurationVar(&idleInterval, "idle-interval", 10*time.Second, "the apps' sync interval while idling")
	flag.BoolVar(&idleOnly, "idle-only", false, "run only the agent idle benchmarks")
	flag.StringVar(&agentArgs, "agent-args", "", "with the idle benchmarks: more flags for the agent (e.g. \"--concurrency 16\")")
	flag.StringVar(&agentPprof, "agent-pprof", "", "with the idle benchmarks: serve the agent's Go profiles here (e.g. 127.0.0.1:6061)")
	flag.IntVar(&replicas, "replicas", 1, "with the idle benchmarks: agent processes sharing the apps (--shards=auto when more than one)")
	flag.IntVar(&requestCostsN, "request-costs", 1000, "with the idle benchmarks: measure alone each kind of request a cold app makes, this many of each (0: skip)")
	flag.StringVar(&idleApps, "idle-apps", "", "with the idle benchmarks: only the workload of this many apps (1, 100 or 1000; another number: that many apps of 10 objects)")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	if err := run(*out, *namespaces, *perNS, *runs, *kubectl); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var (
	idleWindow, idleInterval time.Duration
	idleOnly                 bool
	idleApps                 string
	requestCostsN            int
	replicas                 int
	agentPprof               string
	agentArgs                string
)

type bench struct {
	env        *kubetest.Env
	kubeconfig string
	audit      *kubetest.AuditLog
	namespaces int
	perNS      int
	kubectl    string
}

func run(out string, namespaces, perNS, runs int, kubectl string) error {
	env, err := kubetest.LocalCluster(v1alpha1.AddToScheme)
	if err != nil {
		return err
	}
	kubeconfig, _ := kubetest.LocalKubeconfig()
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		return err
	}
	if kubectl == "" {
		kubectl = findKubectl()
	}
	b := &bench{env: env, kubeconfig: kubeconfig, audit: audit, namespaces: namespaces, perNS: perNS, kubectl: kubectl}
	res := Results{
		Date:        time.Now().UTC().Format(time.RFC3339),
		Machine:     fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version()),
		Objects:     namespaces * perNS,
		Namespaces:  namespaces,
		Concurrency: 32,
	}
	ctx := context.Background()
	if err := b.waitForDeletions(ctx); err != nil {
		return err
	}
	defer b.cleanup(ctx)
	// Namespaces of earlier runs may still be terminating: use fresh names.
	id := fmt.Sprintf("b%04x", time.Now().UnixNano()&0xffff)

	if idleOnly {
		return b.idle(ctx, id, res, out)
	}
	progress("warming up the apiserver")
	if _, err := b.loop(ctx, id+"-warm", 32); err != nil {
		return err
	}

	if err := b.settle(ctx, id+"-warm"); err != nil {
		return err
	}
	// Alternate which goes first, and let the controllers finish rolling out
	// each run's Deployments before the next starts, so that neither side
	// pays for the other's aftermath.
	var loopRuns, convergeRuns []float64
	var lastConverge string
	var coldReq map[string]int
	var coldWrites, coldDry int
	for i := 0; i < runs; i++ {
		loopFirst := i%2 == 0
		for _, which := range []bool{loopFirst, !loopFirst} {
			if which {
				prefix := fmt.Sprintf("%s-loop%d", id, i)
				progress("run %d/%d: plain parallel server-side-apply loop", i+1, runs)
				d, err := b.loop(ctx, prefix, 32)
				if err != nil {
					return err
				}
				loopRuns = append(loopRuns, d.Seconds())
				if err := b.settle(ctx, prefix); err != nil {
					return err
				}
				continue
			}
			prefix := fmt.Sprintf("%s-cv%d", id, i)
			progress("run %d/%d: converge cold sync", i+1, runs)
			d, events, err := b.converge(ctx, prefix, true)
			if err != nil {
				return err
			}
			convergeRuns = append(convergeRuns, d.Seconds())
			coldReq, coldWrites, coldDry = count(events)
			lastConverge = prefix
			if err := b.settle(ctx, prefix); err != nil {
				return err
			}
		}
	}
	res.Measurements = append(res.Measurements,
		Measurement{Name: "plain parallel SSA loop (cold)", Objects: res.Objects, Runs: loopRuns, Seconds: median(loopRuns), Writes: res.Objects, Note: "32 in flight, kind order, no dry-run, no record"},
		Measurement{Name: "converge sync (cold)", Objects: res.Objects, Runs: convergeRuns, Seconds: median(convergeRuns), Requests: coldReq, Writes: coldWrites, DryRuns: coldDry, Note: "render + dry-run of every object + staged apply + inventory"},
	)

	progress("converge no-op resync (5 runs)")
	var noop []float64
	var noopReq map[string]int
	var noopWrites, noopDry int
	for i := 0; i < 5; i++ {
		d, events, err := b.converge(ctx, lastConverge, false)
		if err != nil {
			return err
		}
		noop = append(noop, d.Seconds())
		noopReq, noopWrites, noopDry = count(events)
	}
	res.Measurements = append(res.Measurements, Measurement{Name: "converge sync (no-op resync)", Objects: res.Objects, Runs: noop, Seconds: median(noop), Requests: noopReq, Writes: noopWrites, DryRuns: noopDry})

	progress("converge resync after 10 objects changed")
	d, events, err := b.convergeChanged(ctx, lastConverge, 10)
	if err != nil {
		return err
	}
	req, writes, dry := count(events)
	res.Measurements = append(res.Measurements, Measurement{Name: "converge sync (10 changed)", Objects: res.Objects, Runs: []float64{d.Seconds()}, Seconds: d.Seconds(), Requests: req, Writes: writes, DryRuns: dry})

	if b.kubectl != "" {
		progress("kubectl apply --server-side (cold)")
		d, err := b.kubectlApply(ctx, id+"-kubectl")
		if err != nil {
			return err
		}
		res.Measurements = append(res.Measurements, Measurement{Name: "kubectl apply --server-side (cold)", Objects: res.Objects, Runs: []float64{d.Seconds()}, Seconds: d.Seconds(), Writes: res.Objects, Note: b.kubectl})
	}

	return b.idle(ctx, id, res, out)
}

// idle runs the agent idle benchmarks, then prints and writes res.
func (b *bench) idle(ctx context.Context, id string, res Results, out string) error {
	if idleWindow > 0 {
		type workload struct {
			name         string
			apps, perApp int
		}
		workloads := []workload{{"1 app x 1,000 objects", 1, 1000}, {"100 apps x 10 objects", 100, 10}, {"1,000 apps x 10 objects", 1000, 10}}
		if n, err := strconv.Atoi(idleApps); err == nil && n != 1 && n != 100 && n != 1000 {
			// Another size, for a quicker look: n apps of 10 objects.
			workloads = []workload{{fmt.Sprintf("%d apps x 10 objects", n), n, 10}}
		}
		for _, w := range workloads {
			if idleApps != "" && idleApps != strconv.Itoa(w.apps) {
				continue
			}
			m, err := b.idleBench(ctx, w.name, fmt.Sprintf("%s-%d", id, w.apps), w.apps, w.perApp, idleInterval, idleWindow)
			if err != nil {
				return fmt.Errorf("%s: %w", w.name, err)
			}
			res.Idle = append(res.Idle, m)
		}
	}
	if idleWindow > 0 && requestCostsN > 0 {
		costs, err := b.requestCosts(ctx, id, requestCostsN)
		if err != nil {
			return fmt.Errorf("request costs: %w", err)
		}
		res.RequestCosts = costs
	}
	printTable(os.Stdout, res)
	printIdle(os.Stdout, res.Idle)
	printCosts(os.Stdout, res.RequestCosts)
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	progress("wrote %s", out)
	return nil
}

// objects returns the benchmark's desired set in namespaces prefix-0..N.
func (b *bench) objects(prefix string, generation int) []*unstructured.Unstructured {
	var objs []*unstructured.Unstructured
	for n := 0; n < b.namespaces; n++ {
		ns := fmt.Sprintf("%s-%d", prefix, n)
		cms, svcs := b.perNS/2, b.perNS*3/10
		for i := 0; i < b.perNS; i++ {
			var u *unstructured.Unstructured
			switch {
			case i < cms:
				u = object("v1", "ConfigMap", ns, fmt.Sprintf("config-%03d", i), map[string]any{
					"data": map[string]any{"index": fmt.Sprint(i), "generation": fmt.Sprint(generation), "payload": strings.Repeat("x", 256)},
				})
			case i < cms+svcs:
				u = object("v1", "Service", ns, fmt.Sprintf("svc-%03d", i), map[string]any{
					"spec": map[string]any{"selector": map[string]any{"app": fmt.Sprintf("app-%03d", i)}, "ports": []any{map[string]any{"port": int64(80), "targetPort": int64(8080)}}},
				})
			default:
				labels := map[string]any{"app": fmt.Sprintf("app-%03d", i)}
				u = object("apps/v1", "Deployment", ns, fmt.Sprintf("app-%03d", i), map[string]any{
					"spec": map[string]any{
						"replicas": int64(1),
						"selector": map[string]any{"matchLabels": labels},
						"template": map[string]any{
							"metadata": map[string]any{"labels": labels},
							"spec":     map[string]any{"containers": []any{map[string]any{"name": "app", "image": "nginx:1.27"}}},
						},
					},
				})
			}
			objs = append(objs, u)
		}
	}
	return objs
}

func object(apiVersion, kind, ns, name string, fields map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: fields}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// settle waits until every Deployment in the run's namespaces is available,
// so the controllers are idle again.
func (b *bench) settle(ctx context.Context, prefix string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var list appsv1.DeploymentList
		if err := b.env.Client.List(ctx, &list); err != nil {
			return err
		}
		pending := 0
		for _, d := range list.Items {
			if strings.HasPrefix(d.Namespace, prefix+"-") && d.Status.AvailableReplicas < 1 {
				pending++
			}
		}
		if pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d Deployments in %s-* not available after 5 minutes", pending, prefix)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *bench) createNamespaces(ctx context.Context, prefix string) error {
	for n := 0; n < b.namespaces; n++ {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, n), Labels: map[string]string{"converge.dev/bench": "true"}}}
		if err := client.IgnoreAlreadyExists(b.env.Client.Create(ctx, ns)); err != nil {
			return err
		}
	}
	return nil
}

// loop applies the objects with a bare parallel SSA loop.
func (b *bench) loop(ctx context.Context, prefix string, concurrency int) (time.Duration, error) {
	if err := b.createNamespaces(ctx, prefix); err != nil {
		return 0, err
	}
	cfg := rest.CopyConfig(b.env.Config)
	cfg.QPS, cfg.Burst = 500, 1000
	cfg.UserAgent = "bench-loop"
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return 0, err
	}
	// Same kind order as converge (config, then services, then workloads),
	// so both leave the same controller work for after the clock stops.
	objs := b.objects(prefix, 0)
	rank := map[string]int{"ConfigMap": 0, "Service": 1, "Deployment": 2}
	sort.SliceStable(objs, func(i, j int) bool { return rank[objs[i].GetKind()] < rank[objs[j].GetKind()] })
	start := time.Now()
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for _, u := range objs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("bench-loop"), client.ForceOwnership)
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return time.Since(start), firstErr
}

// converge runs `converge sync` on the objects written as files, and
// returns the time and the requests it made.
func (b *bench) converge(ctx context.Context, prefix string, create bool) (time.Duration, []kubetest.AuditEvent, error) {
	return b.convergeWith(ctx, prefix, create, b.objects(prefix, 0))
}

func (b *bench) convergeChanged(ctx context.Context, prefix string, changed int) (time.Duration, []kubetest.AuditEvent, error) {
	objs := b.objects(prefix, 0)
	n := 0
	for _, u := range objs {
		if u.GetKind() == "ConfigMap" && n < changed {
			_ = unstructured.SetNestedField(u.Object, "1", "data", "generation")
			n++
		}
	}
	return b.convergeWith(ctx, prefix, false, objs)
}

func (b *bench) convergeWith(ctx context.Context, prefix string, create bool, objs []*unstructured.Unstructured) (time.Duration, []kubetest.AuditEvent, error) {
	if create {
		if err := b.createNamespaces(ctx, prefix); err != nil {
			return 0, nil, err
		}
	}
	dir, err := os.MkdirTemp("", "converge-bench-")
	if err != nil {
		return 0, nil, err
	}
	defer os.RemoveAll(dir)
	if err := writeManifests(filepath.Join(dir, "objects.yaml"), objs); err != nil {
		return 0, nil, err
	}
	if err := b.audit.Mark(); err != nil {
		return 0, nil, err
	}
	var stderr bytes.Buffer
	start := time.Now()
	code := cli.Execute(ctx, cli.Streams{In: strings.NewReader(""), Out: io.Discard, ErrOut: &stderr},
		[]string{"sync", dir, "--app", prefix, "-n", prefix + "-0", "--kubeconfig", b.kubeconfig})
	d := time.Since(start)
	if code != 0 {
		return 0, nil, fmt.Errorf("converge sync exit %d:\n%s", code, stderr.String())
	}
	events, err := b.audit.Since(func(e kubetest.AuditEvent) bool { return e.UserAgent == "converge" })
	return d, events, err
}

func (b *bench) kubectlApply(ctx context.Context, prefix string) (time.Duration, error) {
	if err := b.createNamespaces(ctx, prefix); err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "converge-bench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "objects.yaml")
	if err := writeManifests(file, b.objects(prefix, 0)); err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, b.kubectl, "--kubeconfig", b.kubeconfig, "apply", "--server-side", "-f", file)
	cmd.Stdout = io.Discard
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("kubectl: %w: %s", err, stderr.String())
	}
	return time.Since(start), nil
}

func writeManifests(path string, objs []*unstructured.Unstructured) error {
	var buf bytes.Buffer
	for _, u := range objs {
		data, err := yaml.Marshal(u.Object)
		if err != nil {
			return err
		}
		buf.WriteString("---\n")
		buf.Write(data)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// waitForDeletions waits until the namespaces an earlier run deleted are
// gone: deleting their objects would compete with what is measured.
func (b *bench) waitForDeletions(ctx context.Context) error {
	said := false
	return kubetest.WaitFor(ctx, 10*time.Minute, func(ctx context.Context) (bool, error) {
		var list corev1.NamespaceList
		if err := b.env.Client.List(ctx, &list); err != nil {
			return false, err
		}
		going := 0
		for _, ns := range list.Items {
			if ns.DeletionTimestamp != nil {
				going++
			}
		}
		if going > 0 && !said {
			progress("waiting for %d namespace(s) being deleted", going)
			said = true
		}
		return going == 0, fmt.Errorf("%d namespace(s) still being deleted", going)
	})
}

// cleanup deletes every namespace the benchmark created.
func (b *bench) cleanup(ctx context.Context) {
	progress("deleting benchmark namespaces")
	var list corev1.NamespaceList
	if err := b.env.Client.List(ctx, &list, client.MatchingLabels{"converge.dev/bench": "true"}); err != nil {
		return
	}
	for i := range list.Items {
		_ = b.env.Client.Delete(ctx, &list.Items[i])
	}
}

func count(events []kubetest.AuditEvent) (byVerb map[string]int, writes, dryRuns int) {
	byVerb = map[string]int{}
	for _, e := range events {
		byVerb[e.Verb]++
		if e.DryRun() {
			dryRuns++
		} else if e.Write() {
			writes++
		}
	}
	return byVerb, writes, dryRuns
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func findKubectl() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		if p := filepath.Join(dir, "kubectl"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func printTable(w io.Writer, res Results) {
	fmt.Fprintf(w, "%d objects in %d namespaces, %s, %s\n\n", res.Objects, res.Namespaces, res.Machine, res.Date)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tseconds (median)\truns\twrites\tdry-runs\trequests by verb")
	for _, m := range res.Measurements {
		runs := make([]string, len(m.Runs))
		for i, r := range m.Runs {
			runs[i] = fmt.Sprintf("%.2f", r)
		}
		var req []string
		for _, v := range sortedKeys(m.Requests) {
			req = append(req, fmt.Sprintf("%s=%d", v, m.Requests[v]))
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%s\t%d\t%d\t%s\n", m.Name, m.Seconds, strings.Join(runs, " "), m.Writes, m.DryRuns, strings.Join(req, " "))
	}
	tw.Flush()
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
