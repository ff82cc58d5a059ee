package controller

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/source"
)

// TenancyOptions are the agent-wide rules for Applications.
type TenancyOptions struct {
	// RequireTenant refuses every Application that no Tenant governs: the
	// multi-tenant mode, in which nothing is applied with the agent's own
	// rights.
	RequireTenant bool
	// DefaultServiceAccount is impersonated for Applications that name no
	// ServiceAccount and that no Tenant governs.
	DefaultServiceAccount string
}

// tenancy is what governs one Application.
type tenancy struct {
	// tenant is the governing Tenant's name, "" for none; version its
	// generation.
	tenant  string
	version int64
	// serviceAccount is impersonated for everything the app does in the
	// cluster; "" acts with the agent's own rights.
	serviceAccount string
	policy         *engine.Policy
	adopt          engine.AdoptPolicy
	windows        []v1alpha1.SyncWindow
}

// resolveTenancy decides what governs app, given every Tenant: the one
// whose namespaces match app's, or none. It refuses an app that breaks
// its Tenant's account or source rules, one governed by two Tenants, and,
// when opts.RequireTenant, one governed by none.
func resolveTenancy(app *v1alpha1.Application, tenants []v1alpha1.Tenant, opts TenancyOptions) (tenancy, error) {
	t, err := governor(app.Namespace, tenants, opts)
	if err != nil {
		return tenancy{}, err
	}
	if t == nil {
		sa := app.Spec.ServiceAccountName
		if sa == "" {
			sa = opts.DefaultServiceAccount
		}
		return tenancy{serviceAccount: sa}, nil
	}
	if sa := app.Spec.ServiceAccountName; sa != "" && sa != t.Spec.ServiceAccountName {
		return tenancy{}, fmt.Errorf("spec.serviceAccountName %s: Tenant %s runs its apps as %s only", sa, t.Name, t.Spec.ServiceAccountName)
	}
	repo := source.NormalizeURL(app.Spec.Source.RepoURL)
	if !matchRepo(t.Spec.SourceRepos, repo) {
		return tenancy{}, fmt.Errorf("spec.source.repoURL %s: Tenant %s allows repositories %s only", source.RedactURL(app.Spec.Source.RepoURL), t.Name, orNone(t.Spec.SourceRepos))
	}
	// Dependencies stay within the Tenant: an app's status would
	// otherwise tell of Applications its team may not see.
	for _, d := range app.Spec.DependsOn {
		if d.Namespace != "" && !engine.MatchName(t.Spec.Namespaces, d.Namespace) {
			return tenancy{}, fmt.Errorf("spec.dependsOn %s/%s: Tenant %s's apps may depend only on Applications in its namespaces (%s)", d.Namespace, d.Name, t.Name, strings.Join(t.Spec.Namespaces, ", "))
		}
	}
	if c := app.Spec.Destination.Cluster; c != "" && !engine.MatchName(t.Spec.Clusters, c) {
		return tenancy{}, fmt.Errorf("spec.destination.cluster %s: Tenant %s allows clusters %s only", c, t.Name, orNone(t.Spec.Clusters))
	}
	dest := t.Spec.DestinationNamespaces
	if len(dest) == 0 {
		dest = t.Spec.Namespaces
	}
	policy := &engine.Policy{Name: "Tenant " + t.Name, Namespaces: dest}
	for _, gk := range t.Spec.ClusterResources {
		policy.ClusterKinds = append(policy.ClusterKinds, engine.GroupKind{Group: gk.Group, Kind: gk.Kind})
	}
	for _, gk := range t.Spec.DeniedResources {
		policy.DeniedKinds = append(policy.DeniedKinds, engine.GroupKind{Group: gk.Group, Kind: gk.Kind})
	}
	adopt := engine.AdoptAnnotated
	switch t.Spec.Adopt {
	case "Always":
		adopt = engine.AdoptAlways
	case "Never":
		adopt = engine.AdoptNever
	}
	return tenancy{tenant: t.Name, version: t.Generation, serviceAccount: t.Spec.ServiceAccountName, policy: policy, adopt: adopt, windows: t.Spec.SyncWindows}, nil
}

// governor is the Tenant whose namespaces hold namespace: nil for none
// (refused when opts.RequireTenant), an error for more than one.
func governor(namespace string, tenants []v1alpha1.Tenant, opts TenancyOptions) (*v1alpha1.Tenant, error) {
	var matched []*v1alpha1.Tenant
	for i := range tenants {
		if engine.MatchName(tenants[i].Spec.Namespaces, namespace) {
			matched = append(matched, &tenants[i])
		}
	}
	switch len(matched) {
	case 0:
		if opts.RequireTenant {
			return nil, fmt.Errorf("no Tenant governs namespace %s: this agent syncs only Applications a Tenant governs", namespace)
		}
		return nil, nil
	case 1:
		return matched[0], nil
	}
	names := make([]string, len(matched))
	for i, t := range matched {
		names[i] = t.Name
	}
	sort.Strings(names)
	return nil, fmt.Errorf("namespace %s is governed by more than one Tenant (%s)", namespace, strings.Join(names, ", "))
}

// matchRepo matches a normalized repository URL against patterns: "*"
// matches within one path segment, a trailing "/**" any depth below.
func matchRepo(patterns []string, repo string) bool {
	for _, p := range patterns {
		p = source.NormalizeURL(p)
		if prefix, ok := strings.CutSuffix(p, "/**"); ok {
			if ok, _ := path.Match(prefix, repo); ok {
				return true
			}
			for dir := path.Dir(repo); dir != "." && dir != "/"; dir = path.Dir(dir) {
				if ok, _ := path.Match(prefix, dir); ok {
					return true
				}
			}
			continue
		}
		if ok, _ := path.Match(p, repo); ok {
			return true
		}
	}
	return false
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "(none)"
	}
	return strings.Join(l, ", ")
}

// tenancy resolves app's tenancy from the cached Tenants.
func (r *ApplicationReconciler) tenancy(ctx context.Context, app *v1alpha1.Application) (tenancy, error) {
	var tenants v1alpha1.TenantList
	if err := r.Client.List(ctx, &tenants); err != nil {
		return tenancy{}, fmt.Errorf("listing Tenants: %w", err)
	}
	return resolveTenancy(app, tenants.Items, r.Tenancy)
}

// governorOf is the Tenant governing namespace, from the cached Tenants.
func (r *ApplicationReconciler) governorOf(ctx context.Context, namespace string) (*v1alpha1.Tenant, error) {
	var tenants v1alpha1.TenantList
	if err := r.Client.List(ctx, &tenants); err != nil {
		return nil, fmt.Errorf("listing Tenants: %w", err)
	}
	return governor(namespace, tenants.Items, r.Tenancy)
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
