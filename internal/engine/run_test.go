package engine

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/testutil/kubetest"
)

func TestDecideRun(t *testing.T) {
	const r1, r2 = "r1", "r2"
	cases := []struct {
		name string
		f    runFacts
		want runDecision
	}{
		{"dry run: nothing", runFacts{apply: true, dryRun: true, changes: true, hooks: 1, record: true}, runDecision{}},
		{"compare only", runFacts{changes: true, hooks: 1}, runDecision{}},
		{"compare only, asked to record", runFacts{record: true}, runDecision{record: true}},
		{"no-op resync", runFacts{apply: true, revision: r1, previous: r1}, runDecision{apply: true}},
		{"no-op resync with hooks", runFacts{apply: true, hooks: 2, revision: r1, previous: r1}, runDecision{apply: true}},
		{"changes", runFacts{apply: true, changes: true, revision: r1, previous: r1}, runDecision{apply: true, announce: true, record: true}},
		{"changes run hooks", runFacts{apply: true, changes: true, hooks: 1, revision: r1, previous: r1}, runDecision{apply: true, hooks: true, announce: true, record: true}},
		{"new revision, nothing to change", runFacts{apply: true, revision: r2, previous: r1}, runDecision{apply: true, record: true}},
		{"new revision runs hooks", runFacts{apply: true, hooks: 1, revision: r2, previous: r1}, runDecision{apply: true, hooks: true, announce: true, record: true}},
		{"asked to record", runFacts{apply: true, record: true, revision: r1, previous: r1}, runDecision{apply: true, record: true}},
		{"hooks asked for", runFacts{apply: true, hookMode: HooksRun, hooks: 1, revision: r1, previous: r1}, runDecision{apply: true, hooks: true, announce: true, record: true}},
		{"hooks asked for, none there", runFacts{apply: true, hookMode: HooksRun, revision: r1, previous: r1}, runDecision{apply: true}},
		{"drift correction skips hooks", runFacts{apply: true, hookMode: HooksSkip, changes: true, hooks: 1, revision: r1, previous: r1}, runDecision{apply: true, announce: true, record: true}},
		{"push without a revision", runFacts{apply: true, hooks: 1}, runDecision{apply: true}},
		{"selective: no hooks, recorded", runFacts{apply: true, selective: true, hookMode: HooksRun, hooks: 1, changes: true, revision: r2, previous: r1}, runDecision{apply: true, announce: true, record: true}},
		{"selective, nothing to change", runFacts{apply: true, selective: true, revision: r1, previous: r1}, runDecision{apply: true, record: true}},
	}
	for _, tc := range cases {
		if got := decideRun(tc.f); got != tc.want {
			t.Errorf("%s: decideRun = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// events collects what a sync announces, as "Type Reason".
type events struct {
	mu  sync.Mutex
	got []string
	msg []string
}

func (e *events) Event(typ, reason, msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, typ+" "+reason)
	e.msg = append(e.msg, msg)
}

// take returns the events so far and forgets them.
func (e *events) take() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := strings.Join(e.got, ", ")
	e.got, e.msg = nil, nil
	return out
}

func historyOf(t *testing.T, app App) []HistoryEntry {
	t.Helper()
	h, err := LoadHistory(context.Background(), env.Client, app)
	if err != nil {
		t.Fatal(err)
	}
	return h.Entries
}

// Run writes a history entry and sends one outcome event for what a
// person would want to find later (a change, a new revision, a failure),
// and nothing for a resync that changes nothing; push (RecordFailure for a
// render that fails) and pull record the same failure the same way.
func TestRun_RecordsAndAnnouncesByOutcome(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	app := App{Name: "shop", Namespace: ns}
	ev := &events{}
	opts := func(rev string) RunOptions {
		return RunOptions{
			SyncOptions: SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns, Prune: true, Revision: rev}},
			Apply:       true, Mode: ModePush, Trigger: Trigger{Type: TriggerManual},
			History: env.Client, Events: ev,
		}
	}
	cm := objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: b}")
	steps := []struct {
		name    string
		run     func() error
		events  string
		entries int
	}{
		{"first sync", func() error { _, err := m.Run(ctx, cm, opts("r1")); return err }, "Normal SyncStarted, Normal Synced", 1},
		{"no-op resync", func() error { _, err := m.Run(ctx, cm, opts("r1")); return err }, "", 1},
		{"dry run of a change", func() error {
			o := opts("r2")
			o.DryRun = true
			_, err := m.Run(ctx, objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: c}"), o)
			return err
		}, "", 1},
		{"new revision, same objects", func() error { _, err := m.Run(ctx, cm, opts("r2")); return err }, "", 2},
		{"plan fails", func() error {
			_, err := m.Run(ctx, objects(t, "apiVersion: example.com/v1\nkind: Nothing\nmetadata: {name: x}"), opts("r3"))
			return expectErr(err)
		}, "Warning SyncFailed", 3},
		{"the same failure retried", func() error {
			_, err := m.Run(ctx, objects(t, "apiVersion: example.com/v1\nkind: Nothing\nmetadata: {name: x}"), opts("r3"))
			return expectErr(err)
		}, "Warning SyncFailed", 3},
		{"a render that fails", func() error {
			return RecordFailure(ctx, opts("r4"), errors.New("deploy/web.yaml: yaml: line 2: did not find expected key"))
		}, "Warning SyncFailed", 4},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := ev.take(); got != s.events {
			t.Errorf("%s: events %q, want %q", s.name, got, s.events)
		}
		if got := historyOf(t, app); len(got) != s.entries {
			t.Errorf("%s: %d history entries, want %d", s.name, len(got), s.entries)
		}
	}
	h := historyOf(t, app)
	if h[0].Result != ResultFailed || h[0].Revision != "r4" || !strings.Contains(h[0].Error, "deploy/web.yaml") || h[0].Mode != ModePush {
		t.Errorf("newest entry %+v, want the render failure of r4", h[0])
	}
	if h[1].Result != ResultFailed || h[1].Revision != "r3" || !strings.Contains(h[1].Error, "example.com/v1") {
		t.Errorf("second entry %+v, want the plan failure of r3", h[1])
	}
}

func expectErr(err error) error {
	if err == nil {
		return errors.New("succeeded, want a failure")
	}
	return nil
}

// Hooks run with a sync that changes something or applies a new
// revision, when asked for, and never on a resync or a drift correction;
// a failed PreSync hook stops the sync before it applies anything, runs
// the SyncFail hooks, and is recorded with them.
func TestRun_HooksRunWhenTheDecisionSays(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	app := App{Name: "hooked", Namespace: ns}
	hook := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: migrate, annotations: {converge.dev/hook: PreSync, converge.dev/hook-delete-policy: HookSucceeded}}"
	run := func(rev, data string, mode HookMode) *Result {
		t.Helper()
		objs := objects(t, hook, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: "+data+"}")
		res, err := m.Run(ctx, objs, RunOptions{
			SyncOptions: SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns, Revision: rev}},
			Apply:       true, Mode: ModePull, History: env.Client, Hooks: mode,
		})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	steps := []struct {
		name      string
		rev, data string
		mode      HookMode
		hooks     int
	}{
		{"first sync", "r1", "a", HooksOnChange, 1},
		{"resync", "r1", "a", HooksOnChange, 0},
		{"drift correction", "r1", "b", HooksSkip, 0},
		{"new revision", "r2", "b", HooksOnChange, 1},
		{"asked for", "r2", "b", HooksRun, 1},
	}
	for _, s := range steps {
		if res := run(s.rev, s.data, s.mode); len(res.Hooks) != s.hooks {
			t.Errorf("%s: %d hooks ran (%v), want %d", s.name, len(res.Hooks), res.Hooks, s.hooks)
		}
	}

	// A PreSync Pod hook that fails: nothing applied, SyncFail ran.
	failing := objects(t,
		"apiVersion: v1\nkind: Pod\nmetadata: {name: check, annotations: {converge.dev/hook: PreSync}}\nspec: {containers: [{name: c, image: busybox}]}",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cleanup, annotations: {converge.dev/hook: SyncFail}}",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: c}",
	)
	failed := make(chan error, 1)
	go func() { failed <- failPod(ctx, ns, "check") }()
	ev := &events{}
	res, err := m.Run(ctx, failing, RunOptions{
		SyncOptions: SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns, Revision: "r3"}, Timeout: time.Minute},
		Apply:       true, Mode: ModePull, History: env.Client, Events: ev,
	})
	if ferr := <-failed; ferr != nil {
		t.Fatal(ferr)
	}
	var herr *HookError
	if !errors.As(err, &herr) || herr.Phase != PhasePreSync {
		t.Fatalf("err = %v, want the PreSync hook's failure", err)
	}
	if got := ev.take(); got != "Normal SyncStarted, Warning SyncFailed" {
		t.Errorf("events %q, want SyncStarted then SyncFailed", got)
	}
	var web corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &web); err != nil || web.Data["a"] != "b" {
		t.Errorf("web = %v (%v), want it as the last sync left it", web.Data, err)
	}
	var ran []string
	for _, h := range res.Hooks {
		ran = append(ran, string(h.Phase)+" "+h.Status)
	}
	if strings.Join(ran, ", ") != "PreSync Failed, SyncFail Succeeded" {
		t.Errorf("hooks %v, want the PreSync failure and the SyncFail hook", ran)
	}
	e := historyOf(t, app)[0]
	if e.Result != ResultFailed || e.Revision != "r3" || len(e.Hooks) != 2 || e.Counts != (Counts{}) {
		t.Errorf("history entry %+v, want a failure of r3 with both hooks and nothing applied", e)
	}
}

// failPod marks the Pod hook name failed once it exists (no kubelet runs
// it here).
func failPod(ctx context.Context, ns, name string) error {
	return wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var pod corev1.Pod
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		pod.Status.Phase, pod.Status.Message = corev1.PodFailed, "exit 1"
		return env.Client.Status().Update(ctx, &pod) == nil, nil
	})
}

// Deleting an app is recorded and announced as a sync is: one Deleted
// event, a history entry naming what was kept, its hooks included.
func TestDelete_RecordsAndAnnouncesOnce(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	app := App{Name: "gone", Namespace: ns}
	objs := objects(t,
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: b}",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: data, annotations: {argocd.argoproj.io/sync-options: Delete=false}}\ndata: {a: b}",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: goodbye, annotations: {converge.dev/hook: PreDelete}}",
	)
	if _, err := m.Run(ctx, objs, RunOptions{SyncOptions: SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns, Revision: "r1"}}, Apply: true, History: env.Client}); err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	res, err := m.Delete(ctx, app, DeleteOptions{Objects: objs, DefaultNamespace: ns, History: env.Client, Mode: ModePull, Events: ev})
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.take(); got != "Normal "+EventDeleted {
		t.Errorf("events %q, want one Deleted", got)
	}
	if res.Counts.Deleted != 1 || len(res.Hooks) != 1 {
		t.Errorf("result %+v, want 1 deleted and the PreDelete hook", res)
	}
	e := historyOf(t, app)[0]
	if e.Trigger.Type != TriggerDeletion || len(e.Kept) != 1 || !strings.Contains(e.Kept[0], "ConfigMap/"+ns+"/data") || len(e.Hooks) != 1 {
		t.Errorf("history entry %+v, want the deletion keeping data, with its hook", e)
	}
	for name, want := range map[string]bool{"web": false, "data": true} {
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &corev1.ConfigMap{})
		if (err == nil) != want {
			t.Errorf("ConfigMap %s present = %v, want %v", name, err == nil, want)
		}
	}
}

// A selective sync (Argo CD's --resource) compares everything and changes
// only what it selects: another changed object is "not selected", an
// object that left Git is pruned only when selected, no hook runs, the
// record keeps its revision, and the sync is recorded.
func TestRun_SelectiveSyncChangesOnlyWhatItSelects(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	app := App{Name: "partial", Namespace: ns}
	cm := func(name, v string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata: {v: \"" + v + "\"}\n"
	}
	hook := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: migrate, annotations: {converge.dev/hook: PreSync}}\n"
	run := func(rev string, only []ResourceSelector, docs ...string) *Result {
		t.Helper()
		res, err := m.Run(ctx, objects(t, docs...), RunOptions{
			SyncOptions: SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns, Prune: true, Revision: rev, Only: only}},
			Apply:       true, History: env.Client, Hooks: HooksRun,
		})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	run("r1", nil, cm("a", "1"), cm("b", "1"), cm("c", "1"))
	sel, err := ParseResourceSelector(":ConfigMap:" + ns + "/a")
	if err != nil {
		t.Fatal(err)
	}
	res := run("r2", []ResourceSelector{sel}, cm("a", "2"), cm("b", "2"), hook)
	got := map[string]string{}
	for _, c := range res.Changes.Changes {
		got[c.Name] = string(c.Action) + " " + c.Reason
	}
	want := map[string]string{"a": "configured ", "b": "skipped not selected (would be configured)"}
	if got["a"] != want["a"] || got["b"] != want["b"] {
		t.Errorf("changes %v, want a configured and b not selected", got)
	}
	if len(res.Hooks) != 0 {
		t.Errorf("hooks ran in a selective sync: %v", res.Hooks)
	}
	read := func(name string) string {
		var c corev1.ConfigMap
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &c); err != nil {
			return "gone"
		}
		return c.Data["v"]
	}
	if read("a") != "2" || read("b") != "1" || read("c") != "1" {
		t.Errorf("a=%s b=%s c=%s: want 2, 1 (not selected), 1 (left Git, not selected: not pruned)", read("a"), read("b"), read("c"))
	}
	inv, err := m.InventoryIn(ctx, env.Client, app)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Revision != "r1" || len(inv.Entries) != 3 {
		t.Errorf("inventory at %s with %d entries, want r1 and a, b, c", inv.Revision, len(inv.Entries))
	}
	if e := historyOf(t, app)[0]; e.Revision != "r2" || e.ChangedTotal != 1 {
		t.Errorf("history entry %+v, want r2 with one change", e)
	}
	// Selecting c prunes it.
	selC, _ := ParseResourceSelector(":ConfigMap:c")
	run("r2", []ResourceSelector{selC}, cm("a", "2"), cm("b", "2"))
	if read("c") != "gone" || read("b") != "1" {
		t.Errorf("c=%s b=%s: want c pruned (selected), b untouched", read("c"), read("b"))
	}
	for _, bad := range []string{"ConfigMap/a", "apps:Deployment", ":ConfigMap:ns/", "::a"} {
		if _, err := ParseResourceSelector(bad); err == nil {
			t.Errorf("ParseResourceSelector(%q) accepted it", bad)
		}
	}
}

// Deleting an app whose namespace is being deleted (its history record
// already gone with it) completes: a record that can no longer be written
// must not hold the deletion, or the namespace would wait for ever.
func TestDelete_InATerminatingNamespaceCompletes(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	app := App{Name: "leaving", Namespace: ns}
	if _, err := m.Run(ctx, objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n"), RunOptions{
		SyncOptions: SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns}}, Apply: true, History: env.Client}); err != nil {
		t.Fatal(err)
	}
	// What the namespace controller does first: the ConfigMaps go. Here
	// only the history record, then the namespace is marked deleted.
	if err := env.Client.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: HistoryName(app.Name)}}); err != nil {
		t.Fatal(err)
	}
	var nsObj corev1.Namespace
	if err := env.Client.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctx, &nsObj); err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	if _, err := m.Delete(ctx, app, DeleteOptions{History: env.Client, Mode: ModePull, Events: ev}); err != nil {
		t.Fatalf("deleting in a terminating namespace: %v", err)
	}
	if got := ev.take(); got != "Normal "+EventDeleted {
		t.Errorf("events %q, want Deleted", got)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &corev1.ConfigMap{}); err == nil {
		t.Error("the app's ConfigMap is still there")
	}
}
