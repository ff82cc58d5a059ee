package controller

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/tenancy"
)

// tenancy resolves app's tenancy from the cached Tenants.
func (r *ApplicationReconciler) tenancy(ctx context.Context, app *v1alpha1.Application) (tenancy.Tenancy, error) {
	var tenants v1alpha1.TenantList
	if err := r.Client.List(ctx, &tenants); err != nil {
		return tenancy.Tenancy{}, fmt.Errorf("listing Tenants: %w", err)
	}
	return tenancy.Resolve(app, tenants.Items, r.Tenancy)
}

// governorOf is the Tenant governing namespace, from the cached Tenants.
func (r *ApplicationReconciler) governorOf(ctx context.Context, namespace string) (*v1alpha1.Tenant, error) {
	var tenants v1alpha1.TenantList
	if err := r.Client.List(ctx, &tenants); err != nil {
		return nil, fmt.Errorf("listing Tenants: %w", err)
	}
	return tenancy.Governor(namespace, tenants.Items, r.Tenancy)
}

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
