package controller

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/render"
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

// A new revision that changes nothing an app renders is not a sync of
// it. When the app is Synced and Healthy, its spec and Tenant are as its
// last quiet plan found them, its objects are as that plan left them
// (the fingerprint) and the revision renders exactly what that plan
// rendered, a plan would find nothing to do: the app moves to the
// revision by its status alone. No plan, no inventory write, no history
// entry, no hooks. A commit to a repository of 1,000 apps that touches 10
// of them costs the other 990 one status write each.

// idleState is what the last quiet plan of an app started from.
type idleState struct {
	revision   string
	generation int64
	tenant     int64
	kinds      []schema.GroupVersionKind
	// fingerprint is taken before the plan; zero until a plan that wrote
	// nothing had one.
	fingerprint uint64
	// render is the digest of what the plan was made from (renderDigest);
	// zero when unknown.
	render [sha256.Size]byte
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

// unchanged reports whether run's new render changes nothing (see above),
// and if so moves the app to its revision. A person's request or a
// rollback always plans; a webhook delivery only asks to look at Git now.
func (r *ApplicationReconciler) unchanged(ctx context.Context, run *attempt) (ctrl.Result, bool) {
	app := run.app
	if run.forced && run.trigger.Type != engine.TriggerWebhook {
		return ctrl.Result{}, false
	}
	last, ok := r.idleState(run.key)
	if !ok || last.fingerprint == 0 || last.render != run.render || last.generation != app.Generation || last.tenant != run.ten.Version ||
		!syncedAndHealthy(app, last.revision) || run.hooks {
		return ctrl.Result{}, false
	}
	fp, err := r.fingerprint(ctx, app, run.target, last.kinds)
	if err != nil || fp != last.fingerprint {
		return ctrl.Result{}, false
	}
	moved(app, run.artifact, run.build.Chart)
	r.remember(run.key, syncedAt{revision: run.artifact.Revision, generation: app.Generation})
	last.revision = run.artifact.Revision
	r.setIdle(run.key, &last)
	syncTotal.WithLabelValues("unchanged").Inc()
	return ctrl.Result{RequeueAfter: requeueAfter(app.Status.Health.Status, run.interval)}, true
}

// renderDigest identifies a render: the objects, in order, as JSON, and
// whether any is a hook.
func renderDigest(objs []render.Object) (digest [sha256.Size]byte, hooks bool, err error) {
	h := sha256.New()
	for _, o := range objs {
		data, err := json.Marshal(o.Object)
		if err != nil {
			return digest, false, fmt.Errorf("%s: %w", o.Ref(), err)
		}
		h.Write(data)
		h.Write([]byte{0})
		hooks = hooks || render.IsHook(o.Unstructured)
	}
	copy(digest[:], h.Sum(nil))
	return digest, hooks, nil
}

// syncedAndHealthy reports whether app's status says that it synced
// revision at its current generation and is Ready and Healthy.
func syncedAndHealthy(app *v1alpha1.Application, revision string) bool {
	st := app.Status
	ready := apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
	return st.ObservedGeneration == app.Generation && st.Sync.Status == v1alpha1.SyncStatusSynced && st.Sync.Revision == revision && st.LastError == "" &&
		ready != nil && ready.Status == metav1.ConditionTrue && st.Health.Status == v1alpha1.HealthHealthy
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
	if !syncedAndHealthy(app, revision) {
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
