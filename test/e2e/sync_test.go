//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/cli"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/testutil/kubetest"
)

const webApp = `apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
`

func TestSync_CreatesCRDAndItsCustomResourceInOneSync(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	group := strings.ReplaceAll(ns, "-", "") + ".example.converge.dev"
	dir := writeTree(t, ns, map[string]string{
		"crd.yaml": fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.%[1]s
spec:
  group: %[1]s
  names: {kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
`, group),
		"gadget.yaml": fmt.Sprintf("apiVersion: %s/v1\nkind: Gadget\nmetadata:\n  name: g1\nspec:\n  size: 3\n", group),
	})
	t.Cleanup(func() {
		crd := get(t, "apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "gadgets."+group)
		if crd != nil {
			_ = cluster.Client.Delete(context.Background(), crd)
		}
	})
	r := converge(t, "sync", dir, "--app", "gadgets", "-n", ns)
	if r.code != 0 {
		t.Fatalf("sync exit %d:\n%s", r.code, r.output())
	}
	g := get(t, group+"/v1", "Gadget", ns, "g1")
	if g == nil {
		t.Fatal("Gadget g1 was not created")
	}
	if size, _, _ := unstructured.NestedInt64(g.Object, "spec", "size"); size != 3 {
		t.Errorf("spec.size = %d", size)
	}
}

func TestSync_NoOpResyncMakesNoWritesAndNoDryRuns(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	dir := writeTree(t, ns, map[string]string{"app.yaml": webApp})
	if r := converge(t, "sync", dir, "--app", "web", "-n", ns, "--wait", "--timeout", "60s"); r.code != 0 {
		t.Fatalf("first sync exit %d:\n%s", r.code, r.output())
	}
	before := resourceVersions(t, ns)
	// The push sync is in the app's history and announced by events.
	if h := history(t, ns, "web"); len(h.Entries) != 1 || h.Entries[0].Mode != "push" || h.Entries[0].Result != engine.ResultSucceeded || h.Entries[0].Counts.Created != 3 {
		t.Errorf("history after the first push sync: %+v", h.Entries)
	}
	var events corev1.EventList
	if err := cluster.Client.List(context.Background(), &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for _, e := range events.Items {
		if e.InvolvedObject.Name == engine.InventoryName("web") {
			reasons[e.Reason] = true
		}
	}
	if !reasons["SyncStarted"] || !reasons["Synced"] {
		t.Errorf("events on the app's record: %v, want SyncStarted and Synced", reasons)
	}

	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	r := converge(t, "sync", dir, "--app", "web", "-n", ns)
	if r.code != 0 || !strings.Contains(r.stderr, "0 created, 0 configured, 3 unchanged, 0 deleted") {
		t.Fatalf("resync exit %d:\n%s", r.code, r.output())
	}
	if after := resourceVersions(t, ns); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("resourceVersions changed:\nbefore %v\nafter  %v", before, after)
	}
	var writes, dryRuns []string
	for _, e := range convergeRequests(t, audit) {
		if e.Write() {
			writes = append(writes, e.Verb+" "+e.RequestURI)
		}
		if e.DryRun() {
			dryRuns = append(dryRuns, e.Verb+" "+e.RequestURI)
		}
	}
	if len(writes)+len(dryRuns) > 0 {
		t.Errorf("no-op resync made writes %v and dry-runs %v", writes, dryRuns)
	}
}

func TestDiff_ShowsLiveEditAndSyncRevertsIt(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	dir := writeTree(t, ns, map[string]string{"app.yaml": webApp})
	if r := converge(t, "sync", dir, "--app", "web", "-n", ns); r.code != 0 {
		t.Fatalf("sync exit %d:\n%s", r.code, r.output())
	}
	if r := converge(t, "diff", dir, "--app", "web", "-n", ns); r.code != 0 {
		t.Fatalf("diff right after sync exit %d, want 0:\n%s", r.code, r.output())
	}
	var d appsv1.Deployment
	key := client.ObjectKey{Namespace: ns, Name: "web"}
	if err := cluster.Client.Get(context.Background(), key, &d); err != nil {
		t.Fatal(err)
	}
	// A merge patch, not an update: the Deployment controller writes to the
	// object too, and an update would race it.
	patch := client.MergeFrom(d.DeepCopy())
	d.Spec.Replicas = ptr(int32(5))
	if err := cluster.Client.Patch(context.Background(), &d, patch); err != nil {
		t.Fatal(err)
	}

	r := converge(t, "diff", dir, "--app", "web", "-n", ns)
	if r.code != cli.ExitChanges {
		t.Fatalf("diff after a live edit exit %d, want 1:\n%s", r.code, r.output())
	}
	for _, want := range []string{"--- live/Deployment/" + ns + "/web", "-  replicas: 5", "+  replicas: 2"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("diff lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "Deployment/"+ns+"/web configured") {
		t.Errorf("summary lacks the configured Deployment:\n%s", r.stderr)
	}

	if r := converge(t, "sync", dir, "--app", "web", "-n", ns); r.code != 0 {
		t.Fatalf("sync exit %d:\n%s", r.code, r.output())
	}
	if err := cluster.Client.Get(context.Background(), key, &d); err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %d after sync, want 2", *d.Spec.Replicas)
	}
}

func TestPrune_DeletesRemovedObjectsAndKeepsUnownedOnes(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	dir := writeTree(t, ns, map[string]string{
		"keep.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\n",
		"gone.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gone\n",
		"held.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  annotations:\n    converge.dev/prune: \"false\"\n",
	})
	if r := converge(t, "sync", dir, "--app", "shop", "-n", ns); r.code != 0 {
		t.Fatalf("sync exit %d:\n%s", r.code, r.output())
	}
	// Objects the app does not own, even with look-alike labels.
	for name, labels := range map[string]map[string]string{
		"lookalike":    {"converge.dev/app": "shop"},
		"other-app":    {"converge.dev/app": "shop-2"},
		"hand-written": nil,
	} {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels}}
		if err := cluster.Client.Create(context.Background(), cm); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"gone.yaml", "held.yaml"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	r := converge(t, "sync", dir, "--app", "shop", "-n", ns, "--prune")
	if r.code != 0 {
		t.Fatalf("sync --prune exit %d:\n%s", r.code, r.output())
	}
	if get(t, "v1", "ConfigMap", ns, "gone") != nil {
		t.Error("ConfigMap gone was not pruned")
	}
	for _, name := range []string{"keep", "held", "lookalike", "other-app", "hand-written"} {
		if get(t, "v1", "ConfigMap", ns, name) == nil {
			t.Errorf("ConfigMap %s was deleted", name)
		}
	}
	if !strings.Contains(r.stderr, "ConfigMap/"+ns+"/held skipped") {
		t.Errorf("summary does not say held was kept:\n%s", r.stderr)
	}
}

func TestSync_EmptyRenderNeverPrunes(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	dir := writeTree(t, ns, map[string]string{"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"})
	if r := converge(t, "sync", dir, "--app", "empty", "-n", ns); r.code != 0 {
		t.Fatalf("sync exit %d:\n%s", r.code, r.output())
	}
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	r := converge(t, "sync", dir, "--app", "empty", "-n", ns, "--prune")
	if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "--allow-empty") {
		t.Errorf("empty sync exit %d, want 2 naming --allow-empty:\n%s", r.code, r.output())
	}
	if get(t, "v1", "ConfigMap", ns, "a") == nil {
		t.Fatal("an empty render pruned ConfigMap a")
	}
	if r := converge(t, "sync", dir, "--app", "empty", "-n", ns, "--prune", "--allow-empty"); r.code != 0 {
		t.Fatalf("sync --allow-empty exit %d:\n%s", r.code, r.output())
	}
	if get(t, "v1", "ConfigMap", ns, "a") != nil {
		t.Error("--allow-empty did not prune ConfigMap a")
	}
}

func TestSync_OneInvalidObjectWritesNothing(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	dir := writeTree(t, ns, map[string]string{
		"good.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: good\n",
		"bad.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: bad
spec:
  replicas: -1
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      containers: [{name: c, image: nginx}]
`,
	})
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	r := converge(t, "sync", dir, "--app", "broken", "-n", ns)
	if r.code != cli.ExitFailure {
		t.Fatalf("sync exit %d, want 2:\n%s", r.code, r.output())
	}
	for _, want := range []string{"Deployment/" + ns + "/bad", "bad.yaml#1", "spec.replicas", "nothing was applied"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("error lacks %q:\n%s", want, r.stderr)
		}
	}
	if get(t, "v1", "ConfigMap", ns, "good") != nil {
		t.Error("ConfigMap good was written although the sync failed")
	}
	for _, e := range convergeRequests(t, audit) {
		// converge's own records (the failure goes into the app's history
		// and an event) and asking the server who we are apply nothing.
		own := e.ObjectRef != nil && (e.ObjectRef.Resource == "selfsubjectreviews" || e.ObjectRef.Resource == "events" ||
			(e.ObjectRef.Resource == "configmaps" && strings.HasPrefix(e.ObjectRef.Name, "converge-history-")))
		if e.Write() && !e.DryRun() && !own {
			t.Errorf("failed sync wrote: %s %s", e.Verb, e.RequestURI)
		}
	}
	h := history(t, ns, "broken")
	if len(h.Entries) != 1 || h.Entries[0].Result != engine.ResultFailed || !strings.Contains(h.Entries[0].Error, "spec.replicas") || h.Entries[0].Mode != "push" {
		t.Errorf("history of the failed push sync = %+v", h.Entries)
	}
}

func TestSecrets_ValuesNeverAppearInOutput(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	const value = "TOPSECRET-7f3a9c"
	encoded := base64.StdEncoding.EncodeToString([]byte(value))
	dir := writeTree(t, ns, map[string]string{
		"secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: " + value + "\n",
	})
	check := func(what string, r result) {
		t.Helper()
		for _, leak := range []string{value, encoded} {
			if strings.Contains(r.output(), leak) {
				t.Errorf("%s leaks the secret value (%s):\n%s", what, leak, r.output())
			}
		}
	}
	check("diff before sync", converge(t, "diff", dir, "--app", "sec", "-n", ns, "-o", "json"))
	check("sync", converge(t, "sync", dir, "--app", "sec", "-n", ns, "-o", "yaml"))

	// A live edit: the diff must show that the key changed, not its values.
	var s corev1.Secret
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "creds"}, &s); err != nil {
		t.Fatal(err)
	}
	if string(s.Data["password"]) != value {
		t.Fatalf("secret holds %q", s.Data["password"])
	}
	s.Data["password"] = []byte("LIVE-EDIT-51d2")
	s.Data["extra"] = []byte("EXTRA-VALUE-88e1")
	if err := cluster.Client.Update(context.Background(), &s); err != nil {
		t.Fatal(err)
	}
	r := converge(t, "diff", dir, "--app", "sec", "-n", ns)
	check("diff after live edit", r)
	for _, leak := range []string{"LIVE-EDIT-51d2", "EXTRA-VALUE-88e1", base64.StdEncoding.EncodeToString([]byte("LIVE-EDIT-51d2"))} {
		if strings.Contains(r.output(), leak) {
			t.Errorf("diff leaks the live value %s", leak)
		}
	}
	if r.code != cli.ExitChanges || !strings.Contains(r.stdout, "-  password: '*** (masked, before)'") || !strings.Contains(r.stdout, "+  password: '*** (masked, after)'") {
		t.Errorf("diff exit %d does not show password changed:\n%s", r.code, r.stdout)
	}

	// An invalid Secret: the error must not quote the value.
	writeFile(t, filepath.Join(dir, "secret.yaml"), "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\ntype: kubernetes.io/tls\nstringData:\n  password: "+value+"\n")
	r = converge(t, "sync", dir, "--app", "sec", "-n", ns)
	if r.code != cli.ExitFailure {
		t.Errorf("sync of an invalid Secret exit %d, want 2", r.code)
	}
	check("error for an invalid Secret", r)
}

func TestSync_SymlinkOutsideRootIsRefused(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	outside := writeTree(t, ns, map[string]string{"stolen.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stolen\n"})
	dir := writeTree(t, ns, map[string]string{"ok.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n"})
	if err := os.Symlink(filepath.Join(outside, "stolen.yaml"), filepath.Join(dir, "link.yaml")); err != nil {
		t.Fatal(err)
	}
	r := converge(t, "sync", dir, "--app", "links", "-n", ns)
	if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "link.yaml: symlink points outside the repository root") {
		t.Errorf("exit %d, want 2 with a clear message:\n%s", r.code, r.output())
	}
	if get(t, "v1", "ConfigMap", ns, "ok") != nil || get(t, "v1", "ConfigMap", ns, "stolen") != nil {
		t.Error("a refused render still wrote objects")
	}
}

func TestSync_KustomizeOverlayAndHelmChartFromExamples(t *testing.T) {
	root, err := kubetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ns := kubetest.Namespace(t, cluster.Client)
	r := converge(t, "sync", filepath.Join(root, "examples/kustomize/overlays/prod"), "--app", "api", "-n", ns, "--wait", "--timeout", "60s")
	if r.code != 0 {
		t.Fatalf("kustomize sync exit %d:\n%s", r.code, r.output())
	}
	var d appsv1.Deployment
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "prod-api"}, &d); err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 3 || d.Status.AvailableReplicas != 3 {
		t.Errorf("prod-api replicas %d, available %d; want 3 and 3", *d.Spec.Replicas, d.Status.AvailableReplicas)
	}

	r = converge(t, "sync", filepath.Join(root, "examples/helm/podinfo"), "--app", "podinfo", "-n", ns,
		"--release-name", "demo", "--set", "replicaCount=3", "--wait", "--timeout", "60s")
	if r.code != 0 {
		t.Fatalf("helm sync exit %d:\n%s", r.code, r.output())
	}
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "demo-podinfo"}, &d); err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 3 || d.Status.AvailableReplicas != 3 {
		t.Errorf("demo-podinfo replicas %d, available %d; want 3 and 3", *d.Spec.Replicas, d.Status.AvailableReplicas)
	}
	if svc := get(t, "v1", "Service", ns, "demo-podinfo"); svc == nil {
		t.Error("Service demo-podinfo missing")
	}
}

func resourceVersions(t *testing.T, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range []struct{ apiVersion, kind, name string }{
		{"v1", "ConfigMap", "settings"}, {"apps/v1", "Deployment", "web"}, {"v1", "Service", "web"},
	} {
		u := get(t, k.apiVersion, k.kind, ns, k.name)
		if u == nil {
			t.Fatalf("%s %s missing", k.kind, k.name)
		}
		out[k.kind+"/"+k.name] = u.GetResourceVersion()
	}
	return out
}

func ptr[T any](v T) *T { return &v }
