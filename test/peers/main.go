// Command peers runs the same GitOps workloads, on the same local cluster
// and Git server, with converge's agent and with Flux (source-controller
// and kustomize-controller, built by tools/peers): a cold sync of 1,000
// objects, a no-op reconcile, 10 objects changed, a deleted object (drift)
// and an idle window. Each tool runs alone, as local processes under a
// ServiceAccount of its own (its requests are counted in the apiserver's
// audit log by that account); which goes first alternates by round. It
// prints medians, ranges and converge's ratios, and writes JSON
// (make bench-peers).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
)

var (
	rounds       = flag.Int("rounds", 3, "rounds; which tool goes first alternates")
	idleWindow   = flag.Duration("idle", 2*time.Minute, "idle window per round")
	interval     = flag.Duration("interval", time.Minute, "both tools' sync interval")
	converge     = flag.String("converge", "bin/converge", "converge binary")
	sourceBin    = flag.String("source-controller", "bin/peers/source-controller", "Flux source-controller binary")
	kustBin      = flag.String("kustomize-controller", "bin/peers/kustomize-controller", "Flux kustomize-controller binary")
	crdDirs      = flag.String("flux-crds", "", "comma-separated directories of Flux CRD manifests")
	out          = flag.String("out", ".cluster/peers.json", "where to write the JSON results")
	toolNames    = flag.String("tools", "converge,flux", "which tools to run, in the first round's order")
	workloads    = flag.String("workloads", "single,fleet", "which workloads: single (one app of 1,000 objects), fleet (-fleet apps of 10 objects)")
	fleetSize    = flag.Int("fleet", 1000, "apps in the fleet workload")
	fleetTimeout = flag.Duration("fleet-timeout", 30*time.Minute, "how long the fleet workload waits for each step; a cold sync not done by then is reported as apps applied by then")
	// Flux's guide to running hundreds of apps ("vertical scaling")
	// raises kustomize-controller's workers from 4 to 10.
	fluxConcurrent = flag.Int("flux-concurrent", 10, "kustomize-controller's --concurrent")
)

const objects = 1000

func main() {
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

// figures is one tool's measurements in one round.
type figures struct {
	ColdSeconds    float64 `json:"coldSeconds"`
	ColdRequests   int     `json:"coldRequests"`
	NoopSeconds    float64 `json:"noopSeconds"`
	NoopRequests   int     `json:"noopRequests"`
	ChangeSeconds  float64 `json:"changeSeconds"`
	ChangeRequests int     `json:"changeRequests"`
	// DriftSeconds is -1 when the object was not restored within 30 s.
	DriftSeconds  float64 `json:"driftSeconds"`
	IdlePerMinute float64 `json:"idleRequestsPerMinute"`
	RSSMiB        float64 `json:"rssMiB"`
	PeakRSSMiB    float64 `json:"peakRssMiB"`
}

// tool is one GitOps implementation under test.
type tool interface {
	name() string
	start(ctx context.Context, p *peers, ns string) error
	stop()
	pids() []int
	// create makes the app for repo, syncing into ns.
	create(ctx context.Context, ns, url string) error
	// applied reports whether the app has applied revision rev.
	applied(ctx context.Context, ns, rev string) (bool, error)
	// request asks for a reconcile now and returns a check that it was
	// handled.
	request(ctx context.Context, ns string, newRevision bool) (func(context.Context) (bool, error), error)
}

type peers struct {
	env   *kubetest.Env
	audit *kubetest.AuditLog
	git   *gitserver.Server
	dir   string
}

func run() (err error) {
	env, err := kubetest.LocalCluster(v1alpha1.AddToScheme)
	if err != nil {
		return err
	}
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "converge-peers-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			os.RemoveAll(dir)
		} else {
			progress("the tools' logs are in %s", dir)
		}
	}()
	git, err := gitserver.New(filepath.Join(dir, "git"))
	if err != nil {
		return err
	}
	if err := git.Start("127.0.0.1:0"); err != nil {
		return err
	}
	defer git.Stop()
	p := &peers{env: env, audit: audit, git: git, dir: dir}
	ctx := context.Background()
	if err := p.installFluxCRDs(ctx); err != nil {
		return err
	}
	var tools []fleetTool
	for _, name := range strings.Split(*toolNames, ",") {
		switch name {
		case "converge":
			tools = append(tools, &convergeTool{})
		case "flux":
			tools = append(tools, &fluxTool{})
		default:
			return fmt.Errorf("-tools: unknown tool %q (converge, flux)", name)
		}
	}
	results := map[string][]figures{}
	fleet := map[string][]fleetFigures{}
	id := fmt.Sprintf("p%04x", time.Now().UnixNano()&0xffff)
	for r := range *rounds {
		order := tools
		if r%2 == 1 {
			order = slices.Clone(tools)
			slices.Reverse(order)
		}
		for _, t := range order {
			if hasWorkload("single") {
				f, err := p.round(ctx, t, fmt.Sprintf("%s-%d-%s", id, r, t.name()))
				if err != nil {
					return fmt.Errorf("round %d, %s: %w", r+1, t.name(), err)
				}
				results[t.name()] = append(results[t.name()], f)
				progress("round %d %s: %+v", r+1, t.name(), f)
			}
			if hasWorkload("fleet") {
				f, err := p.fleetRound(ctx, t, fmt.Sprintf("%s-%d-%s-fleet", id, r, t.name()), *fleetSize)
				if err != nil {
					return fmt.Errorf("round %d, %s, fleet: %w", r+1, t.name(), err)
				}
				fleet[t.name()] = append(fleet[t.name()], f)
				progress("round %d %s, fleet: %+v", r+1, t.name(), f)
			}
		}
	}
	if len(results) > 0 {
		print(results)
	}
	printFleet(fleet)
	data, err := json.MarshalIndent(map[string]any{"date": time.Now().UTC().Format(time.RFC3339), "interval": interval.String(), "idle": idleWindow.String(),
		"fluxConcurrent": *fluxConcurrent, "results": results, "fleet": fleet}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	progress("wrote %s", *out)
	return nil
}

// teardown deletes ns once t is stopped (deferred calls run in reverse,
// so the tool stops first): the tools' objects lose their finalizers, and
// the next round does not start until ns is gone, so that it does not pay
// for this one's deletion.
func (p *peers) teardown(t tool, ns string) {
	c := p.env.Client
	ctx := context.Background()
	for _, gvk := range []string{"converge.dev/v1alpha1/Application", "source.toolkit.fluxcd.io/v1/GitRepository", "kustomize.toolkit.fluxcd.io/v1/Kustomization"} {
		i := strings.LastIndex(gvk, "/")
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion(gvk[:i])
		list.SetKind(gvk[i+1:] + "List")
		if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
			continue
		}
		for j := range list.Items {
			u := &list.Items[j]
			patch := client.MergeFrom(u.DeepCopy())
			u.SetFinalizers(nil)
			_ = c.Patch(ctx, u, patch)
		}
	}
	_ = c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	progress("%s: waiting for namespace %s to go", t.name(), ns)
	_ = kubetest.WaitFor(ctx, 10*time.Minute, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
		return apierrors.IsNotFound(err), err
	})
}

// stage is a round's namespace, its repository at its first revision, and
// the tool running.
type stage struct {
	repo *gitserver.Repo
	rev  string
	// requests counts the tool's requests since the audit log's mark,
	// watches excluded.
	requests func() (int, error)
	// events are those requests.
	events func() ([]kubetest.AuditEvent, error)
	// close stops the tool and deletes the namespace.
	close func()
}

// setUp makes ns, an account for t in it, a repository holding files, and
// starts t with a moment for its caches to fill.
func (p *peers) setUp(ctx context.Context, t tool, ns string, files map[string]string) (_ *stage, err error) {
	c := p.env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return nil, err
	}
	var undo []func()
	st := &stage{close: func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}}
	defer func() {
		if err != nil {
			st.close()
		}
	}()
	undo = append(undo, func() { p.teardown(t, ns) })
	user, unbind, err := kubetest.AdminKubeconfig(ctx, c, p.env.Config, ns, "tool", p.kubeconfig(ns))
	if err != nil {
		return nil, err
	}
	undo = append(undo, unbind)
	if st.repo, err = p.git.NewRepo(ns); err != nil {
		return nil, err
	}
	if err := st.repo.Write(files); err != nil {
		return nil, err
	}
	if st.rev, err = st.repo.Commit("main", "first"); err != nil {
		return nil, err
	}
	if err := t.start(ctx, p, ns); err != nil {
		return nil, err
	}
	undo = append(undo, t.stop)
	// Let the tool's caches fill before the clock starts.
	time.Sleep(3 * time.Second)
	st.events = func() ([]kubetest.AuditEvent, error) {
		return p.audit.Since(func(e kubetest.AuditEvent) bool { return e.User.Username == user && e.Verb != "watch" })
	}
	st.requests = func() (int, error) {
		ev, err := st.events()
		return len(ev), err
	}
	return st, nil
}

// round runs every workload once for t in a fresh namespace.
func (p *peers) round(ctx context.Context, t tool, ns string) (figures, error) {
	var f figures
	c := p.env.Client
	st, err := p.setUp(ctx, t, ns, manifests(ns, 0))
	if err != nil {
		return f, err
	}
	defer st.close()
	repo, rev, requests := st.repo, st.rev, st.requests
	measure := func(what string, act func() error, done func(context.Context) (bool, error)) (float64, int, error) {
		progress("%s: %s", t.name(), what)
		if err := p.audit.Mark(); err != nil {
			return 0, 0, err
		}
		start := time.Now()
		if err := act(); err != nil {
			return 0, 0, err
		}
		if err := kubetest.WaitFor(ctx, 5*time.Minute, done); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", what, err)
		}
		d := time.Since(start).Seconds()
		// Requests the workload caused, including those right after.
		time.Sleep(2 * time.Second)
		n, err := requests()
		return d, n, err
	}
	url := p.git.URL(repo.Name)
	if f.ColdSeconds, f.ColdRequests, err = measure("cold sync of 1,000 objects", func() error { return t.create(ctx, ns, url) },
		func(ctx context.Context) (bool, error) { return t.applied(ctx, ns, rev) }); err != nil {
		return f, err
	}
	var handled func(context.Context) (bool, error)
	if f.NoopSeconds, f.NoopRequests, err = measure("no-op reconcile", func() (err error) { handled, err = t.request(ctx, ns, false); return err },
		func(ctx context.Context) (bool, error) { return handled(ctx) }); err != nil {
		return f, err
	}
	if err := repo.Write(manifests(ns, 10)); err != nil {
		return f, err
	}
	changed, err := repo.Commit("main", "10 changed")
	if err != nil {
		return f, err
	}
	if f.ChangeSeconds, f.ChangeRequests, err = measure("10 objects changed", func() error { _, err := t.request(ctx, ns, true); return err },
		func(ctx context.Context) (bool, error) { return t.applied(ctx, ns, changed) }); err != nil {
		return f, err
	}
	progress("%s: drift (a deleted ConfigMap)", t.name())
	victim := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm-0003", Namespace: ns}}
	if err := c.Delete(ctx, victim); err != nil {
		return f, err
	}
	start := time.Now()
	f.DriftSeconds = -1
	if kubetest.WaitFor(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(victim), &corev1.ConfigMap{})
		return err == nil, err
	}) == nil {
		f.DriftSeconds = time.Since(start).Seconds()
	}
	time.Sleep(10 * time.Second) // let the drift's aftermath settle
	f.IdlePerMinute, f.RSSMiB, f.PeakRSSMiB, err = p.idle(t, requests)
	return f, err
}

// idle watches t idling for -idle: its requests per minute, then its
// processes' resident and peak memory, summed.
func (p *peers) idle(t tool, requests func() (int, error)) (perMinute, rss, peak float64, err error) {
	progress("%s: idle for %s", t.name(), *idleWindow)
	if err := p.audit.Mark(); err != nil {
		return 0, 0, 0, err
	}
	time.Sleep(*idleWindow)
	n, err := requests()
	if err != nil {
		return 0, 0, 0, err
	}
	for _, pid := range t.pids() {
		r, pk, err := kubetest.ProcessMemory(pid)
		if err != nil {
			return 0, 0, 0, err
		}
		rss, peak = rss+r, peak+pk
	}
	return float64(n) / idleWindow.Minutes(), rss, peak, nil
}

// manifests is a namespace's worth of objects: 500 ConfigMaps, 300
// Services and 200 Deployments; the first `changed` ConfigMaps differ.
func manifests(ns string, changed int) map[string]string {
	var b strings.Builder
	for i := range objects {
		b.WriteString("---\n")
		switch {
		case i < 500:
			v := "a"
			if i < changed {
				v = "b"
			}
			fmt.Fprintf(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%04d\n  namespace: %s\ndata:\n  v: %s\n", i, ns, v)
		case i < 800:
			fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-%04d\n  namespace: %s\nspec:\n  selector: {app: a%04d}\n  ports: [{port: 80}]\n", i, ns, i)
		default:
			fmt.Fprintf(&b, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: dep-%04d\n  namespace: %s\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: a%04d}}\n  template:\n    metadata: {labels: {app: a%04d}}\n    spec: {containers: [{name: c, image: registry.example/app:1}]}\n", i, ns, i, i)
		}
	}
	return map[string]string{"deploy/all.yaml": b.String()}
}

func (p *peers) kubeconfig(ns string) string { return filepath.Join(p.dir, ns+".kubeconfig") }

// installFluxCRDs applies every CRD manifest of the given directories.
func (p *peers) installFluxCRDs(ctx context.Context) error {
	if *crdDirs == "" {
		return fmt.Errorf("-flux-crds is required (make bench-peers sets it)")
	}
	for _, dir := range strings.Split(*crdDirs, ",") {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			return err
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(data, &u.Object); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if u.GetKind() != "CustomResourceDefinition" {
				continue
			}
			u.SetManagedFields(nil)
			if err := p.env.Client.Patch(ctx, u, client.Apply, client.FieldOwner("converge-peers"), client.ForceOwnership); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
	}
	return nil
}

// process starts a command with its output in p.dir/<name>.log.
func (p *peers) process(name string, env []string, args ...string) (*exec.Cmd, error) {
	logs, err := os.Create(filepath.Join(p.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

func stopAll(cmds []*exec.Cmd) {
	for _, c := range cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
}

func pidsOf(cmds []*exec.Cmd) []int {
	var out []int
	for _, c := range cmds {
		out = append(out, c.Process.Pid)
	}
	return out
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func print(results map[string][]figures) {
	printRows(results, []row[figures]{
		{"cold sync, 1,000 objects (s)", func(f figures) float64 { return f.ColdSeconds }},
		{"cold sync (requests)", func(f figures) float64 { return float64(f.ColdRequests) }},
		{"10 changed (s)", func(f figures) float64 { return f.ChangeSeconds }},
		{"10 changed (requests)", func(f figures) float64 { return float64(f.ChangeRequests) }},
		{"no-op reconcile (s)", func(f figures) float64 { return f.NoopSeconds }},
		{"no-op reconcile (requests)", func(f figures) float64 { return float64(f.NoopRequests) }},
		{"drift healed (s; -1: not in 30 s)", func(f figures) float64 { return f.DriftSeconds }},
		{"idle (requests/min)", func(f figures) float64 { return f.IdlePerMinute }},
		{"RSS (MiB)", func(f figures) float64 { return f.RSSMiB }},
		{"peak RSS (MiB)", func(f figures) float64 { return f.PeakRSSMiB }},
	})
}

// row is one line of a results table: a name, and how to read its figure.
type row[T any] struct {
	name string
	get  func(T) float64
}

// printRows prints each row's median and range for converge and Flux,
// and their ratio.
func printRows[T any](results map[string][]T, rows []row[T]) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tconverge median [range]\tFlux median [range]\tFlux / converge")
	for _, r := range rows {
		cell := func(fs []T) (float64, string) {
			var xs []float64
			for _, f := range fs {
				xs = append(xs, r.get(f))
			}
			sort.Float64s(xs)
			if len(xs) == 0 {
				return 0, "-"
			}
			m := median(xs)
			return m, fmt.Sprintf("%.2f [%.2f–%.2f]", m, xs[0], xs[len(xs)-1])
		}
		cm, cs := cell(results["converge"])
		fm, fs := cell(results["flux"])
		ratio := "-"
		if cm > 0 && fm > 0 {
			ratio = fmt.Sprintf("%.1f×", fm/cm)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.name, cs, fs, ratio)
	}
	tw.Flush()
}

func progress(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
