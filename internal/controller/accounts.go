package controller

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/tenancy"
)

// accounts keeps one engine per identity an agent acts as on one cluster:
// the ServiceAccounts apps run as, impersonated.
type accounts struct {
	mu      sync.Mutex
	engines map[string]*engine.Manager
}

// engine returns the engine acting through cfg as user (impersonated; ""
// for cfg's own identity), made once per user.
func (a *accounts) engine(cfg *rest.Config, user string) (*engine.Manager, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if m, ok := a.engines[user]; ok {
		return m, nil
	}
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: user}
	m, err := engine.New(c, engine.DefaultOptions())
	if err != nil {
		return nil, err
	}
	if a.engines == nil {
		a.engines = map[string]*engine.Manager{}
	}
	a.engines[user] = m
	return m, nil
}

// serviceAccountUser is the user name of a ServiceAccount.
func serviceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

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

// engineFor returns the engine that acts for an app of namespace: the
// agent's own when sa is empty, or one impersonating ServiceAccount sa
// there.
func (r *ApplicationReconciler) engineFor(namespace, sa string) (*engine.Manager, error) {
	if sa == "" {
		return r.Engine, nil
	}
	if r.Config == nil {
		return nil, fmt.Errorf("ServiceAccount %s: this agent cannot impersonate (no configuration)", sa)
	}
	m, err := r.accounts.engine(r.Config, serviceAccountUser(namespace, sa))
	if err != nil {
		return nil, fmt.Errorf("impersonating ServiceAccount %s/%s: %w", namespace, sa, err)
	}
	return m, nil
}

// secretsReader reads the Secrets of an app of namespace (credentials,
// trusted keys, values) as the account it runs as: ServiceAccount sa's
// through eng, else the agent's.
func (r *ApplicationReconciler) secretsReader(namespace string, eng *engine.Manager, sa string) client.Reader {
	if sa != "" {
		return r.SecretCache.Reader(namespace+"/"+sa, eng.Client())
	}
	return r.SecretCache.Reader("", r.Secrets)
}
