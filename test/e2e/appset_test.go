//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// templateSpec is spec as an ApplicationSet template's (placeholders
// allowed anywhere).
func templateSpec(t *testing.T, spec v1alpha1.ApplicationSpec) runtime.RawExtension {
	t.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return runtime.RawExtension{Raw: raw}
}

func setCondition(set *v1alpha1.ApplicationSet, typ string) *metav1.Condition {
	return apimeta.FindStatusCondition(set.Status.Conditions, typ)
}

func (a *agentEnv) waitSet(t *testing.T, ns, name string, timeout time.Duration, what string, ok func(*v1alpha1.ApplicationSet) bool) *v1alpha1.ApplicationSet {
	t.Helper()
	set := &v1alpha1.ApplicationSet{}
	kubetest.Eventually(t, timeout, what, func(ctx context.Context) (bool, error) {
		if err := a.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, set); err != nil {
			return false, err
		}
		if !ok(set) {
			return false, fmt.Errorf("status %+v", set.Status)
		}
		return true, nil
	})
	return set
}

// setApps lists the Applications of set name in ns that are not being
// deleted.
func (a *agentEnv) setApps(t *testing.T, ns, name string) []v1alpha1.Application {
	t.Helper()
	var list v1alpha1.ApplicationList
	if err := a.client.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelApplicationSet: name}); err != nil {
		t.Fatal(err)
	}
	var out []v1alpha1.Application
	for _, app := range list.Items {
		if app.DeletionTimestamp.IsZero() {
			out = append(out, app)
		}
	}
	return out
}

func TestAppSet_GitDirectoriesMakeOneAppEachRemoveOneAndNeverEmptyAll(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	files := map[string]string{"README.md": "fleet\n"}
	for i := range 50 {
		files[fmt.Sprintf("apps/app-%02d/cm.yaml", i)] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings-%02d\ndata:\n  mode: enabled\n", i)
	}
	repo, _ := a.repoWith(t, ns+"-fleet", files, "50 apps")
	t.Logf("%s start", time.Now().Format(time.StampMilli))
	set := &v1alpha1.ApplicationSet{ObjectMeta: metav1.ObjectMeta{Name: "fleet", Namespace: ns},
		Spec: v1alpha1.ApplicationSetSpec{
			Generators: []v1alpha1.Generator{{Git: &v1alpha1.GitGenerator{RepoURL: a.git.URL(repo.Name),
				Directories: []v1alpha1.GitPathPattern{{Path: "apps/*"}}}}},
			Template: v1alpha1.ApplicationTemplate{
				Metadata: v1alpha1.ApplicationTemplateMeta{Name: "{{path.basename}}", Labels: map[string]string{"dir": "{{path[1]}}"}},
				Spec: templateSpec(t, v1alpha1.ApplicationSpec{
					Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "{{path}}"},
					SyncPolicy: automated(true, true),
				}),
			},
			// Pushes reach it by webhook; no polling in this test.
			Interval: &metav1.Duration{Duration: time.Hour},
		}}
	if err := a.client.Create(ctx, set); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.client.Delete(context.Background(), set) })
	a.waitSet(t, ns, "fleet", 60*time.Second, "50 Applications generated", func(s *v1alpha1.ApplicationSet) bool {
		c := setCondition(s, v1alpha1.ConditionReady)
		return s.Status.ApplicationCount == 50 && c != nil && c.Reason == v1alpha1.ReasonGenerated
	})
	kubetest.Eventually(t, 180*time.Second, "50 ConfigMaps applied", func(ctx context.Context) (bool, error) {
		var cms corev1.ConfigMapList
		if err := cluster.Client.List(ctx, &cms, client.InNamespace(ns), client.HasLabels{"converge.dev/app"}); err != nil {
			return false, err
		}
		n := 0
		for _, cm := range cms.Items {
			if strings.HasPrefix(cm.Name, "settings-") {
				n++
			}
		}
		return n == 50, fmt.Errorf("%d of 50", n)
	})
	t.Logf("%s 50 apps synced", time.Now().Format(time.StampMilli))
	if got := len(a.setApps(t, ns, "fleet")); got != 50 {
		t.Fatalf("%d Applications, want 50", got)
	}

	// One directory goes: its Application goes, and prunes its ConfigMap.
	if err := repo.Write(map[string]string{"apps/app-07/cm.yaml": ""}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "drop app-07"); err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	kubetest.Eventually(t, 60*time.Second, "app-07 deleted and its ConfigMap pruned", func(ctx context.Context) (bool, error) {
		err := a.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "app-07"}, &v1alpha1.Application{})
		if client.IgnoreNotFound(err) != nil || err == nil {
			return false, err
		}
		err = cluster.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "settings-07"}, &corev1.ConfigMap{})
		return client.IgnoreNotFound(err) == nil && err != nil, nil
	})
	t.Logf("%s app-07 gone", time.Now().Format(time.StampMilli))
	if got := len(a.setApps(t, ns, "fleet")); got != 49 {
		t.Fatalf("%d Applications after removing one directory, want 49", got)
	}

	// The path is emptied: nothing is deleted, and the set says why.
	empty := map[string]string{}
	for name := range files {
		if name != "README.md" {
			empty[name] = ""
		}
	}
	if err := repo.Write(empty); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "empty apps/"); err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	s := a.waitSet(t, ns, "fleet", 60*time.Second, "the empty-generator guard", func(s *v1alpha1.ApplicationSet) bool {
		c := setCondition(s, v1alpha1.ConditionReady)
		return c != nil && c.Reason == v1alpha1.ReasonEmptyGenerator
	})
	if msg := setCondition(s, v1alpha1.ConditionReady).Message; !strings.Contains(msg, "the 49 it owns are kept") {
		t.Errorf("guard message: %q", msg)
	}
	if got := len(a.setApps(t, ns, "fleet")); got != 49 {
		t.Fatalf("%d Applications after the path was emptied, want 49 kept", got)
	}
}

func TestAppSet_ProgressiveRolloutHoldsProdUntilStagingIsHealthy(t *testing.T) {
	b := startClusterB(t)
	a := startAgent(t)
	ctx := context.Background()
	ns := kubetest.Namespace(t, cluster.Client)
	kubeconfigA, _ := kubetest.LocalKubeconfig()
	suffix := rand.String(6)
	// Two Clusters (both B, in separate namespaces): staging and prod.
	for _, env := range []string{"staging", "prod"} {
		name := "e2e-" + env + "-" + suffix
		if r := convergeOffline(t, "cluster", "add", name, "--kubeconfig", b.kubeconfig, "--management-kubeconfig", kubeconfigA, "--label", "env="+env, "--label", "rollout="+suffix); r.code != 0 {
			t.Fatalf("cluster add: %s", r.output())
		}
		t.Cleanup(func() {
			_ = a.client.Delete(context.Background(), &v1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name}})
		})
	}
	repo, first := a.repoWith(t, ns+"-rollout", map[string]string{"deploy/db.yaml": dbDeployment(false)}, "db, not schedulable")
	set := &v1alpha1.ApplicationSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
		Spec: v1alpha1.ApplicationSetSpec{
			Generators: []v1alpha1.Generator{{Clusters: &v1alpha1.ClustersGenerator{
				Selector: metav1.LabelSelector{MatchLabels: map[string]string{"rollout": suffix}}}}},
			Template: v1alpha1.ApplicationTemplate{
				Metadata: v1alpha1.ApplicationTemplateMeta{Name: "db-{{labels.env}}", Labels: map[string]string{"env": "{{labels.env}}"}},
				Spec: templateSpec(t, v1alpha1.ApplicationSpec{
					Source:      v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
					Destination: v1alpha1.ApplicationDestination{Cluster: "{{name}}", Namespace: "{{labels.env}}-" + suffix},
					SyncPolicy:  v1alpha1.SyncPolicy{Automated: &v1alpha1.AutomatedSync{Prune: true, SelfHeal: true}, CreateNamespace: true, Interval: &metav1.Duration{Duration: time.Hour}},
				}),
			},
			Strategy: &v1alpha1.RolloutStrategy{Steps: []v1alpha1.RolloutStep{
				{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"env": "staging"}}},
				{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}},
			}},
		}}
	if err := a.client.Create(ctx, set); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.client.Delete(context.Background(), set) })

	// Staging syncs and stays Progressing: prod waits, and the set says so.
	a.waitApp(t, ns, "db-staging", 60*time.Second, "staging synced, not healthy", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.Sync.Revision == first && app.Status.Health.Status == v1alpha1.HealthProgressing
	})
	a.waitApp(t, ns, "db-prod", 30*time.Second, "prod held by staging", func(app *v1alpha1.Application) bool {
		c := readyCondition(app)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "waiting for "+ns+"/db-staging (Synced, Progressing)")
	})
	s := a.waitSet(t, ns, "db", 30*time.Second, "the set reporting the held rollout", func(s *v1alpha1.ApplicationSet) bool {
		c := setCondition(s, "RolledOut")
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "step 1 of 2") && strings.Contains(c.Message, "db-staging")
	})
	t.Logf("rollout held: %s", setCondition(s, "RolledOut").Message)
	prodDB := types.NamespacedName{Namespace: "prod-" + suffix, Name: "db"}
	if err := b.client.Get(ctx, prodDB, &appsv1.Deployment{}); err == nil {
		t.Fatal("prod's Deployment was applied before staging was healthy")
	}

	// The fix is pushed: staging takes it and becomes healthy, then prod
	// follows at that same revision.
	if err := repo.Write(map[string]string{"deploy/db.yaml": dbDeployment(true)}); err != nil {
		t.Fatal(err)
	}
	fixed, err := repo.Commit("main", "db schedulable")
	if err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "db-staging", 60*time.Second, "staging healthy at the fix", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Revision == fixed && app.Status.Health.Status == v1alpha1.HealthHealthy
	})
	prod := a.waitApp(t, ns, "db-prod", 60*time.Second, "prod synced at the fix", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.Sync.Revision == fixed
	})
	if err := b.client.Get(ctx, prodDB, &appsv1.Deployment{}); err != nil {
		t.Fatalf("prod's Deployment after the rollout: %v", err)
	}
	r := converge(t, "history", prod.Name, "-n", ns, "-o", "json")
	if strings.Contains(r.stdout, first) {
		t.Errorf("prod synced the revision staging failed on:\n%s", r.stdout)
	}
	a.waitSet(t, ns, "db", 60*time.Second, "the rollout complete", func(s *v1alpha1.ApplicationSet) bool {
		c := setCondition(s, "RolledOut")
		return c != nil && c.Status == metav1.ConditionTrue
	})
}
