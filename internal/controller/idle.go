package controller

import (
	"context"
	"hash/fnv"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

// An idle reconcile costs no request. After a sync that wrote nothing,
// the agent keeps what it planned from (revision, Application generation,
// Tenant generation) and a fingerprint of the app's objects as its
// metadata watches showed them just before planning: every owned object's
// resourceVersion and the inventory's. A later reconcile from the same
// inputs whose fingerprint is unchanged would plan the same thing again,
// so it stops there: no render, no inventory read, no list, no dry-run.
//
// Any change to an owned object changes its resourceVersion and reaches
// the watches, which also reconcile the app at once; the fingerprint then
// differs and the app is planned in full. A fingerprint taken while the
// caches lagged behind the cluster differs later too, which costs one
// more plan, never a missed change.

// idleState is what the last quiet plan of an app started from.
type idleState struct {
	revision   string
	generation int64
	tenant     int64
	kinds      []schema.GroupVersionKind
	// fingerprint is taken before the plan; zero until a plan that wrote
	// nothing had one.
	fingerprint uint64
}

func (s idleState) same(revision string, generation, tenant int64) bool {
	return s.revision == revision && s.generation == generation && s.tenant == tenant
}

// fingerprint hashes the resourceVersions of app's owned objects of kinds
// and of its inventory, as the agent's caches hold them. It makes no
// request once the kinds' watches are running.
func (r *ApplicationReconciler) fingerprint(ctx context.Context, app *v1alpha1.Application, tgt *target, kinds []schema.GroupVersionKind) (uint64, error) {
	live, err := r.ownedVersions(ctx, app, tgt, kinds)
	if err != nil {
		return 0, err
	}
	return r.fingerprintOf(ctx, app, kinds, live)
}

// fingerprintOf hashes live (see ownedVersions) and app's inventory's
// resourceVersion, as the cache holds it.
func (r *ApplicationReconciler) fingerprintOf(ctx context.Context, app *v1alpha1.Application, kinds []schema.GroupVersionKind, live map[schema.GroupVersionKind]map[string]string) (uint64, error) {
	inv := &metav1.PartialObjectMetadata{}
	inv.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"})
	err := r.cache.Get(ctx, types.NamespacedName{Namespace: app.Namespace, Name: engine.InventoryName(app.Name)}, inv)
	switch {
	case apierrors.IsNotFound(err):
		return versionsHash(kinds, live, ""), nil
	case err != nil:
		return 0, err
	}
	return versionsHash(kinds, live, inv.ResourceVersion), nil
}

// versionsHash hashes the owned objects' resourceVersions of kinds (in
// any order) and the inventory's ("": there is none). It is never zero,
// which means "no fingerprint".
func versionsHash(kinds []schema.GroupVersionKind, live map[schema.GroupVersionKind]map[string]string, inventory string) uint64 {
	h := fnv.New64a()
	for _, gvk := range kinds {
		items := make([]string, 0, len(live[gvk]))
		for key, rv := range live[gvk] {
			items = append(items, key+"@"+rv)
		}
		slices.Sort(items)
		h.Write([]byte(gvk.String()))
		for _, it := range items {
			h.Write([]byte{0})
			h.Write([]byte(it))
		}
		h.Write([]byte{1})
	}
	if inventory == "" {
		h.Write([]byte("no inventory"))
	} else {
		h.Write([]byte("inventory@" + inventory))
	}
	if sum := h.Sum64(); sum != 0 {
		return sum
	}
	return 1
}

// idleFromRecord reports whether app's objects are, by its own record,
// exactly as its last sync left them at revision: the Application says it
// synced revision at its current generation, the inventory was written for
// revision, and every owned object (in tgt's cache) is at the
// resourceVersion that sync's apply returned, with none added. Then a
// replica that has not seen the app since it started (a restart, a shard
// taking over) needs no render and no plan: it takes the app as idle. It
// costs the inventory's read.
func (r *ApplicationReconciler) idleFromRecord(ctx context.Context, app *v1alpha1.Application, tgt *target, records client.Client, revision string) (*idleState, bool) {
	st := app.Status
	ready := apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
	if st.ObservedGeneration != app.Generation || st.Sync.Status != v1alpha1.SyncStatusSynced || st.Sync.Revision != revision ||
		ready == nil || ready.Status != metav1.ConditionTrue || st.Health.Status != v1alpha1.HealthHealthy {
		return nil, false
	}
	inv, err := tgt.engine.InventoryIn(ctx, records, engine.App{Name: app.Name, Namespace: app.Namespace})
	if err != nil || inv.Revision != revision || len(inv.Entries) == 0 {
		return nil, false
	}
	kinds := inv.Kinds()
	if err := tgt.watches.ensure(kinds); err != nil {
		return nil, false
	}
	live, err := r.ownedVersions(ctx, app, tgt, kinds)
	if err != nil || !inv.Unchanged(live) {
		return nil, false
	}
	fp, err := r.fingerprintOf(ctx, app, kinds, live)
	if err != nil {
		return nil, false
	}
	return &idleState{revision: revision, generation: app.Generation, kinds: kinds, fingerprint: fp}, true
}

// ownedVersions lists app's owned objects of kinds from tgt's cache:
// resourceVersion by "namespace/name", per kind. It makes no request once
// the kinds' watches are running.
func (r *ApplicationReconciler) ownedVersions(ctx context.Context, app *v1alpha1.Application, tgt *target, kinds []schema.GroupVersionKind) (map[schema.GroupVersionKind]map[string]string, error) {
	if tgt.cluster != "" {
		// Another cluster's cache may still be syncing: never wait long.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	owner := app.Namespace + "/" + app.Name
	out := map[schema.GroupVersionKind]map[string]string{}
	for _, gvk := range kinds {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		match := client.ListOption(client.MatchingLabels{engine.LabelApp: app.Name})
		if tgt.watches.isIndexed(gvk) {
			match = client.MatchingFields{ownerIndex: owner}
		}
		if err := tgt.cache.List(ctx, list, match); err != nil {
			return nil, err
		}
		objs := map[string]string{}
		for i := range list.Items {
			o := &list.Items[i]
			if o.Annotations[engine.AnnotationOwner] == owner {
				objs[o.Namespace+"/"+o.Name] = o.ResourceVersion
			}
		}
		out[gvk] = objs
	}
	return out, nil
}
