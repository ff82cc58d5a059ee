package controller

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/redact"
)

// ClusterReconciler keeps each Cluster's status true: whether its
// apiserver answers with its credentials (probed every Interval, every
// few seconds while it does not), its version, and how many Applications
// go to it. The status is written only when it changes.
type ClusterReconciler struct {
	Client   client.Client
	Clusters *Clusters
	// Interval between probes of a reachable cluster (default 10s); an
	// unreachable one is probed every 3 seconds.
	Interval time.Duration

	mu sync.Mutex
	// probed is when each Cluster was last probed: an Application's
	// change recounts its Cluster's apps without probing again.
	probed map[string]time.Time
}

// SetupWithManager registers the reconciler: Clusters, and the
// Applications that go to them (for the count).
func (r *ClusterReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Interval <= 0 {
		r.Interval = 10 * time.Second
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Cluster{}).
		Watches(&v1alpha1.Application{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if c := o.(*v1alpha1.Application).Spec.Destination.Cluster; c != "" {
				return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: c}}}
			}
			return nil
		})).
		Named("cluster").
		Complete(r)
}

// Reconcile probes the Cluster (unless it was probed moments ago),
// counts its Applications and writes what changed.
func (r *ClusterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cl := &v1alpha1.Cluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, cl); err != nil {
		if apierrors.IsNotFound(err) {
			r.Clusters.drop(req.Name)
			r.mu.Lock()
			delete(r.probed, req.Name)
			r.mu.Unlock()
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := cl.Status.DeepCopy()
	var apps v1alpha1.ApplicationList
	if err := r.Client.List(ctx, &apps, client.MatchingFields{clusterIndex: cl.Name}); err != nil {
		return ctrl.Result{}, err
	}
	cl.Status.Applications = int32(len(apps.Items))

	now := time.Now()
	ready := apimeta.FindStatusCondition(cl.Status.Conditions, v1alpha1.ConditionReady)
	reachable := ready != nil && ready.Status == metav1.ConditionTrue && cl.Status.ObservedGeneration == cl.Generation
	every := r.Interval
	if !reachable {
		every = 3 * time.Second
	}
	r.mu.Lock()
	last, ok := r.probed[cl.Name]
	due := !ok || now.Sub(last) >= every || cl.Status.ObservedGeneration != cl.Generation
	if due {
		if r.probed == nil {
			r.probed = map[string]time.Time{}
		}
		r.probed[cl.Name] = now
	}
	r.mu.Unlock()
	if due {
		info, err := r.Clusters.probe(ctx, cl.Name)
		cond := metav1.Condition{Type: v1alpha1.ConditionReady, ObservedGeneration: cl.Generation}
		var cerr *ClusterError
		switch {
		case err == nil && !reachable && ready != nil:
			// Back from an outage: fresh watches before the apps,
			// woken by this status, look again.
			r.Clusters.reconnect(cl.Name)
			fallthrough
		case err == nil:
			cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, v1alpha1.ReasonReachable, "the apiserver answers"
			cl.Status.Version = info.GitVersion
		case errors.As(err, &cerr):
			cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, cerr.Reason, redact.Error(cerr.Err)
		default:
			return ctrl.Result{}, err
		}
		apimeta.SetStatusCondition(&cl.Status.Conditions, cond)
		cl.Status.ObservedGeneration = cl.Generation
		reachable = err == nil
	}
	if !equality.Semantic.DeepEqual(before, &cl.Status) {
		if requeue, err := writeStatus(ctx, r.Client, cl, nil); requeue || err != nil {
			return ctrl.Result{Requeue: requeue}, err
		}
	}
	if reachable {
		return ctrl.Result{RequeueAfter: r.Interval}, nil
	}
	return ctrl.Result{RequeueAfter: 3 * time.Second}, nil
}
