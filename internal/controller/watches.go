package controller

import (
	"context"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"converge.dev/converge/internal/engine"
)

// driftWatches starts, once per kind, a metadata-only watch on objects that
// carry converge's app label, and maps each event to the owning Application
// (from the owner annotation). A live edit or deletion of an owned object
// thus reconciles its Application at once.
type driftWatches struct {
	// cache is the manager's for the agent's own cluster, a destination
	// Cluster's own otherwise.
	cache cache.Cache
	ctrl  controller.Controller

	mu      sync.Mutex
	watched map[schema.GroupVersionKind]bool
	// indexed kinds' informers index objects by owner (ownerIndex).
	indexed map[schema.GroupVersionKind]bool
}

// ownerIndex indexes watched objects by their converge.dev/owner
// annotation: an app's objects are found without scanning every object
// of the kind.
const ownerIndex = "converge.dev/owner"

func newDriftWatches(c cache.Cache, ctrl controller.Controller) *driftWatches {
	return &driftWatches{cache: c, ctrl: ctrl, watched: map[schema.GroupVersionKind]bool{}, indexed: map[schema.GroupVersionKind]bool{}}
}

func (w *driftWatches) ensure(kinds []schema.GroupVersionKind) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, gvk := range kinds {
		if w.watched[gvk] {
			continue
		}
		obj := &metav1.PartialObjectMetadata{}
		obj.SetGroupVersionKind(gvk)
		// Without the index, lookups scan the kind (isIndexed says which).
		err := w.cache.IndexField(context.Background(), obj, ownerIndex, func(o client.Object) []string {
			if owner := o.GetAnnotations()[engine.AnnotationOwner]; owner != "" {
				return []string{owner}
			}
			return nil
		})
		w.indexed[gvk] = err == nil
		src := source.Kind(w.cache, client.Object(obj), handler.EnqueueRequestsFromMapFunc(ownerOf))
		if err := w.ctrl.Watch(src); err != nil {
			return err
		}
		w.watched[gvk] = true
	}
	return nil
}

func (w *driftWatches) isIndexed(gvk schema.GroupVersionKind) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.indexed[gvk]
}

// ownerOf maps an owned object to its Application.
func ownerOf(_ context.Context, obj client.Object) []reconcile.Request {
	owner := obj.GetAnnotations()[engine.AnnotationOwner]
	ns, name, ok := strings.Cut(owner, "/")
	if !ok || obj.GetLabels()[engine.LabelApp] != name {
		return nil
	}
	driftEvents.Inc()
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
}
