package controller

import (
	"context"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

// appsOfTenant maps a Tenant to the Applications it may govern, so that a
// change to a Tenant is applied at once.
func (r *ApplicationReconciler) appsOfTenant() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		t, ok := obj.(*v1alpha1.Tenant)
		if !ok {
			return nil
		}
		var apps v1alpha1.ApplicationList
		if err := r.Client.List(ctx, &apps); err != nil {
			return nil
		}
		var reqs []reconcile.Request
		for _, a := range apps.Items {
			if engine.MatchName(t.Spec.Namespaces, a.Namespace) {
				reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: a.Name}})
			}
		}
		return reqs
	})
}
