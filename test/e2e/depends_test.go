//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// dbDeployment is a Deployment that becomes healthy only when schedulable.
func dbDeployment(schedulable bool) string {
	selector := "{kubernetes.io/os: nowhere}"
	if schedulable {
		selector = "{}"
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: db
spec:
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      nodeSelector: %s
      containers:
      - name: db
        image: registry.invalid/db:1
`, selector)
}

func readyMessage(app *v1alpha1.Application) string {
	if c := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		return c.Reason + ": " + c.Message
	}
	return ""
}

func TestDependsOn_WaitsUntilTheDependencyIsHealthyThenSyncs(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	dbRepo, _ := a.repoWith(t, ns+"-db", map[string]string{"deploy/db.yaml": dbDeployment(false)}, "db, not schedulable yet")
	webRepo, webRev := a.repoWith(t, ns+"-web", map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "web")}, "web")
	web := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(webRepo.Name), Path: "deploy"},
			SyncPolicy: automated(true, true),
			DependsOn:  []v1alpha1.ApplicationReference{{Name: "db"}},
		}}
	a.create(t, web)
	// No db yet: web says what it waits for and applies nothing.
	a.waitApp(t, ns, "web", 30*time.Second, "web waiting for a missing db", func(app *v1alpha1.Application) bool {
		return strings.Contains(readyMessage(app), "waiting for "+ns+"/db (no such Application)")
	})
	db := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(dbRepo.Name), Path: "deploy"},
			SyncPolicy: automated(true, true),
		}}
	a.create(t, db)
	a.waitApp(t, ns, "web", 30*time.Second, "web waiting for an unhealthy db", func(app *v1alpha1.Application) bool {
		return strings.Contains(readyMessage(app), "waiting for "+ns+"/db (Synced, Progressing)")
	})
	if got := configMapMode(t, ns); !strings.HasPrefix(got, "<") {
		t.Fatalf("web applied its ConfigMap (mode %q) before db was healthy", got)
	}

	// db becomes healthy: web syncs at once, woken by db's status.
	if err := dbRepo.Write(map[string]string{"deploy/db.yaml": dbDeployment(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := dbRepo.Commit("main", "db, schedulable"); err != nil {
		t.Fatal(err)
	}
	a.push(t, dbRepo, "refs/heads/main")
	dbApp := a.waitApp(t, ns, "db", 30*time.Second, "db healthy", func(app *v1alpha1.Application) bool {
		return app.Status.Health.Status == v1alpha1.HealthHealthy && app.Status.Sync.Status == v1alpha1.SyncStatusSynced
	})
	dbReady := apimeta.FindStatusCondition(dbApp.Status.Conditions, v1alpha1.ConditionReady).LastTransitionTime.Time
	webApp := a.waitApp(t, ns, "web", 10*time.Second, "web synced after db", synced(webRev))
	if got := configMapMode(t, ns); got != "web" {
		t.Errorf("web's ConfigMap mode = %q", got)
	}
	h := history(t, ns, "web")
	if len(h.Entries) == 0 || h.Entries[len(h.Entries)-1].StartedAt.Before(dbReady.Add(-time.Second)) {
		t.Errorf("web's first sync (%v) started before db was ready (%v)", h.Entries, dbReady)
	}
	t.Logf("web synced %v after db became ready", webApp.Status.LastSyncTime.Sub(dbReady).Round(time.Millisecond))
}

func TestDependsOn_CycleIsRefusedNamingBoth(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	for _, pair := range [][2]string{{"left", "right"}, {"right", "left"}} {
		repo, _ := a.repoWith(t, ns+"-"+pair[0], map[string]string{"deploy/cm.yaml": strings.Replace(fmt.Sprintf(agentCM, pair[0]), "name: settings", "name: "+pair[0], 1)}, pair[0])
		a.create(t, &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: pair[0], Namespace: ns},
			Spec: v1alpha1.ApplicationSpec{
				Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
				SyncPolicy: automated(true, true),
				DependsOn:  []v1alpha1.ApplicationReference{{Name: pair[1]}},
			}})
	}
	for _, pair := range [][2]string{{"left", "right"}, {"right", "left"}} {
		want := fmt.Sprintf("dependency cycle: %[1]s/%[2]s → %[1]s/%[3]s → %[1]s/%[2]s", ns, pair[0], pair[1])
		a.waitApp(t, ns, pair[0], 30*time.Second, pair[0]+" refused as a cycle", func(app *v1alpha1.Application) bool {
			stalled := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionStalled)
			return stalled != nil && stalled.Reason == v1alpha1.ReasonDependencyCycle && stalled.Message == want
		})
	}
}

func TestAppOfApps_ChildrenSyncInOrderAndDeletionCascades(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	child := func(name string, deps ...string) string {
		repo, _ := a.repoWith(t, ns+"-"+name, map[string]string{"deploy/cm.yaml": strings.Replace(fmt.Sprintf(agentCM, name), "name: settings", "name: "+name, 1)}, name)
		m := fmt.Sprintf(`apiVersion: converge.dev/v1alpha1
kind: Application
metadata:
  name: %s
spec:
  source: {repoURL: %q, path: deploy}
  syncPolicy: {automated: {prune: true, selfHeal: true}, interval: 1h}
`, name, a.git.URL(repo.Name))
		for i, d := range deps {
			if i == 0 {
				m += "  dependsOn:\n"
			}
			m += "  - {name: " + d + "}\n"
		}
		return m
	}
	root, rev := a.repoWith(t, ns+"-root", map[string]string{
		"apps/database.yaml": child("database"),
		"apps/backend.yaml":  child("backend", "database"),
	}, "the platform's apps")
	a.create(t, &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "root", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(root.Name), Path: "apps"},
			SyncPolicy: automated(true, true),
		}})
	a.waitApp(t, ns, "root", 30*time.Second, "root synced", synced(rev))
	database := a.waitApp(t, ns, "database", 30*time.Second, "database synced and healthy", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.Health.Status == v1alpha1.HealthHealthy
	})
	backend := a.waitApp(t, ns, "backend", 30*time.Second, "backend synced", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.LastSyncTime != nil
	})
	if backend.Status.LastSyncTime.Before(database.Status.LastSyncTime) {
		t.Errorf("backend synced (%v) before the database it depends on (%v)", backend.Status.LastSyncTime, database.Status.LastSyncTime)
	}
	r := converge(t, "get", "-n", ns)
	if r.code != 0 || !strings.Contains(r.stdout, "└ backend") || !strings.Contains(r.stdout, "└ database") {
		t.Errorf("converge get does not show the apps under root:\n%s", r.output())
	}

	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	if r := converge(t, "app", "delete", "root", "-n", ns); r.code != 0 {
		t.Fatalf("deleting root: exit %d\n%s", r.code, r.output())
	}
	kubetest.Eventually(t, 60*time.Second, "the children and their objects gone", func(ctx context.Context) (bool, error) {
		var apps v1alpha1.ApplicationList
		if err := a.client.List(ctx, &apps, client.InNamespace(ns)); err != nil {
			return false, err
		}
		var cms corev1.ConfigMapList
		if err := cluster.Client.List(ctx, &cms, client.InNamespace(ns), client.HasLabels{"converge.dev/app"}); err != nil {
			return false, err
		}
		// The history records stay: they are the audit trail.
		var left []string
		for _, cm := range cms.Items {
			if cm.Labels["converge.dev/record"] != "history" {
				left = append(left, cm.Name)
			}
		}
		return len(apps.Items) == 0 && len(left) == 0, fmt.Errorf("%d Applications and ConfigMaps %v left", len(apps.Items), left)
	})
	// In dependency order: backend's objects went before the database's.
	deleted := map[string]time.Time{}
	events, err := audit.Since(func(e kubetest.AuditEvent) bool {
		return e.Verb == "delete" && e.ObjectRef != nil && e.ObjectRef.Resource == "configmaps" && e.ObjectRef.Namespace == ns
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if _, ok := deleted[e.ObjectRef.Name]; !ok {
			deleted[e.ObjectRef.Name] = e.Received
		}
	}
	if b, d := deleted["backend"], deleted["database"]; b.IsZero() || d.IsZero() || !b.Before(d) {
		t.Errorf("backend's ConfigMap deleted at %v, the database's at %v: want backend first", b, d)
	}
}
