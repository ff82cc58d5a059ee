package controller

import (
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"converge.dev/converge/api/v1alpha1"
)

func depApp(ns, name string, sync v1alpha1.SyncStatusCode, health v1alpha1.HealthStatusCode, deps ...v1alpha1.ApplicationReference) *v1alpha1.Application {
	a := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1}}
	a.Spec.DependsOn = deps
	a.Status.ObservedGeneration = 1
	a.Status.Sync.Status, a.Status.Health.Status = sync, health
	ready := metav1.ConditionFalse
	if sync == v1alpha1.SyncStatusSynced && health == v1alpha1.HealthHealthy {
		ready = metav1.ConditionTrue
	}
	a.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: ready}}
	return a
}

func lookup(apps ...*v1alpha1.Application) func(types.NamespacedName) (*v1alpha1.Application, bool) {
	m := map[types.NamespacedName]*v1alpha1.Application{}
	for _, a := range apps {
		m[types.NamespacedName{Namespace: a.Namespace, Name: a.Name}] = a
	}
	return func(k types.NamespacedName) (*v1alpha1.Application, bool) { a, ok := m[k]; return a, ok }
}

func sameRev(name string) v1alpha1.ApplicationReference {
	return v1alpha1.ApplicationReference{Name: name, SameRevision: true}
}

func atRevision(a *v1alpha1.Application, rev string) *v1alpha1.Application {
	a.Status.Sync.Revision = rev
	return a
}

func TestDependencyWait(t *testing.T) {
	const synced, healthy = v1alpha1.SyncStatusSynced, v1alpha1.HealthHealthy
	ref := func(name string) v1alpha1.ApplicationReference { return v1alpha1.ApplicationReference{Name: name} }
	db := depApp("team", "db", synced, healthy)
	stale := depApp("team", "db", synced, healthy)
	stale.Generation = 2
	for _, tc := range []struct {
		name  string
		app   *v1alpha1.Application
		other []*v1alpha1.Application
		want  string
		cycle string
		// revision is what the app is about to sync.
		revision string
	}{
		{"no dependencies", depApp("team", "web", "", ""), nil, "", "", ""},
		{"ready", depApp("team", "web", "", "", ref("db")), []*v1alpha1.Application{db}, "", "", ""},
		{"in another namespace", depApp("team", "web", "", "", v1alpha1.ApplicationReference{Namespace: "infra", Name: "db"}),
			[]*v1alpha1.Application{depApp("infra", "db", v1alpha1.SyncStatusOutOfSync, v1alpha1.HealthProgressing)},
			"waiting for infra/db (OutOfSync, Progressing)", "", ""},
		{"missing", depApp("team", "web", "", "", ref("db")), nil, "waiting for team/db (no such Application)", "", ""},
		{"changed since its last reconcile", depApp("team", "web", "", "", ref("db")), []*v1alpha1.Application{stale},
			"waiting for team/db (not reconciled since its last change)", "", ""},
		{"never reconciled", depApp("team", "web", "", "", ref("db"), ref("cache")),
			[]*v1alpha1.Application{db, depApp("team", "cache", "", "")}, "waiting for team/cache (Unknown, Unknown)", "", ""},
		{"a cycle through the app", depApp("team", "a", "", "", ref("b")),
			[]*v1alpha1.Application{depApp("team", "b", "", "", ref("c")), depApp("team", "c", "", "", ref("a"))},
			"", "dependency cycle: team/a → team/b → team/c → team/a", ""},
		{"itself", depApp("team", "a", "", "", ref("a")), nil, "", "dependency cycle: team/a → team/a", ""},
		{"a cycle further on is not the app's: it waits", depApp("team", "a", "", "", ref("b")),
			[]*v1alpha1.Application{depApp("team", "b", "", "", ref("c")), depApp("team", "c", "", "", ref("b"))},
			"waiting for team/b (Unknown, Unknown)", "", ""},
		{"same revision: the dependency has it", depApp("team", "prod", "", "", sameRev("staging")),
			[]*v1alpha1.Application{atRevision(depApp("team", "staging", synced, healthy), "aaaa+values:1")}, "", "", "aaaa+values:2"},
		{"same revision: the dependency is still at the old one", depApp("team", "prod", "", "", sameRev("staging")),
			[]*v1alpha1.Application{atRevision(depApp("team", "staging", synced, healthy), "0123456789abcdef")}, "waiting for team/staging (at 0123456789ab, not yet fedcba987654)", "", "fedcba9876543210"},
		{"same revision, before the fetch: readiness only", depApp("team", "prod", "", "", sameRev("staging")),
			[]*v1alpha1.Application{atRevision(depApp("team", "staging", synced, healthy), "0123")}, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dependencyWait(tc.app, lookup(append(tc.other, tc.app)...), tc.revision)
			var cerr *CycleError
			switch {
			case tc.cycle != "":
				if !errors.As(err, &cerr) || err.Error() != tc.cycle {
					t.Fatalf("err = %v, want %s", err, tc.cycle)
				}
			case err != nil:
				t.Fatalf("err = %v", err)
			case got != tc.want:
				t.Errorf("dependencyWait = %q, want %q", got, tc.want)
			}
		})
	}
}
