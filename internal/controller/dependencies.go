package controller

import (
	"context"
	"fmt"
	"strings"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/source"
)

// dependsOnIndex indexes Applications by the Applications they depend on
// ("namespace/name"), so a change to one wakes those waiting for it.
const dependsOnIndex = "spec.dependsOn"

// dependencyKeys are the "namespace/name" of the Applications app depends
// on.
func dependencyKeys(app *v1alpha1.Application) []string {
	out := make([]string, 0, len(app.Spec.DependsOn))
	for _, d := range app.Spec.DependsOn {
		out = append(out, dependencyKey(app, d).String())
	}
	return out
}

func dependencyKey(app *v1alpha1.Application, d v1alpha1.ApplicationReference) types.NamespacedName {
	ns := d.Namespace
	if ns == "" {
		ns = app.Namespace
	}
	return types.NamespacedName{Namespace: ns, Name: d.Name}
}

// CycleError is a dependency cycle through an Application.
type CycleError struct{ Path []types.NamespacedName }

func (e *CycleError) Error() string {
	names := make([]string, len(e.Path))
	for i, p := range e.Path {
		names[i] = p.String()
	}
	return "dependency cycle: " + strings.Join(names, " → ")
}

// dependencyWait says what app waits for before it may sync: "" when
// every Application it depends on is Synced and Healthy at the revision it
// last fetched (and, for a sameRevision dependency, at the commit of
// revision, which app is about to sync; "" before app's fetch), otherwise
// which are not and why. A cycle through app is a *CycleError naming it.
// get looks an Application up (ok false: none). It makes no request of
// its own.
func dependencyWait(app *v1alpha1.Application, get func(types.NamespacedName) (*v1alpha1.Application, bool), revision string) (string, error) {
	if len(app.Spec.DependsOn) == 0 {
		return "", nil
	}
	self := types.NamespacedName{Namespace: app.Namespace, Name: app.Name}
	if path := cycleFrom(self, app, get); path != nil {
		return "", &CycleError{Path: path}
	}
	var waits []string
	for _, d := range app.Spec.DependsOn {
		key := dependencyKey(app, d)
		dep, ok := get(key)
		if !ok {
			waits = append(waits, key.String()+" (no such Application)")
			continue
		}
		if why := notReady(dep); why != "" {
			waits = append(waits, key.String()+" ("+why+")")
		} else if d.SameRevision && revision != "" && commitOf(dep.Status.Sync.Revision) != commitOf(revision) {
			waits = append(waits, fmt.Sprintf("%s (at %s, not yet %s)", key, source.ShortRevision(commitOf(dep.Status.Sync.Revision)), source.ShortRevision(commitOf(revision))))
		}
	}
	if len(waits) == 0 {
		return "", nil
	}
	return "waiting for " + strings.Join(waits, ", "), nil
}

// sameRevisionDeps reports whether app has a sameRevision dependency.
func sameRevisionDeps(app *v1alpha1.Application) bool {
	for _, d := range app.Spec.DependsOn {
		if d.SameRevision {
			return true
		}
	}
	return false
}

// commitOf is the Git commit of a revision ("<commit>+values:…" or
// "<commit>+sha256:…" for values and charts).
func commitOf(revision string) string {
	commit, _, _ := strings.Cut(revision, "+")
	return commit
}

// notReady says why dep does not count as ready yet; "" when it does.
func notReady(dep *v1alpha1.Application) string {
	switch {
	case !dep.DeletionTimestamp.IsZero():
		return "being deleted"
	case dep.Status.ObservedGeneration != dep.Generation:
		return "not reconciled since its last change"
	}
	ready := apimeta.FindStatusCondition(dep.Status.Conditions, v1alpha1.ConditionReady)
	sync, health := dep.Status.Sync.Status, dep.Status.Health.Status
	if sync == v1alpha1.SyncStatusSynced && health == v1alpha1.HealthHealthy && ready != nil && ready.Status == metav1.ConditionTrue {
		return ""
	}
	if sync == "" {
		sync = v1alpha1.SyncStatusUnknown
	}
	if health == "" {
		health = v1alpha1.HealthUnknown
	}
	return fmt.Sprintf("%s, %s", sync, health)
}

// cycleFrom returns a dependency path from self back to self (self first
// and last), or nil when there is none. Applications not found end a path.
func cycleFrom(self types.NamespacedName, app *v1alpha1.Application, get func(types.NamespacedName) (*v1alpha1.Application, bool)) []types.NamespacedName {
	visited := map[types.NamespacedName]bool{}
	var walk func(cur *v1alpha1.Application, path []types.NamespacedName) []types.NamespacedName
	walk = func(cur *v1alpha1.Application, path []types.NamespacedName) []types.NamespacedName {
		for _, d := range cur.Spec.DependsOn {
			key := dependencyKey(cur, d)
			if key == self {
				return append(append([]types.NamespacedName(nil), path...), key)
			}
			if visited[key] {
				continue
			}
			visited[key] = true
			next, ok := get(key)
			if !ok {
				continue
			}
			if found := walk(next, append(path, key)); found != nil {
				return found
			}
		}
		return nil
	}
	return walk(app, []types.NamespacedName{self})
}

// cachedApp looks an Application up in the reconciler's cache.
func (r *ApplicationReconciler) cachedApp(ctx context.Context) func(types.NamespacedName) (*v1alpha1.Application, bool) {
	return func(key types.NamespacedName) (*v1alpha1.Application, bool) {
		app := &v1alpha1.Application{}
		if err := r.Client.Get(ctx, key, app); err != nil {
			return nil, false
		}
		return app, true
	}
}

// dependents maps a changed Application to those that depend on it (their
// wait may be over, or their cycle closed) and, when it is being deleted,
// to those it depends on (their deletion may have waited for it).
func (r *ApplicationReconciler) dependents() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		var out []reconcile.Request
		for _, a := range r.dependentsOf(ctx, types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}) {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: a.Name}})
		}
		if app, ok := obj.(*v1alpha1.Application); ok && !app.DeletionTimestamp.IsZero() {
			for _, d := range app.Spec.DependsOn {
				out = append(out, reconcile.Request{NamespacedName: dependencyKey(app, d)})
			}
		}
		return out
	})
}

// dependentsOf lists the Applications that depend on key, from the cache.
func (r *ApplicationReconciler) dependentsOf(ctx context.Context, key types.NamespacedName) []v1alpha1.Application {
	var list v1alpha1.ApplicationList
	if err := r.Client.List(ctx, &list, client.MatchingFields{dependsOnIndex: key.String()}); err != nil {
		return nil
	}
	return list.Items
}

// dependentsBeingDeleted names the Applications that depend on app and
// are being deleted too: app's deletion waits for them. An app on a cycle
// waits for none (the apps on it would wait for each other forever).
func (r *ApplicationReconciler) dependentsBeingDeleted(ctx context.Context, app *v1alpha1.Application) []string {
	self := types.NamespacedName{Namespace: app.Namespace, Name: app.Name}
	if cycleFrom(self, app, r.cachedApp(ctx)) != nil {
		return nil
	}
	var out []string
	for _, a := range r.dependentsOf(ctx, types.NamespacedName{Namespace: app.Namespace, Name: app.Name}) {
		if !a.DeletionTimestamp.IsZero() && controllerutil.ContainsFinalizer(&a, v1alpha1.ApplicationFinalizer) {
			out = append(out, a.Namespace+"/"+a.Name)
		}
	}
	return out
}
