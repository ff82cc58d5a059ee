//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
)

// corpus reads a directory of the compatibility corpus (test/e2e/compat)
// as files for a repository, under prefix.
func corpus(t *testing.T, name, prefix string) map[string]string {
	t.Helper()
	dir := filepath.Join("compat", name)
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[prefix+"/"+filepath.ToSlash(rel)] = string(data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// repoWith makes a repository on the test Git server holding files in one
// commit on main, and returns it and the commit.
func (a *agentEnv) repoWith(t *testing.T, name string, files map[string]string, message string) (*gitserver.Repo, string) {
	t.Helper()
	repo, err := a.git.NewRepo(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(files); err != nil {
		t.Fatal(err)
	}
	rev, err := repo.Commit("main", message)
	if err != nil {
		t.Fatal(err)
	}
	return repo, rev
}

// create creates app and deletes it when the test ends.
func (a *agentEnv) create(t *testing.T, app *v1alpha1.Application) {
	t.Helper()
	if err := a.client.Create(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.client.Delete(context.Background(), app) })
}

// hookObjects lists what is left of app's hooks in ns, by kind.
func hookObjects(t *testing.T, ns, app string) []string {
	t.Helper()
	var left []string
	for _, kind := range []string{"Job", "ServiceAccount", "Role", "RoleBinding", "ConfigMap"} {
		list := &unstructured.UnstructuredList{}
		apiVersion := "v1"
		switch kind {
		case "Job":
			apiVersion = "batch/v1"
		case "Role", "RoleBinding":
			apiVersion = "rbac.authorization.k8s.io/v1"
		}
		list.SetAPIVersion(apiVersion)
		list.SetKind(kind + "List")
		if err := cluster.Client.List(context.Background(), list, client.InNamespace(ns), client.MatchingLabels{engine.LabelHook: app}); err != nil {
			t.Fatal(err)
		}
		for _, u := range list.Items {
			left = append(left, kind+"/"+u.GetName())
		}
	}
	return left
}

func deleteWebhookConfig(t *testing.T, name string) {
	t.Cleanup(func() {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("admissionregistration.k8s.io/v1")
		u.SetKind("ValidatingWebhookConfiguration")
		u.SetName(name)
		_ = cluster.Client.Delete(context.Background(), u)
	})
}

func TestCompat_HelmHookChartRunsHooksOnceAndDiffIsClean(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	deleteWebhookConfig(t, ns+"-adm-admission-demo")
	chart := filepath.Join("compat", "admission-chart")

	r := converge(t, "sync", chart, "--app", "adm", "-n", ns, "--wait")
	if r.code != 0 {
		t.Fatalf("sync exited %d:\n%s", r.code, r.output())
	}
	for _, o := range []struct{ apiVersion, kind, ns, name string }{
		{"apps/v1", "Deployment", ns, "adm-admission-demo"},
		{"v1", "Service", ns, "adm-admission-demo-admission"},
		{"admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "", ns + "-adm-admission-demo"},
	} {
		if get(t, o.apiVersion, o.kind, o.ns, o.name) == nil {
			t.Errorf("%s %s missing after the sync", o.kind, o.name)
		}
	}
	// Every hook succeeded, and each was deleted as its policy says (the
	// Jobs also by their TTL of 0).
	entries := history(t, ns, "adm").Entries
	if len(entries) != 1 {
		t.Fatalf("history has %d entries, want 1", len(entries))
	}
	var ran []string
	for _, h := range entries[0].Hooks {
		ran = append(ran, string(h.Phase)+" "+h.Ref+" "+h.Status)
	}
	want := []string{
		"PreSync ServiceAccount/" + ns + "/adm-admission-demo-admission Succeeded",
		"PreSync Role/" + ns + "/adm-admission-demo-admission Succeeded",
		"PreSync RoleBinding/" + ns + "/adm-admission-demo-admission Succeeded",
		"PreSync Job/" + ns + "/adm-admission-demo-admission-create Succeeded",
		"PostSync ServiceAccount/" + ns + "/adm-admission-demo-admission Succeeded",
		"PostSync Role/" + ns + "/adm-admission-demo-admission Succeeded",
		"PostSync RoleBinding/" + ns + "/adm-admission-demo-admission Succeeded",
		"PostSync Job/" + ns + "/adm-admission-demo-admission-patch Succeeded",
	}
	if strings.Join(ran, "\n") != strings.Join(want, "\n") {
		t.Errorf("hooks in history:\n%s\nwant:\n%s", strings.Join(ran, "\n"), strings.Join(want, "\n"))
	}
	kubetest.Eventually(t, 30*time.Second, "hook objects deleted", func(context.Context) (bool, error) {
		left := hookObjects(t, ns, "adm")
		return len(left) == 0, fmt.Errorf("left: %v", left)
	})
	if get(t, "v1", "ConfigMap", ns, "adm-admission-demo-test") != nil || get(t, "v1", "Pod", ns, "adm-admission-demo-test") != nil {
		t.Error("the chart's test hook was applied")
	}

	// Hooks are not in the inventory: with them gone, nothing differs.
	if r := converge(t, "diff", chart, "--app", "adm", "-n", ns); r.code != 0 {
		t.Errorf("diff exited %d after the sync:\n%s", r.code, r.output())
	}
	// A sync that changes nothing runs no hook and writes nothing.
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	if r := converge(t, "sync", chart, "--app", "adm", "-n", ns); r.code != 0 || strings.Contains(r.stderr, "hook ") {
		t.Fatalf("second sync exited %d or ran hooks:\n%s", r.code, r.output())
	}
	for _, e := range convergeRequests(t, audit) {
		if e.Write() {
			t.Errorf("the no-op sync wrote: %s %s", e.Verb, e.RequestURI)
		}
	}
	if n := len(history(t, ns, "adm").Entries); n != 1 {
		t.Errorf("history has %d entries after a no-op sync, want 1", n)
	}

	// An upgrade (a new value) runs the upgrade hooks again.
	if r := converge(t, "sync", chart, "--app", "adm", "-n", ns, "--set", "replicas=2", "--wait"); r.code != 0 {
		t.Fatalf("upgrade exited %d:\n%s", r.code, r.output())
	}
	entries = history(t, ns, "adm").Entries
	if len(entries) != 2 || len(entries[1].Hooks) != 8 {
		t.Errorf("after the upgrade: %d entries, the last with %d hooks; want 2 and 8", len(entries), len(entries[len(entries)-1].Hooks))
	}
}

func TestCompat_HookChartUnderTheAgentMakesNoWritesOnceSynced(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	deleteWebhookConfig(t, ns+"-adm-admission-demo")
	repo, rev := a.repoWith(t, ns+"-adm", corpus(t, "admission-chart", "charts/admission"), "admission chart")
	policy := automated(true, true)
	policy.Interval = &metav1.Duration{Duration: 2 * time.Second}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "adm", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "charts/admission"},
			SyncPolicy: policy,
		},
	}
	a.create(t, app)
	a.waitApp(t, ns, "adm", 60*time.Second, "synced and healthy", func(app *v1alpha1.Application) bool {
		return synced(rev)(app) && app.Status.Health.Status == v1alpha1.HealthHealthy
	})
	kubetest.Eventually(t, 30*time.Second, "hook objects deleted", func(context.Context) (bool, error) {
		left := hookObjects(t, ns, "adm")
		return len(left) == 0, fmt.Errorf("left: %v", left)
	})
	entries := len(history(t, ns, "adm").Entries)

	// Ten intervals: every Job the hooks made is gone (TTL 0), and the
	// agent neither recreates one nor calls it drift.
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	observe(t, 20*time.Second, "ten intervals of an app whose hook Jobs removed themselves")
	events, err := audit.Since(func(e kubetest.AuditEvent) bool {
		return e.Write() && e.ObjectRef != nil && e.ObjectRef.Namespace == ns && e.ObjectRef.Resource != "events" &&
			!strings.HasPrefix(e.User.Username, "system:") && e.User.Username != "kwok"
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		t.Errorf("write after the sync: %s %s by %s", e.Verb, e.RequestURI, e.Actor())
	}
	if got := len(history(t, ns, "adm").Entries); got != entries {
		t.Errorf("history grew from %d to %d entries while nothing changed", entries, got)
	}
	var got v1alpha1.Application
	if err := a.client.Get(context.Background(), client.ObjectKeyFromObject(app), &got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Sync.Status != v1alpha1.SyncStatusSynced {
		t.Errorf("sync status %s, want Synced", got.Status.Sync.Status)
	}
}

const failingPreSync = `apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  annotations:
    argocd.argoproj.io/hook: PreSync
spec:
  backoffLimit: 0
  # No node matches: the Job fails at its deadline.
  activeDeadlineSeconds: 1
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {converge.dev/no-such-node: "true"}
      containers:
      - {name: migrate, image: registry.example/migrate:1}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: sync-failed
  annotations:
    argocd.argoproj.io/hook: SyncFail
data:
  note: the sync failed
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
`

func TestCompat_FailedPreSyncHookStopsTheSync(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	dir := writeTree(t, ns, map[string]string{"app.yaml": failingPreSync})

	r := converge(t, "sync", dir, "--app", "mig", "-n", ns)
	if r.code != 2 {
		t.Fatalf("sync exited %d, want 2:\n%s", r.code, r.output())
	}
	if !strings.Contains(r.stderr, "PreSync hook Job/"+ns+"/migrate") {
		t.Errorf("the error does not name the hook:\n%s", r.stderr)
	}
	if get(t, "v1", "ConfigMap", ns, "settings") != nil {
		t.Error("the app's ConfigMap was applied although its PreSync hook failed")
	}
	if get(t, "v1", "ConfigMap", ns, "sync-failed") == nil {
		t.Error("the SyncFail hook did not run")
	}
	entries := history(t, ns, "mig").Entries
	if len(entries) != 1 || entries[0].Result != engine.ResultFailed || !strings.Contains(entries[0].Error, "Job/"+ns+"/migrate") {
		t.Fatalf("history = %+v, want one failed entry naming the hook", entries)
	}
	if entries[0].Counts.Created != 0 {
		t.Errorf("history counts %s, want nothing created", entries[0].Counts)
	}
}

func TestCompat_ArgoWavesHooksAndSyncOptions(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	argoWaves := corpus(t, "argo-waves", ".")["./app.yaml"]
	dir := writeTree(t, ns, map[string]string{"app.yaml": argoWaves})
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	if r := converge(t, "sync", dir, "--app", "waves", "-n", ns); r.code != 0 {
		t.Fatalf("sync exited %d:\n%s", r.code, r.output())
	}
	// Wave -1's Job completed before wave 1 was applied.
	job := get(t, "batch/v1", "Job", ns, "seed")
	if job == nil {
		t.Fatal("the wave -1 Job is missing")
	}
	var jobCreated, cmApplied time.Time
	for _, e := range convergeRequests(t, audit) {
		if e.ObjectRef == nil || e.ObjectRef.Namespace != ns || e.DryRun() || !e.Write() {
			continue
		}
		switch e.ObjectRef.Resource + "/" + e.ObjectRef.Name {
		case "jobs/seed":
			jobCreated = e.Received
		case "configmaps/after-seed":
			cmApplied = e.Received
		}
	}
	if jobCreated.IsZero() || cmApplied.IsZero() {
		t.Fatalf("writes not found in the audit log (job %v, configmap %v)", jobCreated, cmApplied)
	}
	if gap := cmApplied.Sub(jobCreated); gap < 900*time.Millisecond {
		t.Errorf("wave 1 was applied %s after wave -1's Job was created: it did not wait for the Job to complete", gap)
	}
	// The PostSync hook with generateName ran once and stays (its policy
	// deletes it only on failure).
	jobs := &unstructured.UnstructuredList{}
	jobs.SetAPIVersion("batch/v1")
	jobs.SetKind("JobList")
	if err := cluster.Client.List(context.Background(), jobs, client.InNamespace(ns), client.MatchingLabels{engine.LabelHook: "waves"}); err != nil {
		t.Fatal(err)
	}
	if len(jobs.Items) != 1 || !strings.HasPrefix(jobs.Items[0].GetName(), "smoke-") {
		t.Fatalf("PostSync hook Jobs: %d, want one named smoke-*", len(jobs.Items))
	}
	if r := converge(t, "diff", dir, "--app", "waves", "-n", ns); r.code != 0 {
		t.Errorf("diff exited %d: hooks must not count as differences\n%s", r.code, r.output())
	}

	// Prune=false keeps an object that leaves the source.
	writeFile(t, filepath.Join(dir, "app.yaml"), strings.Split(argoWaves, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept")[0])
	if r := converge(t, "sync", dir, "--app", "waves", "-n", ns, "--prune"); r.code != 0 {
		t.Fatalf("sync exited %d:\n%s", r.code, r.output())
	}
	if get(t, "v1", "ConfigMap", ns, "kept") == nil {
		t.Error("the ConfigMap annotated Prune=false was pruned")
	}
}

func TestCompat_UnrenderableInputsFailBuildAndDiffNamingTheCause(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	for _, c := range []struct{ dir, cause string }{
		{"missing-dependency", `dependency "redis"`},
		{"cue-only", "2 CUE file(s)"},
	} {
		dir := filepath.Join("compat", c.dir)
		if r := convergeOffline(t, "build", dir); r.code != 2 || !strings.Contains(r.stderr, c.cause) {
			t.Errorf("build %s: exit %d, want 2 naming %q:\n%s", c.dir, r.code, c.cause, r.stderr)
		}
		if r := converge(t, "diff", dir, "--app", c.dir, "-n", ns); r.code != 2 || !strings.Contains(r.stderr, c.cause) {
			t.Errorf("diff %s: exit %d, want 2 naming %q:\n%s", c.dir, r.code, c.cause, r.stderr)
		}
	}
	// An empty directory is an error too, for build and diff alike.
	empty := t.TempDir()
	writeFile(t, filepath.Join(empty, "README.md"), "# nothing here\n")
	if r := convergeOffline(t, "build", empty); r.code != 2 || !strings.Contains(r.stderr, "renders no objects") {
		t.Errorf("build of an empty directory: exit %d:\n%s", r.code, r.stderr)
	}
	if r := converge(t, "diff", empty, "--app", "empty", "-n", ns); r.code != 2 || !strings.Contains(r.stderr, "--allow-empty") {
		t.Errorf("diff of an empty directory: exit %d:\n%s", r.code, r.stderr)
	}
	if r := converge(t, "diff", empty, "--app", "empty", "-n", ns, "--allow-empty"); r.code != 0 {
		t.Errorf("diff --allow-empty of an empty directory with nothing owned: exit %d:\n%s", r.code, r.stderr)
	}
}

func TestCompat_JsonnetAndFileDependenciesSyncUnderTheAgentAndWaitStopsOnRenderErrors(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	files := corpus(t, "jsonnet-app", "apps/guestbook")
	for k, v := range corpus(t, "umbrella", "charts/umbrella") {
		files[k] = v
	}
	for k, v := range corpus(t, "missing-dependency", "charts/storefront") {
		files[k] = v
	}
	repo, rev := a.repoWith(t, ns+"-corpus", files, "corpus")
	mk := func(name, path string, src func(*v1alpha1.ApplicationSource)) {
		app := &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ApplicationSpec{
				Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: path},
				SyncPolicy: automated(true, true),
			},
		}
		if src != nil {
			src(&app.Spec.Source)
		}
		a.create(t, app)
	}
	mk("guestbook", "apps/guestbook", func(s *v1alpha1.ApplicationSource) {
		s.Jsonnet = &v1alpha1.JsonnetSource{ExtVars: map[string]string{"environment": "prod"}, TLAs: map[string]string{"tier": "web"}}
	})
	mk("umbrella", "charts/umbrella", nil)
	start := time.Now()
	mk("storefront", "charts/storefront", nil)

	// converge wait ends on the render error at once, with the reason.
	r := converge(t, "wait", "storefront", "-n", ns, "--timeout", "60s")
	if r.code != 2 || !strings.Contains(r.stderr, `dependency "redis"`) {
		t.Errorf("wait on an app that cannot render: exit %d, want 2 naming the dependency:\n%s", r.code, r.stderr)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("wait took %s to report a render error", took)
	}
	app := a.waitApp(t, ns, "storefront", 10*time.Second, "RenderFailed", func(app *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		return ready != nil && ready.Reason == v1alpha1.ReasonRenderFailed
	})
	if strings.Contains(app.Status.LastError, "--allow-empty") {
		t.Errorf("the agent's error names a CLI flag: %s", app.Status.LastError)
	}

	for _, name := range []string{"guestbook", "umbrella"} {
		a.waitApp(t, ns, name, 60*time.Second, name+" synced and healthy", func(app *v1alpha1.Application) bool {
			return synced(rev)(app) && app.Status.Health.Status == v1alpha1.HealthHealthy
		})
	}
	cm := get(t, "v1", "ConfigMap", ns, "guestbook-settings")
	if cm == nil || cm.Object["data"].(map[string]any)["environment"] != "prod" {
		t.Errorf("the Jsonnet ConfigMap = %v, want environment prod from the ext var", cm)
	}
	if get(t, "apps/v1", "Deployment", ns, "guestbook-web") == nil {
		t.Error("the Jsonnet Deployment (named by the TLA) is missing")
	}
	if cm := get(t, "v1", "ConfigMap", ns, "umbrella-platform"); cm == nil || cm.Object["data"].(map[string]any)["team"] != "payments" {
		t.Errorf("the aliased file:// dependency's ConfigMap = %v", cm)
	}
	if get(t, "apps/v1", "Deployment", ns, "umbrella-shop") == nil {
		t.Error("the file:// dependency's Deployment is missing")
	}
}

func deleteNamespace(t *testing.T, name string) {
	t.Cleanup(func() {
		ns := &unstructured.Unstructured{}
		ns.SetAPIVersion("v1")
		ns.SetKind("Namespace")
		ns.SetName(name)
		_ = cluster.Client.Delete(context.Background(), ns)
	})
}

const presyncInNamespace = `apiVersion: batch/v1
kind: Job
metadata:
  name: prepare
  annotations:
    argocd.argoproj.io/hook: PreSync
    argocd.argoproj.io/hook-delete-policy: HookSucceeded
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: prepare, image: registry.example/prepare:1}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
`

func TestCompat_CreateNamespaceOwnsOnlyWhatItCreates(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	fresh := ns + "-new"
	deleteNamespace(t, fresh)
	dir := writeTree(t, ns, map[string]string{"app.yaml": presyncInNamespace})

	// Without --create-namespace the missing namespace is named.
	if r := converge(t, "sync", dir, "--app", "web", "-n", fresh); r.code != 2 || !strings.Contains(r.stderr, fresh) {
		t.Errorf("sync into a missing namespace: exit %d, want 2 naming it:\n%s", r.code, r.output())
	}
	// With it, the namespace is made first (the PreSync hook runs in it)
	// and owned.
	if r := converge(t, "sync", dir, "--app", "web", "-n", fresh, "--create-namespace"); r.code != 0 {
		t.Fatalf("sync --create-namespace exited %d:\n%s", r.code, r.output())
	}
	got := get(t, "v1", "Namespace", "", fresh)
	if got == nil || got.GetLabels()[engine.LabelApp] != "web" {
		t.Fatalf("namespace %s = %v, want it created and owned by web", fresh, got)
	}
	if get(t, "v1", "ConfigMap", fresh, "settings") == nil {
		t.Error("the ConfigMap was not created in the new namespace")
	}
	if h := history(t, fresh, "web").Entries; len(h) != 1 || len(h[0].Hooks) != 1 || h[0].Hooks[0].Status != engine.HookSucceeded {
		t.Errorf("history = %+v, want one sync with its PreSync hook succeeded", h)
	}
	if r := converge(t, "diff", dir, "--app", "web", "-n", fresh, "--create-namespace"); r.code != 0 {
		t.Errorf("diff after the sync exited %d:\n%s", r.code, r.output())
	}

	// An existing namespace is never taken over.
	if r := converge(t, "sync", dir, "--app", "other", "-n", ns, "--create-namespace"); r.code != 0 {
		t.Fatalf("sync into an existing namespace exited %d:\n%s", r.code, r.output())
	}
	if got := get(t, "v1", "Namespace", "", ns); got.GetLabels()[engine.LabelApp] != "" || got.GetAnnotations()[engine.AnnotationOwner] != "" {
		t.Errorf("the existing namespace %s was taken over: labels %v", ns, got.GetLabels())
	}
}

func TestCompat_AgentCreatesTheDestinationNamespaceWithItsMetadata(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	dest := ns + "-dest"
	deleteNamespace(t, dest)
	repo, rev := a.repoWith(t, ns+"-createns", map[string]string{"deploy/app.yaml": presyncInNamespace}, "app")
	policy := automated(true, true)
	policy.CreateNamespace = true
	policy.NamespaceMetadata = &v1alpha1.NamespaceMetadata{Labels: map[string]string{"team": "payments"}, Annotations: map[string]string{"owner": "payments@example.com"}}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:      v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
			Destination: v1alpha1.ApplicationDestination{Namespace: dest},
			SyncPolicy:  policy,
		},
	}
	a.create(t, app)
	a.waitApp(t, ns, "web", 60*time.Second, "synced", synced(rev))
	got := get(t, "v1", "Namespace", "", dest)
	if got == nil || got.GetLabels()["team"] != "payments" || got.GetAnnotations()["owner"] != "payments@example.com" {
		t.Fatalf("namespace %s = %v, want it with the app's namespace metadata", dest, got)
	}
	if get(t, "v1", "ConfigMap", dest, "settings") == nil {
		t.Error("the ConfigMap was not created in the destination namespace")
	}
}

func TestCompat_ChartsSeeTheTargetClustersVersionAndAPIs(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	dir := writeTree(t, ns, map[string]string{
		"Chart.yaml": "apiVersion: v2\nname: caps\nversion: 0.1.0\n",
		"templates/cm.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: caps
data:
  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
  convergeAPI: {{ .Capabilities.APIVersions.Has "converge.dev/v1alpha1/Application" | quote }}
`,
	})
	if r := converge(t, "sync", dir, "--app", "caps", "-n", ns); r.code != 0 {
		t.Fatalf("sync exited %d:\n%s", r.code, r.output())
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dc.ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	v := info.GitVersion
	cm := get(t, "v1", "ConfigMap", ns, "caps")
	data := cm.Object["data"].(map[string]any)
	if data["kubeVersion"] != v || data["convergeAPI"] != "true" {
		t.Errorf("the chart saw %v; want kubeVersion %s and converge's API served", data, v)
	}
	// build, with no cluster, sees Helm's defaults unless told.
	r := convergeOffline(t, "build", dir, "--kube-version", "v1.30.0", "--api-versions", "converge.dev/v1alpha1/Application")
	if r.code != 0 || !strings.Contains(r.stdout, `kubeVersion: v1.30.0`) || !strings.Contains(r.stdout, `convergeAPI: "true"`) {
		t.Errorf("build with --kube-version and --api-versions: exit %d:\n%s", r.code, r.output())
	}
}

// Deleting an app runs its PreDelete hooks before anything is deleted
// (a failed one holds the deletion), deletes the hook objects its syncs
// left, and prunes.
func TestCompat_DeleteHooksRunWhenTheAppIsDeleted(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	job := func(name, hook, extra string) string {
		return `apiVersion: batch/v1
kind: Job
metadata:
  name: ` + name + `
  annotations:
    argocd.argoproj.io/hook: ` + hook + `
spec:
  backoffLimit: 0
` + extra + `  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: registry.example/tool:1}
`
	}
	failing := "  activeDeadlineSeconds: 1\n"
	repo, rev := a.repoWith(t, ns+"-delhooks", map[string]string{
		"good/app.yaml": fmt.Sprintf(agentCM, "good") + "---\n" + job("smoke", "PostSync", "") + "---\n" + job("drain", "PreDelete", ""),
		"bad/app.yaml":  fmt.Sprintf(agentCM, "bad") + "---\n" + strings.Replace(job("drain", "PreDelete", failing), "restartPolicy: Never", "restartPolicy: Never\n      nodeSelector: {converge.dev/no-such-node: \"true\"}", 1),
	}, "apps")
	mk := func(name, path, destNS string) *v1alpha1.Application {
		app := &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ApplicationSpec{
				Source:      v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: path},
				Destination: v1alpha1.ApplicationDestination{Namespace: destNS},
				SyncPolicy:  automated(true, true),
			},
		}
		if err := a.client.Create(context.Background(), app); err != nil {
			t.Fatal(err)
		}
		a.waitApp(t, ns, name, 60*time.Second, name+" synced", synced(rev))
		return app
	}
	other := kubetest.Namespace(t, cluster.Client)
	good := mk("good", "good", ns)
	if get(t, "batch/v1", "Job", ns, "smoke") == nil {
		t.Fatal("the PostSync hook did not run")
	}
	if err := a.client.Delete(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 60*time.Second, "the app gone", func(ctx context.Context) (bool, error) {
		err := a.client.Get(ctx, client.ObjectKeyFromObject(good), &v1alpha1.Application{})
		return apierrors.IsNotFound(err), err
	})
	ran := false
	var events corev1.EventList
	if err := cluster.Client.List(context.Background(), &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		if e.InvolvedObject.Name == "good" && strings.Contains(e.Message, "PreDelete Job/"+ns+"/drain: Succeeded") {
			ran = true
		}
	}
	if !ran {
		var all []string
		for _, e := range events.Items {
			if e.InvolvedObject.Name == "good" {
				all = append(all, e.Reason+": "+e.Message)
			}
		}
		t.Errorf("no event says the PreDelete hook succeeded; the app's events:\n%s", strings.Join(all, "\n"))
	}
	if get(t, "batch/v1", "Job", ns, "drain") == nil {
		t.Log("the PreDelete hook's Job is gone already")
	}
	if get(t, "batch/v1", "Job", ns, "smoke") != nil {
		t.Error("the PostSync hook's Job was left behind")
	}
	if get(t, "v1", "ConfigMap", ns, "settings") != nil {
		t.Error("the app's ConfigMap was not pruned")
	}

	bad := mk("bad", "bad", other)
	if err := a.client.Delete(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var app v1alpha1.Application
		if a.client.Get(context.Background(), client.ObjectKeyFromObject(bad), &app) == nil {
			app.Finalizers = nil
			_ = a.client.Update(context.Background(), &app)
		}
	})
	kubetest.Eventually(t, 30*time.Second, "the failed PreDelete hook reported", func(ctx context.Context) (bool, error) {
		var events corev1.EventList
		if err := cluster.Client.List(ctx, &events, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Name == "bad" && strings.Contains(e.Message, "PreDelete hook Job/"+other+"/drain") && strings.Contains(e.Message, "not deleted") {
				return true, nil
			}
		}
		return false, fmt.Errorf("no event names the failed PreDelete hook")
	})
	if get(t, "v1", "ConfigMap", other, "settings") == nil {
		t.Error("the app's ConfigMap was deleted although its PreDelete hook failed")
	}
}

// Under the agent, a failed PreSync hook leaves the app HookFailed, naming
// the hook in status and history, with nothing else applied.
func TestCompat_AgentFailedPreSyncHookNamesTheHook(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, _ := a.repoWith(t, ns+"-presync", map[string]string{"deploy/app.yaml": failingPreSync}, "app with a failing migration")
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "mig", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
			SyncPolicy: automated(true, true),
		},
	}
	a.create(t, app)
	got := a.waitApp(t, ns, "mig", 60*time.Second, "HookFailed", func(app *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		return ready != nil && ready.Reason == v1alpha1.ReasonHookFailed
	})
	if !strings.Contains(got.Status.LastError, "PreSync hook Job/"+ns+"/migrate") {
		t.Errorf("lastError = %q, want it to name the hook", got.Status.LastError)
	}
	if get(t, "v1", "ConfigMap", ns, "settings") != nil {
		t.Error("the app's ConfigMap was applied although its PreSync hook failed")
	}
	h := history(t, ns, "mig").Entries
	if len(h) == 0 || h[0].Result != engine.ResultFailed || !strings.Contains(h[0].Error, "Job/"+ns+"/migrate") {
		t.Fatalf("history = %+v, want a failed entry naming the hook", h)
	}
	var failed bool
	for _, r := range h[0].Hooks {
		failed = failed || (r.Phase == engine.PhasePreSync && r.Status == engine.HookFailed)
	}
	if !failed {
		t.Errorf("history hooks = %+v, want the PreSync hook Failed", h[0].Hooks)
	}
}

// A Job (not a hook) that removes itself when finished is not drift: the
// agent does not run it again until it changes.
func TestCompat_SelfRemovingJobIsNotRecreated(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	jobYAML := func(image string) string {
		return "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\nspec:\n  ttlSecondsAfterFinished: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {name: c, image: " + image + "}\n"
	}
	repo, rev := a.repoWith(t, ns+"-ttl", map[string]string{"deploy/job.yaml": jobYAML("registry.example/once:1"), "deploy/cm.yaml": fmt.Sprintf(agentCM, "x")}, "a job")
	policy := automated(true, true)
	policy.Interval = &metav1.Duration{Duration: 2 * time.Second}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "ttl", Namespace: ns},
		Spec:       v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"}, SyncPolicy: policy},
	}
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	a.create(t, app)
	kubetest.Eventually(t, 60*time.Second, "the Job ran and removed itself", func(context.Context) (bool, error) {
		return get(t, "batch/v1", "Job", ns, "once") == nil && len(jobCreates(t, audit, ns)) >= 1, fmt.Errorf("Job creates: %d", len(jobCreates(t, audit, ns)))
	})
	a.waitApp(t, ns, "ttl", 30*time.Second, "synced and healthy with the Job gone", func(app *v1alpha1.Application) bool {
		return synced(rev)(app) && app.Status.Health.Status == v1alpha1.HealthHealthy
	})
	// Five intervals: not recreated.
	observe(t, 10*time.Second, "five intervals after the Job removed itself")
	if n := len(jobCreates(t, audit, ns)); n != 1 {
		t.Errorf("the Job was created %d times, want once", n)
	}
	// A change runs it again.
	if err := repo.Write(map[string]string{"deploy/job.yaml": jobYAML("registry.example/once:2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "a new job"); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 30*time.Second, "the changed Job ran", func(context.Context) (bool, error) {
		return len(jobCreates(t, audit, ns)) == 2, fmt.Errorf("Job creates: %d", len(jobCreates(t, audit, ns)))
	})
}

// jobCreates are the writes that created Job "once" in ns (server-side
// apply patches that made it, not dry-runs).
func jobCreates(t *testing.T, audit *kubetest.AuditLog, ns string) []kubetest.AuditEvent {
	t.Helper()
	events, err := audit.Since(func(e kubetest.AuditEvent) bool {
		return e.ObjectRef != nil && e.ObjectRef.Resource == "jobs" && e.ObjectRef.Namespace == ns && e.ObjectRef.Name == "once" &&
			e.Write() && !e.DryRun() && e.Verb != "delete" && e.ResponseStatus != nil && e.ResponseStatus.Code == 201
	})
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// Deleting an Application keeps what Argo CD's Delete=false (and
// converge.dev/delete: "false") mark to outlive it, and deletes the rest;
// in a sync, Delete=false alone does not stop a prune.
func TestCompat_DeleteFalseObjectsOutliveTheirApp(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	cm := func(name, ann string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  annotations: {%s}\ndata: {k: v}\n", name, ann)
	}
	files := map[string]string{
		"deploy/data.yaml":   cm("data", `argocd.argoproj.io/sync-options: "Delete=false"`),
		"deploy/ours.yaml":   cm("ours", `converge.dev/delete: "false"`),
		"deploy/plain.yaml":  cm("plain", ""),
		"deploy/pruned.yaml": cm("pruned", `argocd.argoproj.io/sync-options: "Delete=false"`),
	}
	repo, rev := a.repoWith(t, ns+"-keep", files, "four")
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "keeper", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"}, SyncPolicy: automated(true, true)}}
	a.create(t, app)
	a.waitApp(t, ns, "keeper", 60*time.Second, "synced", synced(rev))

	// Removed from Git: Delete=false is about the app's deletion only.
	if err := repo.Remove("deploy/pruned.yaml"); err != nil {
		t.Fatal(err)
	}
	rev, err := repo.Commit("main", "three")
	if err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "keeper", 60*time.Second, "synced without pruned.yaml", synced(rev))
	if get(t, "v1", "ConfigMap", ns, "pruned") != nil {
		t.Error("a ConfigMap marked Delete=false only was not pruned when it left Git")
	}

	if err := a.client.Delete(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 60*time.Second, "the app gone", func(ctx context.Context) (bool, error) {
		err := a.client.Get(ctx, client.ObjectKeyFromObject(app), &v1alpha1.Application{})
		return apierrors.IsNotFound(err), err
	})
	for name, want := range map[string]bool{"data": true, "ours": true, "plain": false} {
		if got := get(t, "v1", "ConfigMap", ns, name) != nil; got != want {
			t.Errorf("after the app's deletion, ConfigMap %s exists: %v, want %v", name, got, want)
		}
	}
	// The deletion record says what was kept and why.
	r := converge(t, "history", "keeper", "-n", ns, "-o", "json")
	if !strings.Contains(r.stdout, `"type": "deletion"`) || !strings.Contains(r.stdout, "data (argocd.argoproj.io/sync-options: Delete=false)") || !strings.Contains(r.stdout, `ours (converge.dev/delete: \"false\")`) {
		t.Errorf("the history does not say why data and ours were kept:\n%s", r.output())
	}
}

// Flux's postBuild: variables from a ConfigMap, a Secret and the spec
// fill ${var} references, read as the app's account; a changed ConfigMap
// syncs as a new revision; the Secret's value is in the object but never
// in the Application's status or history.
func TestCompat_PostBuildSubstitutesFromConfigMapsSecretsAndTheSpec(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	repo, _ := a.repoWith(t, ns+"-subst", map[string]string{
		"deploy/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings-${cluster_name}\ndata:\n  region: ${region}\n  token: ${api_token}\n  tier: ${tier:=bronze}\n",
	}, "vars")
	for _, obj := range []client.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cluster-vars", Namespace: ns}, Data: map[string]string{"cluster_name": "prod", "region": "eu-west"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cluster-secrets", Namespace: ns}, StringData: map[string]string{"api_token": "s3cr3t-subst-4242"}},
	} {
		if err := a.client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "subst", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy", PostBuild: &v1alpha1.PostBuild{
				Substitute:     map[string]string{"region": "eu-central"},
				SubstituteFrom: []v1alpha1.SubstituteReference{{Kind: "ConfigMap", Name: "cluster-vars"}, {Kind: "Secret", Name: "cluster-secrets"}},
				Strict:         true,
			}},
			SyncPolicy: automated(true, true),
		}}
	a.create(t, app)
	a.waitApp(t, ns, "subst", 60*time.Second, "synced", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && strings.Contains(app.Status.Sync.Revision, "+vars:")
	})
	cm := get(t, "v1", "ConfigMap", ns, "settings-prod")
	if cm == nil {
		t.Fatal("settings-prod was not applied")
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	if data["region"] != "eu-central" || data["token"] != "s3cr3t-subst-4242" || data["tier"] != "bronze" {
		t.Errorf("data = %v: want the spec's region over the ConfigMap's, the Secret's token, the default tier", data)
	}

	// A changed ConfigMap is a new revision: the object follows.
	var vars corev1.ConfigMap
	if err := a.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cluster-vars"}, &vars); err != nil {
		t.Fatal(err)
	}
	vars.Data["cluster_name"] = "prod-2"
	if err := a.client.Update(ctx, &vars); err != nil {
		t.Fatal(err)
	}
	// The agent notices at its next look; a sync request makes it now.
	if r := converge(t, "sync", "subst", "-n", ns, "--wait"); r.code != 0 {
		t.Fatalf("sync: exit %d\n%s", r.code, r.output())
	}
	if get(t, "v1", "ConfigMap", ns, "settings-prod-2") == nil {
		t.Error("the renamed ConfigMap was not applied after the variable changed")
	}
	if get(t, "v1", "ConfigMap", ns, "settings-prod") != nil {
		t.Error("the ConfigMap of the old name was not pruned")
	}
	var got v1alpha1.Application
	if err := a.client.Get(ctx, client.ObjectKeyFromObject(app), &got); err != nil {
		t.Fatal(err)
	}
	status, _ := json.Marshal(got.Status)
	hist := converge(t, "history", "subst", "-n", ns, "-o", "json")
	if strings.Contains(string(status), "s3cr3t-subst-4242") || strings.Contains(hist.stdout, "s3cr3t-subst-4242") {
		t.Error("the Secret's variable leaked into the status or the history")
	}
}

// An HPA-managed replicas under ignoreDifferences: scaling is no
// difference (diff exits 0), two minutes of scaling make the agent write
// nothing (audit log), and a sync for another change leaves the scaled
// replicas as they are.
func TestCompat_IgnoreDifferencesLeavesScaledReplicasAlone(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	deploy := func(team string) string {
		return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {team: %s}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: registry.example/web:1}]
`, team)
	}
	repo, rev := a.repoWith(t, ns+"-hpa", map[string]string{"deploy/web.yaml": deploy("a")}, "web")
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:            v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
			SyncPolicy:        automated(true, true),
			IgnoreDifferences: []v1alpha1.ResourceIgnoreDifferences{{Group: "apps", Kind: "Deployment", JSONPointers: []string{"/spec/replicas"}}},
		}}
	a.create(t, app)
	a.waitApp(t, ns, "web", 60*time.Second, "synced", synced(rev))

	// The "HPA" scales through the scale subresource.
	var d appsv1.Deployment
	d.Namespace, d.Name = ns, "web"
	scale := &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: 5}}
	if err := cluster.Client.SubResource("scale").Update(ctx, &d, client.WithSubResourceBody(scale), client.FieldOwner("horizontal-pod-autoscaler")); err != nil {
		t.Fatal(err)
	}
	replicas := func() int32 {
		if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &d); err != nil {
			t.Fatal(err)
		}
		return *d.Spec.Replicas
	}
	if r := converge(t, "diff", "web", "-n", ns); r.code != 0 {
		t.Errorf("diff after scaling: exit %d, want 0 (replicas ignored)\n%s", r.code, r.output())
	}
	// Two minutes of an HPA at work: each scale is a drift event the agent
	// looks at, and none makes it write the Deployment (no self-heal, no
	// flapping), as the apiserver's audit log shows.
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int32{6, 4, 5} {
		var target appsv1.Deployment
		target.Namespace, target.Name = ns, "web"
		body := &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: n}}
		if err := cluster.Client.SubResource("scale").Update(ctx, &target, client.WithSubResourceBody(body), client.FieldOwner("horizontal-pod-autoscaler")); err != nil {
			t.Fatal(err)
		}
		observe(t, 40*time.Second, fmt.Sprintf("the agent after the HPA scaled web to %d", n))
	}
	writes, err := audit.Since(func(e kubetest.AuditEvent) bool {
		return e.Write() && e.ObjectRef != nil && e.ObjectRef.Namespace == ns && e.ObjectRef.Resource == "deployments" && strings.HasPrefix(e.UserAgent, "converge")
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range writes {
		t.Errorf("the agent wrote the scaled Deployment: %s %s", e.Verb, e.RequestURI)
	}
	if got := replicas(); got != 5 {
		t.Errorf("replicas %d after the HPA's last scale to 5", got)
	}
	if err := repo.Write(map[string]string{"deploy/web.yaml": deploy("b")}); err != nil {
		t.Fatal(err)
	}
	rev, err = repo.Commit("main", "team b")
	if err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "web", 60*time.Second, "synced the label change", synced(rev))
	if got := replicas(); got != 5 || d.Labels["team"] != "b" {
		t.Errorf("after a sync: replicas %d, team %q; want 5 (as scaled) and b", got, d.Labels["team"])
	}
}

// Argo CD's source.kustomize overrides, as migrate carries them over: the
// agent applies the root with the image, prefix, label and replicas the
// Application sets, and `converge diff` agrees (exit 0).
func TestCompat_KustomizeOverridesInTheApplication(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, _ := a.repoWith(t, ns+"-over", map[string]string{
		"app/kustomization.yaml": "resources: [deploy.yaml]\n",
		"app/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n" +
			"  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx:1.25}]\n",
	}, "app")
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "over", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "app", Kustomize: &v1alpha1.KustomizeOverrides{
				Images: []string{"nginx=registry.example.com/nginx:1.27"}, NamePrefix: "prod-", CommonLabels: map[string]string{"team": "a"},
				Replicas: []v1alpha1.KustomizeReplica{{Name: "web", Count: 2}},
			}},
			SyncPolicy: automated(true, true),
		}}
	a.create(t, app)
	a.waitApp(t, ns, "over", 60*time.Second, "synced", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced
	})
	d := get(t, "apps/v1", "Deployment", ns, "prod-web")
	if d == nil {
		t.Fatal("prod-web was not applied")
	}
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	replicas, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas")
	if image := containers[0].(map[string]any)["image"]; image != "registry.example.com/nginx:1.27" || replicas != 2 || d.GetLabels()["team"] != "a" {
		t.Errorf("prod-web: image %v, replicas %d, labels %v", image, replicas, d.GetLabels())
	}
	if r := converge(t, "diff", "over", "-n", ns); r.code != 0 {
		t.Errorf("diff after the sync: exit %d\n%s", r.code, r.output())
	}
}
