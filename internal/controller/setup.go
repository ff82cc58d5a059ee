package controller

import (
	"context"

	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	crsource "sigs.k8s.io/controller-runtime/pkg/source"

	"converge.dev/converge/api/v1alpha1"
)

// SetupWithManager registers the reconciler and its watches.
func (r *ApplicationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.cache = mgr.GetCache()
	// One registry per process: a second reconciler (tests) keeps the
	// first collector.
	_ = metrics.Registry.Register(appCollector{cache: r.cache, shards: r.Shards})
	if r.Concurrency <= 0 {
		r.Concurrency = 8
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.Application{}, dependsOnIndex, func(o client.Object) []string {
		return dependencyKeys(o.(*v1alpha1.Application))
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.Application{}, clusterIndex, func(o client.Object) []string {
		if c := o.(*v1alpha1.Application).Spec.Destination.Cluster; c != "" {
			return []string{c}
		}
		return nil
	}); err != nil {
		return err
	}
	opts := controller.Options{MaxConcurrentReconciles: r.Concurrency}
	bld := ctrl.NewControllerManagedBy(mgr)
	// Pushes handed over in memory (push.go); when the queue is full, the
	// webhook annotates instead.
	r.wake, r.elected = make(chan event.GenericEvent, 1024), mgr.Elected()
	bld = bld.WatchesRawSource(crsource.Channel(r.wake, &handler.EnqueueRequestForObject{}))
	if r.Shards != nil {
		// Every replica reconciles its share, leader or not; a change
		// of members looks at every app again.
		opts.NeedLeaderElection = ptr.To(false)
		moved := make(chan event.GenericEvent, 1)
		r.Shards.Moved = moved
		bld = bld.WatchesRawSource(crsource.Channel(moved, handler.EnqueueRequestsFromMapFunc(r.ownedApps)))
		if err := mgr.Add(r.Shards); err != nil {
			return err
		}
	}
	c, err := bld.
		// Status updates do not trigger reconciles; spec, annotation
		// (converge.dev/requested-at) and deletion changes do.
		For(&v1alpha1.Application{}, builder.WithPredicates(specOrRequestChanged())).
		// Any change to an Application wakes those that depend on it.
		Watches(&v1alpha1.Application{}, r.dependents()).
		Watches(&v1alpha1.Tenant{}, r.appsOfTenant()).
		// A Cluster that appears, changes or becomes reachable (or not)
		// wakes the apps that go to it.
		Watches(&v1alpha1.Cluster{}, r.appsOfCluster(), builder.WithPredicates(clusterChanged())).
		WithOptions(opts).
		Build(r)
	if err != nil {
		return err
	}
	r.watches = newDriftWatches(mgr.GetCache(), c)
	if r.Clusters != nil {
		return mgr.Add(&clustersRunnable{clusters: r.Clusters, ctrl: c, leader: r.Shards == nil})
	}
	return nil
}

// ownedApps is every Application this replica owns, after a change of
// shard members (the others' reconciles would end at once anyway).
func (r *ApplicationReconciler) ownedApps(ctx context.Context, _ client.Object) []reconcile.Request {
	var apps v1alpha1.ApplicationList
	if err := r.cache.List(ctx, &apps); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range apps.Items {
		key := client.ObjectKeyFromObject(&apps.Items[i])
		if owns, later := r.Shards.Owns(key); owns || later {
			reqs = append(reqs, reconcile.Request{NamespacedName: key})
		} else {
			r.forget(key)
		}
	}
	return reqs
}

// clustersRunnable gives Clusters the manager's lifetime and the
// controller to feed, on the leader or, sharded, on every replica.
type clustersRunnable struct {
	clusters *Clusters
	ctrl     controller.Controller
	leader   bool
}

func (c *clustersRunnable) NeedLeaderElection() bool { return c.leader }

func (c *clustersRunnable) Start(ctx context.Context) error {
	c.clusters.start(ctx, c.ctrl)
	<-ctx.Done()
	return nil
}

func specOrRequestChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld, e.ObjectNew
		return o.GetGeneration() != n.GetGeneration() ||
			o.GetAnnotations()[v1alpha1.AnnotationRequestedAt] != n.GetAnnotations()[v1alpha1.AnnotationRequestedAt] ||
			o.GetAnnotations()[v1alpha1.AnnotationRollback] != n.GetAnnotations()[v1alpha1.AnnotationRollback] ||
			!n.GetDeletionTimestamp().IsZero()
	}}
}
