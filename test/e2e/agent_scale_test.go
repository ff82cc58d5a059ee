//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
)

func TestAgent_IntervalPicksUpCommitsWithoutWebhook(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	policy := automated(true, false)
	policy.Interval = &metav1.Duration{Duration: 2 * time.Second}
	repo, first := a.newApp(t, ns, "poll", policy)
	a.waitApp(t, ns, "poll", 30*time.Second, "synced", synced(first))
	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "polled")}); err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit("main", "second")
	if err != nil {
		t.Fatal(err)
	}
	a.waitApp(t, ns, "poll", 10*time.Second, "the new commit synced by polling", synced(second))
	if got := configMapMode(t, ns); got != "polled" {
		t.Errorf("mode = %q", got)
	}
}

func TestAgent_SuspendStopsSelfHealAndResumeRestoresIt(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	_, first := a.newApp(t, ns, "pause", automated(true, true))
	a.waitApp(t, ns, "pause", 30*time.Second, "synced", synced(first))

	if r := converge(t, "suspend", "pause", "-n", ns); r.code != 0 {
		t.Fatalf("suspend: %s", r.output())
	}
	a.waitApp(t, ns, "pause", 5*time.Second, "Suspended", func(app *v1alpha1.Application) bool {
		return hasReason(app, v1alpha1.ReasonSuspended)
	})
	editMode(t, ns, "edited-while-suspended")
	// The edit must survive while suspended: check it is still there after
	// the app had every chance to react.
	a.waitApp(t, ns, "pause", 5*time.Second, "still suspended", func(app *v1alpha1.Application) bool {
		return hasReason(app, v1alpha1.ReasonSuspended)
	})
	if got := configMapMode(t, ns); got != "edited-while-suspended" {
		t.Errorf("a suspended app reverted drift: mode = %q", got)
	}
	if r := converge(t, "resume", "pause", "-n", ns); r.code != 0 {
		t.Fatalf("resume: %s", r.output())
	}
	kubetest.Eventually(t, 5*time.Second, "drift reverted after resume", func(context.Context) (bool, error) {
		return configMapMode(t, ns) == "first", fmt.Errorf("mode %q", configMapMode(t, ns))
	})
}

func TestAgent_DeletingAnApplicationPrunesOrOrphans(t *testing.T) {
	a := startAgent(t)
	for _, cascade := range []bool{true, false} {
		t.Run(fmt.Sprintf("cascade=%v", cascade), func(t *testing.T) {
			ns := kubetest.Namespace(t, cluster.Client)
			_, first := a.newApp(t, ns, "gone", automated(true, true))
			a.waitApp(t, ns, "gone", 30*time.Second, "synced", synced(first))
			r := converge(t, "app", "delete", "gone", "-n", ns, fmt.Sprintf("--cascade=%v", cascade))
			if r.code != 0 {
				t.Fatalf("app delete: %s", r.output())
			}
			cm := get(t, "v1", "ConfigMap", ns, "settings")
			if cascade && cm != nil {
				t.Error("cascade delete left the ConfigMap")
			}
			if !cascade && cm == nil {
				t.Error("--cascade=false deleted the ConfigMap")
			}
		})
	}
}

func TestAgent_HundredAppsOnOneRepositoryShareFetchesAndIdleWithoutWrites(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	const n = 100
	const interval = 3 * time.Second
	repo, _ := a.manyApps(t, ns, n, interval, nil)

	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	// Events of the syncs above are written asynchronously; let them land
	// before the idle window opens.
	var seen int
	kubetest.Eventually(t, time.Minute, "events settled", func(ctx context.Context) (bool, error) {
		var list corev1.EventList
		if err := cluster.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		n := len(list.Items)
		settled := n == seen
		seen = n
		if !settled {
			time.Sleep(time.Second)
		}
		return settled, fmt.Errorf("%d events and counting", n)
	})
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	before := a.git.Fetches(repo.Name)
	// Observe three intervals of an unchanged repository.
	window := 3 * interval
	observe(t, window, "three intervals of an unchanged repository")
	requests := a.git.Fetches(repo.Name) - before
	// One ls-remote per interval (two smart-HTTP requests), shared by all
	// 100 apps; allow one extra interval for timing at the edges.
	if max := int64(2 * (window/interval + 1)); requests > max {
		t.Errorf("100 apps made %d upload-pack requests in %s; want at most %d (one ls-remote per interval)", requests, window, max)
	}
	var writes, dryRuns []string
	events, err := audit.Since(func(e kubetest.AuditEvent) bool {
		return e.UserAgent == "converge-agent" && e.ObjectRef != nil && e.ObjectRef.Namespace == ns
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		switch {
		case e.DryRun():
			dryRuns = append(dryRuns, e.Verb+" "+e.RequestURI)
		case e.Write():
			writes = append(writes, fmt.Sprintf("%s %s (%v)", e.Verb, e.RequestURI, e.ResponseStatus))
		}
	}
	if len(writes)+len(dryRuns) > 0 {
		t.Errorf("an unchanged repository cost %d writes and %d dry-runs, e.g. %v %v", len(writes), len(dryRuns), writes, first(dryRuns))
	}
	t.Logf("%s of idle: %d upload-pack requests, %d agent requests in the namespace, none a write", window, requests, len(events))
}

// A commit that changes 2 apps of 20 on one repository syncs those 2; the
// other 18 render what they rendered before and move to the commit by a
// status write each: no dry-run, no inventory, no history entry.
func TestAgent_ACommitCostsTheAppsItDoesNotChangeOneStatusWriteEach(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	const n = 20
	const interval = 2 * time.Second
	repo, _ := a.manyApps(t, ns, n, interval, nil)
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	agentWrites := func() ([]kubetest.AuditEvent, error) {
		return audit.Since(func(e kubetest.AuditEvent) bool {
			return e.UserAgent == "converge-agent" && e.ObjectRef != nil && e.ObjectRef.Namespace == ns && (e.Write() || e.DryRun())
		})
	}
	// After its first sync, each app plans once more from what it wrote;
	// then a whole interval passes without a write.
	kubetest.Eventually(t, time.Minute, "an interval without writes", func(ctx context.Context) (bool, error) {
		if err := audit.Mark(); err != nil {
			return false, err
		}
		observe(t, interval+time.Second, "one interval")
		w, err := agentWrites()
		return err == nil && len(w) == 0, fmt.Errorf("%d writes (%v)", len(w), err)
	})

	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{
		"apps/app-00/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-00\ndata:\n  i: changed\n",
		"apps/app-01/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-01\ndata:\n  i: changed\n",
		"README.md":           "not an app\n",
	}); err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit("main", "change two apps")
	if err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, time.Minute, "every app at the commit", func(ctx context.Context) (bool, error) {
		var list v1alpha1.ApplicationList
		if err := a.client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		done := 0
		for i := range list.Items {
			if synced(second)(&list.Items[i]) && list.Items[i].Status.Sync.Commit != nil && list.Items[i].Status.Sync.Commit.Subject == "change two apps" {
				done++
			}
		}
		return done == n, fmt.Errorf("%d of %d", done, n)
	})
	for _, i := range []int{0, 1} {
		if cm := get(t, "v1", "ConfigMap", ns, fmt.Sprintf("cm-%02d", i)); cm == nil || cm.Object["data"].(map[string]any)["i"] != "changed" {
			t.Errorf("cm-%02d not changed: %v", i, cm)
		}
	}
	// The changed apps' writes may trail their status by a moment.
	observe(t, interval, "writes after the status")
	events, err := agentWrites()
	if err != nil {
		t.Fatal(err)
	}
	statusWrites := map[string]int{}
	var others []string
	for _, e := range events {
		r := e.ObjectRef
		switch {
		case r.Resource == "applications" && r.Subresource == "status" && !e.DryRun():
			statusWrites[r.Name]++
		case strings.Contains(r.Name, "app-00") || strings.Contains(r.Name, "app-01") || r.Name == "cm-00" || r.Name == "cm-01" || r.Resource == "events":
			// The changed apps' sync.
		default:
			others = append(others, e.Verb+" "+e.RequestURI)
		}
	}
	if len(others) > 0 {
		t.Errorf("the 18 unchanged apps cost more than their status: %d requests, e.g. %v", len(others), first(others))
	}
	for i := 2; i < n; i++ {
		if name := fmt.Sprintf("app-%02d", i); statusWrites[name] != 1 {
			t.Errorf("%s: %d status writes, want 1", name, statusWrites[name])
		}
	}
	// Their history has the first sync only; the changed apps' has both.
	for i, want := range map[int]int{0: 2, 1: 2, 2: 1, 19: 1} {
		var entries []map[string]any
		r := converge(t, "history", fmt.Sprintf("app-%02d", i), "-n", ns, "-o", "json")
		if r.code != 0 {
			t.Fatalf("history: %s", r.output())
		}
		if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
			t.Fatalf("history -o json: %v\n%s", err, r.stdout)
		}
		if len(entries) != want {
			t.Errorf("app-%02d: %d history entries, want %d", i, len(entries), want)
		}
	}
}

func first(s []string) []string {
	if len(s) > 3 {
		return s[:3]
	}
	return s
}

func hasReason(app *v1alpha1.Application, reason string) bool {
	for _, c := range app.Status.Conditions {
		if c.Type == v1alpha1.ConditionReady && c.Reason == reason {
			return true
		}
	}
	return false
}

func editMode(t *testing.T, ns, mode string) {
	t.Helper()
	cm := get(t, "v1", "ConfigMap", ns, "settings")
	if cm == nil {
		t.Fatal("ConfigMap settings missing")
	}
	if err := unstructuredSet(cm.Object, mode, "data", "mode"); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Client.Update(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
}

func unstructuredSet(obj map[string]any, value string, fields ...string) error {
	cur := obj
	for _, f := range fields[:len(fields)-1] {
		next, ok := cur[f].(map[string]any)
		if !ok {
			return fmt.Errorf("no field %s", f)
		}
		cur = next
	}
	cur[fields[len(fields)-1]] = value
	return nil
}

// manyApps creates a repository of n directories of one ConfigMap each and
// an Application (labelled labels, automated, interval) per directory,
// waits until all are synced, and deletes them when the test ends.
// edit, if set, changes each Application before it is created.
func (a *agentEnv) manyApps(t *testing.T, ns string, n int, interval time.Duration, labels map[string]string, edit ...func(*v1alpha1.Application)) (*gitserver.Repo, string) {
	t.Helper()
	repo, err := a.git.NewRepo(ns + "-mono")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("apps/app-%02d/cm.yaml", i)] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%02d\ndata:\n  i: \"%d\"\n", i, i)
	}
	if err := repo.Write(files); err != nil {
		t.Fatal(err)
	}
	rev, err := repo.Commit("main", "a hundred apps")
	if err != nil {
		t.Fatal(err)
	}
	// Leave no backlog for later tests: delete the apps and wait until the
	// agent has let them go.
	t.Cleanup(func() {
		ctx := context.Background()
		_ = a.client.DeleteAllOf(ctx, &v1alpha1.Application{}, client.InNamespace(ns))
		_ = kubetest.WaitFor(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
			var list v1alpha1.ApplicationList
			err := a.client.List(ctx, &list, client.InNamespace(ns))
			return err == nil && len(list.Items) == 0, err
		})
	})
	for i := range n {
		app := &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%02d", i), Namespace: ns, Labels: labels},
			Spec: v1alpha1.ApplicationSpec{
				Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: fmt.Sprintf("apps/app-%02d", i)},
				SyncPolicy: v1alpha1.SyncPolicy{
					Automated: &v1alpha1.AutomatedSync{Prune: true, SelfHeal: true},
					Interval:  &metav1.Duration{Duration: interval},
				},
			},
		}
		for _, e := range edit {
			e(app)
		}
		if err := a.client.Create(context.Background(), app); err != nil {
			t.Fatal(err)
		}
	}
	kubetest.Eventually(t, 2*time.Minute, fmt.Sprintf("%d apps synced", n), func(ctx context.Context) (bool, error) {
		var list v1alpha1.ApplicationList
		if err := a.client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		done := 0
		for i := range list.Items {
			if synced(rev)(&list.Items[i]) {
				done++
			}
		}
		return done == n, fmt.Errorf("%d of %d synced", done, n)
	})
	return repo, rev
}
