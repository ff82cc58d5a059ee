package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/testutil/kubetest"
)

var env *kubetest.Env

func TestMain(m *testing.M) { kubetest.Main(m, kubetest.EnvOptions{}, &env) }

func newManager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(env.Config, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func objects(t *testing.T, docs ...string) []render.Object {
	t.Helper()
	var out []render.Object
	for i, d := range docs {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(d), &u.Object); err != nil {
			t.Fatal(err)
		}
		out = append(out, render.Object{Unstructured: u, Source: fmt.Sprintf("test.yaml#%d", i+1)})
	}
	return out
}

func actions(cs *ChangeSet) map[string]Action {
	out := map[string]Action{}
	for _, c := range cs.Changes {
		out[c.Ref] = c.Action
	}
	return out
}

func TestPlan_ClassifiesCreatedConfiguredUnchangedAndDeleted(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	opts := SyncOptions{PlanOptions: PlanOptions{App: App{Name: "shop", Namespace: ns}, DefaultNamespace: ns, Prune: true}}
	first := objects(t,
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: same}\ndata: {a: b}",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: edited}\ndata: {a: b}",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: removed}\ndata: {a: b}",
	)
	if _, err := m.Sync(ctx, first, opts); err != nil {
		t.Fatal(err)
	}
	second := objects(t,
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: same}\ndata: {a: b}",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: edited}\ndata: {a: c}",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: added}\ndata: {a: b}",
	)
	plan, err := m.Plan(ctx, second, opts.PlanOptions)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Action{
		"ConfigMap/" + ns + "/same":    ActionUnchanged,
		"ConfigMap/" + ns + "/edited":  ActionConfigured,
		"ConfigMap/" + ns + "/added":   ActionCreated,
		"ConfigMap/" + ns + "/removed": ActionDeleted,
	}
	if got := actions(&plan.ChangeSet); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("actions = %v\nwant      %v", got, want)
	}
	if plan.DryRuns() != 2 {
		t.Errorf("plan made %d dry-runs, want 2 (edited and added only)", plan.DryRuns())
	}
	diffs := func(cs *ChangeSet) map[string]bool {
		out := map[string]bool{}
		for _, c := range cs.Changes {
			out[c.Ref] = c.Diff != ""
		}
		return out
	}
	if got := diffs(&plan.ChangeSet); !got["ConfigMap/"+ns+"/edited"] || !got["ConfigMap/"+ns+"/added"] || !got["ConfigMap/"+ns+"/removed"] || got["ConfigMap/"+ns+"/same"] {
		t.Errorf("changes with a diff: %v, want the edited, added and removed ones", got)
	}
	// The agent shows no diff and asks for none: the same plan, less work.
	quiet := opts.PlanOptions
	quiet.NoDiffs = true
	plan, err = m.Plan(ctx, second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(&plan.ChangeSet); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("with NoDiffs, actions = %v\nwant                %v", got, want)
	}
	for ref, has := range diffs(&plan.ChangeSet) {
		if has {
			t.Errorf("with NoDiffs, %s has a diff", ref)
		}
	}
}

func TestApply_ImmutableChangeFailsClearlyWithoutForce(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	opts := SyncOptions{PlanOptions: PlanOptions{App: App{Name: "imm", Namespace: ns}, DefaultNamespace: ns}}
	if _, err := m.Sync(ctx, objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\ndata: {a: b}"), opts); err != nil {
		t.Fatal(err)
	}
	_, err := m.Sync(ctx, objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\ndata: {a: changed}"), opts)
	if err == nil || !strings.Contains(err.Error(), "ConfigMap/"+ns+"/frozen") || !strings.Contains(err.Error(), AnnotationForce) {
		t.Fatalf("error = %v, want one naming the object and %s", err, AnnotationForce)
	}
	var cm corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "frozen"}, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Data["a"] != "b" {
		t.Errorf("data.a = %q, want the old value", cm.Data["a"])
	}
}

func TestApply_ForceRecreatesOnImmutableChange(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	opts := SyncOptions{PlanOptions: PlanOptions{App: App{Name: "imm", Namespace: ns}, DefaultNamespace: ns}}
	doc := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen, annotations: {converge.dev/force: \"true\"}}\nimmutable: true\ndata: {a: %s}"
	if _, err := m.Sync(ctx, objects(t, fmt.Sprintf(doc, "b")), opts); err != nil {
		t.Fatal(err)
	}
	var before corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "frozen"}, &before); err != nil {
		t.Fatal(err)
	}
	cs, err := m.Sync(ctx, objects(t, fmt.Sprintf(doc, "changed")), opts)
	if err != nil {
		t.Fatal(err)
	}
	var after corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "frozen"}, &after); err != nil {
		t.Fatal(err)
	}
	if after.Data["a"] != "changed" || after.UID == before.UID {
		t.Errorf("data.a = %q, uid changed %v; want the new value in a new object", after.Data["a"], after.UID != before.UID)
	}
	if c := cs.Changes[0]; c.Action != ActionConfigured || !strings.Contains(c.Reason, "replaced") {
		t.Errorf("change = %+v", c)
	}
}

func TestApply_FailedSyncStillRecordsWhatItApplied(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	app := App{Name: "partial", Namespace: ns}
	opts := SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns}}
	// Wave 0 applies; wave 1 is never reached because a wave-0 object
	// (a Pod with no node to run on) never becomes healthy in envtest.
	_, err := m.Sync(ctx, objects(t,
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: early}\ndata: {a: b}",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: stuck}\nspec: {containers: [{name: c, image: x}]}",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late, annotations: {converge.dev/sync-wave: \"1\"}}\ndata: {a: b}",
	), SyncOptions{PlanOptions: opts.PlanOptions, Timeout: 500e6})
	if err == nil || !strings.Contains(err.Error(), "wave 0") {
		t.Fatalf("error = %v, want wave 0 not healthy", err)
	}
	var cm corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "late"}, &cm); err == nil {
		t.Error("wave 1 was applied before wave 0 was healthy")
	}
	inv, _, err := m.loadInventory(ctx, nil, app)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range inv.Entries {
		names = append(names, k.Name)
	}
	if len(names) != 2 {
		t.Errorf("inventory holds %v, want early and stuck", names)
	}
}
