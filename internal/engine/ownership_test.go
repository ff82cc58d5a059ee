package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	kptr "k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/testutil/kubetest"
)

func TestSync_NeverTakesAnotherAppsObject(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\ndata: {owner: %s}"
	first := SyncOptions{PlanOptions: PlanOptions{App: App{Name: "first", Namespace: ns}, DefaultNamespace: ns, Prune: true}}
	if _, err := m.Sync(ctx, objects(t, strings.ReplaceAll(cm, "%s", "first")), first); err != nil {
		t.Fatal(err)
	}
	second := SyncOptions{PlanOptions: PlanOptions{App: App{Name: "second", Namespace: ns}, DefaultNamespace: ns, Prune: true}}
	_, err := m.Sync(ctx, objects(t, strings.ReplaceAll(cm, "%s", "second")), second)
	if err == nil || !strings.Contains(err.Error(), "ConfigMap/"+ns+"/shared") || !strings.Contains(err.Error(), "belongs to app "+ns+"/first") {
		t.Fatalf("error = %v, want a refusal naming the object and its owner", err)
	}
	var live corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "shared"}, &live); err != nil {
		t.Fatal(err)
	}
	if live.Data["owner"] != "first" || live.Labels[LabelApp] != "first" {
		t.Errorf("the object changed hands: %v %v", live.Data, live.Labels)
	}
}

func TestSync_AdoptsUnownedObjectsOnlyAsThePolicySays(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	for _, name := range []string{"plain", "annotated"} {
		if err := env.Client.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string]string{"by": "kubectl"}}); err != nil {
			t.Fatal(err)
		}
	}
	opts := SyncOptions{PlanOptions: PlanOptions{App: App{Name: "tenant", Namespace: ns}, DefaultNamespace: ns, Adopt: AdoptAnnotated}}
	_, err := m.Sync(ctx, objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\ndata: {by: converge}"), opts)
	if !strings.Contains(errString(err), "annotate the manifest converge.dev/adopt") {
		t.Fatalf("error = %v, want a refusal to adopt", err)
	}
	if _, err := m.Sync(ctx, objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: annotated, annotations: {converge.dev/adopt: \"true\"}}\ndata: {by: converge}"), opts); err != nil {
		t.Fatalf("an annotated manifest: %v", err)
	}
	var live corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "plain"}, &live); err != nil || live.Data["by"] != "kubectl" {
		t.Errorf("the refused object changed: %v %v", live.Data, err)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "annotated"}, &live); err != nil || live.Data["by"] != "converge" {
		t.Errorf("the annotated object was not adopted: %v %v", live.Data, err)
	}
	opts.Adopt = AdoptAlways
	if _, err := m.Sync(ctx, objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\ndata: {by: converge}"), opts); err != nil {
		t.Fatalf("single-tenant adoption: %v", err)
	}
}

func TestPlan_PolicyRefusesBeforeAskingTheCluster(t *testing.T) {
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	policy := &Policy{Name: "Tenant a", Namespaces: []string{ns}, ClusterKinds: []GroupKind{{Group: "", Kind: "Namespace"}},
		DeniedKinds: []GroupKind{{Group: "rbac.authorization.k8s.io", Kind: "*"}}}
	for name, tc := range map[string]struct{ doc, want string }{
		"another namespace":       {"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}", "ConfigMap/kube-system/x (test.yaml#1): refused by policy: Tenant a allows namespaces " + ns + " only"},
		"a cluster-scoped kind":   {"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}", "denies kind ClusterRole.rbac.authorization.k8s.io"},
		"not allowed cluster":     {"apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: x}\nprovisioner: x", "allows no cluster-scoped StorageClass.storage.k8s.io"},
		"a denied kind":           {"apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: x}", "denies kind Role.rbac.authorization.k8s.io"},
		"a namespace not its own": {"apiVersion: v1\nkind: Namespace\nmetadata: {name: default}", "Namespace/default (test.yaml#1): refused by policy"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := m.Plan(context.Background(), objects(t, tc.doc), PlanOptions{App: App{Name: "a", Namespace: ns}, DefaultNamespace: ns, Policy: policy})
			if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want ErrPolicy with %q", err, tc.want)
			}
		})
	}
	if _, err := m.Plan(context.Background(), objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}"), PlanOptions{App: App{Name: "a", Namespace: ns}, DefaultNamespace: ns, Policy: policy}); err != nil {
		t.Errorf("an allowed object: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestSync_EachAppHasItsOwnFieldManagerAndTakesOverTheSharedOne(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	app := App{Name: "shop", Namespace: ns}
	opts := SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns, Prune: true}}
	if _, err := m.Sync(ctx, objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {keep: one, drop: two}"), opts); err != nil {
		t.Fatal(err)
	}
	var live corev1.ConfigMap
	managers := func() []string {
		t.Helper()
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cm"}, &live); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range live.ManagedFields {
			out = append(out, e.Manager+":"+string(e.Operation))
		}
		return out
	}
	if got := strings.Join(managers(), ","); got != "converge.dev/"+ns+"/shop:Apply" {
		t.Fatalf("managers = %s", got)
	}
	// As an object applied before apps had managers of their own.
	for i, e := range live.ManagedFields {
		if e.Manager == app.FieldManager() {
			live.ManagedFields[i].Manager = FieldManager
		}
	}
	if err := env.Client.Update(ctx, &live); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(managers(), ","); got != "converge.dev:Apply" {
		t.Fatalf("managers after the rewind = %s", got)
	}
	if _, err := m.Sync(ctx, objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {keep: one}"), opts); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(managers(), ","); got != "converge.dev/"+ns+"/shop:Apply" {
		t.Errorf("managers = %s, want the app's own only", got)
	}
	if _, ok := live.Data["drop"]; ok || live.Data["keep"] != "one" {
		t.Errorf("data = %v, want the field that left Git removed", live.Data)
	}
}

// Objects Argo CD (client-side apply) or Flux (server-side apply) manage
// are adopted in place, their fields handed over: nothing is deleted or
// recreated, and a field that then leaves Git is removed.
func TestSync_TakesOverArgoCDAndFluxFieldsInPlace(t *testing.T) {
	ctx := context.Background()
	for _, peer := range []struct {
		manager string
		ssa     bool
	}{{"argocd-controller", false}, {"kustomize-controller", true}} {
		t.Run(peer.manager, func(t *testing.T) {
			ns := kubetest.Namespace(t, env.Client)
			cm := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "v1", "kind": "ConfigMap",
				"metadata": map[string]any{"name": "cm", "namespace": ns, "labels": map[string]any{"app.kubernetes.io/instance": "shop"}},
				"data":     map[string]any{"keep": "one", "drop": "two"},
			}}
			var err error
			if peer.ssa {
				err = env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(cm.DeepCopy()), client.FieldOwner(peer.manager), client.ForceOwnership)
			} else {
				err = env.Client.Create(ctx, cm.DeepCopy(), client.FieldOwner(peer.manager))
			}
			if err != nil {
				t.Fatal(err)
			}
			var before corev1.ConfigMap
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cm"}, &before); err != nil {
				t.Fatal(err)
			}
			m := newManager(t)
			app := App{Name: "shop", Namespace: ns}
			opts := SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns, Prune: true}}
			same := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, labels: {app.kubernetes.io/instance: shop}}\ndata: {keep: one, drop: two}"
			cs, err := m.Sync(ctx, objects(t, same), opts)
			if err != nil {
				t.Fatal(err)
			}
			if c := cs.Changes[0]; c.Action != ActionConfigured || !strings.Contains(c.Reason, "taking over the fields of "+peer.manager) {
				t.Errorf("first sync: %s %q, want configured, taking over %s", c.Action, c.Reason, peer.manager)
			}
			var live corev1.ConfigMap
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cm"}, &live); err != nil {
				t.Fatal(err)
			}
			if live.UID != before.UID {
				t.Fatal("the object was recreated")
			}
			for _, e := range live.ManagedFields {
				if e.Manager == peer.manager {
					t.Errorf("%s still manages fields after the handover", peer.manager)
				}
			}
			// Now unchanged: nothing to do.
			if cs, err = m.Sync(ctx, objects(t, same), opts); err != nil || cs.Changes[0].Action != ActionUnchanged {
				t.Fatalf("second sync: %v %+v", err, cs)
			}
			// A field that leaves Git is removed.
			if _, err := m.Sync(ctx, objects(t, strings.Replace(same, ", drop: two", "", 1)), opts); err != nil {
				t.Fatal(err)
			}
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cm"}, &live); err != nil {
				t.Fatal(err)
			}
			if _, ok := live.Data["drop"]; ok || live.Data["keep"] != "one" || live.UID != before.UID {
				t.Errorf("after dropping a field from Git: data %v (uid kept %v)", live.Data, live.UID == before.UID)
			}
		})
	}
}

// Fields an ignoreDifferences rule leaves to the live object (an HPA's
// replicas): a change there is no difference and is never overwritten;
// other fields sync; a new object gets Git's value.
func TestSync_IgnoredFieldsStayAsTheClusterHasThem(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	app := App{Name: "shop", Namespace: ns}
	rules := []IgnoreRule{
		{Kind: "ConfigMap", Name: "scaled", JSONPointers: []string{"/data/replicas"}, Field: "spec.ignoreDifferences[0]"},
		{Kind: "ConfigMap", JQPathExpressions: []string{`.data | .[(keys[] | select(startswith("injected")))]`}, Field: "spec.ignoreDifferences[1]"},
	}
	for i := range rules {
		if err := rules[i].Compile(); err != nil {
			t.Fatal(err)
		}
	}
	opts := SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns, Prune: true, IgnoreDifferences: rules}}
	doc := func(replicas, mode string) []render.Object {
		return objects(t, fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: scaled}\ndata: {replicas: %q, mode: %s, injected_ca: from-git}", replicas, mode))
	}
	if _, err := m.Sync(ctx, doc("2", "a"), opts); err != nil {
		t.Fatal(err)
	}
	read := func() map[string]string {
		var cm corev1.ConfigMap
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "scaled"}, &cm); err != nil {
			t.Fatal(err)
		}
		return cm.Data
	}
	if got := read(); got["replicas"] != "2" || got["injected_ca"] != "from-git" {
		t.Fatalf("created with %v, want Git's values", got)
	}
	// Another controller changes the ignored fields.
	patch := []byte(`{"data":{"replicas":"5","injected_ca":"from-webhook"}}`)
	var cm corev1.ConfigMap
	cm.Namespace, cm.Name = ns, "scaled"
	if err := env.Client.Patch(ctx, &cm, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("horizontal-pod-autoscaler")); err != nil {
		t.Fatal(err)
	}
	plan, err := m.Plan(ctx, doc("2", "a"), opts.PlanOptions)
	if err != nil {
		t.Fatal(err)
	}
	if c := plan.ChangeSet.Changes[0]; c.Action != ActionUnchanged {
		t.Fatalf("a change to ignored fields is %s:\n%s", c.Action, c.Diff)
	}
	// A change elsewhere syncs, and leaves the ignored fields as they are.
	if _, err := m.Sync(ctx, doc("2", "b"), opts); err != nil {
		t.Fatal(err)
	}
	if got := read(); got["replicas"] != "5" || got["injected_ca"] != "from-webhook" || got["mode"] != "b" {
		t.Fatalf("after a sync: %v, want mode b and the ignored fields as the cluster had them", got)
	}
	// A bad rule names itself.
	bad := IgnoreRule{Kind: "ConfigMap", JQPathExpressions: []string{".data["}, Field: "spec.ignoreDifferences[2]"}
	if err := bad.Compile(); err == nil || !strings.Contains(err.Error(), "spec.ignoreDifferences[2].jqPathExpressions[0]") {
		t.Fatalf("bad jq: %v", err)
	}
}

// Fields another manager owns by the live object's managedFields (an HPA's
// replicas, a container's image an injector set, found by the container's
// name) are left to it when a rule names that manager: no diff, and a sync
// of a change elsewhere leaves them as the cluster has them. A field that
// manager does not own still syncs; converge's own manager cannot be named.
func TestSync_FieldsOfNamedManagersStayTheirs(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	app := App{Name: "web", Namespace: ns}
	rules := []IgnoreRule{{Group: "apps", Kind: "Deployment", ManagedFieldsManagers: []string{"kube-controller-manager", "injector"}, Field: "spec.ignoreDifferences[0]"}}
	if err := rules[0].Compile(); err != nil {
		t.Fatal(err)
	}
	opts := SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns, IgnoreDifferences: rules}}
	doc := func(image, tier string) []render.Object {
		return objects(t, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {tier: %s}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: sidecar, image: "busybox:1"}
      - {name: web, image: %q}
`, tier, image))
	}
	if _, err := m.Sync(ctx, doc("nginx:1.25", "a"), opts); err != nil {
		t.Fatal(err)
	}
	update := func(manager string, mutate func(*appsv1.Deployment)) {
		t.Helper()
		var d appsv1.Deployment
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &d); err != nil {
			t.Fatal(err)
		}
		mutate(&d)
		if err := env.Client.Update(ctx, &d, client.FieldOwner(manager)); err != nil {
			t.Fatal(err)
		}
	}
	update("kube-controller-manager", func(d *appsv1.Deployment) { d.Spec.Replicas = kptr.To(int32(7)) })
	update("injector", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[1].Image = "nginx:1.27-patched" })
	plan, err := m.Plan(ctx, doc("nginx:1.25", "a"), opts.PlanOptions)
	if err != nil {
		t.Fatal(err)
	}
	if c := plan.ChangeSet.Changes[0]; c.Action != ActionUnchanged {
		t.Fatalf("fields other managers own show as %s:\n%s", c.Action, c.Diff)
	}
	if _, err := m.Sync(ctx, doc("nginx:1.25", "b"), opts); err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &d); err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 7 || d.Spec.Template.Spec.Containers[1].Image != "nginx:1.27-patched" || d.Labels["tier"] != "b" || d.Spec.Template.Spec.Containers[0].Image != "busybox:1" {
		t.Errorf("after a sync: replicas %d, images %s and %s, tier %s: want 7, busybox:1, the injector's, b",
			*d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Image, d.Spec.Template.Spec.Containers[1].Image, d.Labels["tier"])
	}
	// Without the rule, Git's values come back.
	opts.IgnoreDifferences = nil
	if _, err := m.Sync(ctx, doc("nginx:1.25", "b"), opts); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &d); err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 2 || d.Spec.Template.Spec.Containers[1].Image != "nginx:1.25" {
		t.Errorf("without the rule: replicas %d, image %s: want Git's", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[1].Image)
	}
	own := IgnoreRule{Kind: "ConfigMap", ManagedFieldsManagers: []string{"converge.dev/" + ns + "/web"}, Field: "spec.ignoreDifferences[1]"}
	if err := own.Compile(); err == nil || !strings.Contains(err.Error(), "spec.ignoreDifferences[1].managedFieldsManagers[0]") {
		t.Errorf("naming converge's own manager: %v", err)
	}
}

// Argo CD's sync options on objects: Validate=false lets the server drop
// fields the schema does not declare (without it the object fails, naming
// them); Prune=confirm keeps an object that left Git, and says why (there
// is no one to confirm); PruneLast waits for what was applied to be
// healthy before pruning.
func TestSync_ArgoSyncOptionsOnObjects(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	m := newManager(t)
	app := App{Name: "opts", Namespace: ns}
	opts := SyncOptions{PlanOptions: PlanOptions{App: app, DefaultNamespace: ns, Prune: true}, Timeout: 2 * time.Second}
	deploy := func(ann string) string {
		return "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, annotations: {" + ann + "}}\nspec:\n  replica: 3\n  selector: {matchLabels: {a: b}}\n" +
			"  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: x}]}\n"
	}
	kept := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, annotations: {argocd.argoproj.io/sync-options: Prune=confirm}}\n"
	last := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: last, annotations: {argocd.argoproj.io/sync-options: PruneLast=true}}\n"
	if _, err := m.Sync(ctx, objects(t, deploy(""), kept, last), opts); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Fatalf("an undeclared field without Validate=false: %v, want a failure naming it", err)
	}
	lenient := deploy("argocd.argoproj.io/sync-options: Validate=false")
	if _, err := m.Sync(ctx, objects(t, lenient, kept, last), opts); err != nil {
		t.Fatalf("with Validate=false: %v", err)
	}
	var d appsv1.Deployment
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &d); err != nil {
		t.Fatal(err)
	}
	// kept and last leave Git: kept is kept, named (it then leaves the
	// record, as Prune=false objects do).
	plan, err := m.Plan(ctx, objects(t, lenient), opts.PlanOptions)
	if err != nil {
		t.Fatal(err)
	}
	var why string
	for _, c := range plan.ChangeSet.Changes {
		if c.Name == "kept" {
			why = c.Kept
		}
	}
	if !strings.Contains(why, "Prune=confirm") {
		t.Errorf("kept's change says %q, want Prune=confirm named", why)
	}
	// last asks to be pruned last: the Deployment never becomes healthy
	// here (no controller runs it), so nothing is pruned.
	_, err = m.Sync(ctx, objects(t, lenient), opts)
	if err == nil || !strings.Contains(err.Error(), "before pruning") {
		t.Fatalf("PruneLast with an unhealthy Deployment: %v, want the wait to fail before pruning", err)
	}
	for _, name := range []string{"kept", "last"} {
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &corev1.ConfigMap{}); err != nil {
			t.Errorf("ConfigMap %s: %v, want it still there", name, err)
		}
	}
	// Without the Deployment, everything applied is healthy: last goes,
	// kept stays, named.
	if _, err := m.Sync(ctx, objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n"), opts); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "last"}, &corev1.ConfigMap{}); err == nil {
		t.Error("last was not pruned once everything was healthy")
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "kept"}, &corev1.ConfigMap{}); err != nil {
		t.Errorf("kept: %v, want it kept", err)
	}
}
