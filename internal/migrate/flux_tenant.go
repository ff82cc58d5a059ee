package migrate

import (
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/source"
)

// fluxTenantLabel marks what `flux create tenant` writes: the tenant's
// Namespaces, ServiceAccount and RoleBinding.
const fluxTenantLabel = "toolkit.fluxcd.io/tenant"

// fluxTenant is one Flux tenant as the inputs describe it.
type fluxTenant struct {
	namespaces      []string
	serviceAccounts map[string]bool
	// bound: a RoleBinding in a tenant namespace binds the account.
	bound map[string]bool
	first *unstructured.Unstructured
}

// indexFluxTenant records u if it belongs to a Flux tenant.
func (t *translator) indexFluxTenant(u *unstructured.Unstructured) {
	name := u.GetLabels()[fluxTenantLabel]
	if name == "" {
		return
	}
	ft := t.fluxTenants[name]
	if ft == nil {
		ft = &fluxTenant{serviceAccounts: map[string]bool{}, bound: map[string]bool{}, first: u}
		t.fluxTenants[name] = ft
	}
	gk := u.GroupVersionKind().GroupKind()
	switch {
	case gk.Group == "" && gk.Kind == "Namespace":
		ft.namespaces = append(ft.namespaces, u.GetName())
	case gk.Group == "" && gk.Kind == "ServiceAccount":
		ft.serviceAccounts[u.GetName()] = true
	case gk.Group == "rbac.authorization.k8s.io" && gk.Kind == "RoleBinding":
		subjects, _, _ := unstructured.NestedSlice(u.Object, "subjects")
		for _, s := range subjects {
			m, _ := s.(map[string]any)
			if strAt(m, "kind") == "ServiceAccount" {
				ft.bound[strAt(m, "name")] = true
			}
		}
	}
}

// makeFluxTenants makes a Tenant of each Flux tenant (multi-tenancy as `flux
// create tenant` lays it out): it governs the tenant's namespaces, runs
// their apps as its ServiceAccount (the one its RoleBinding binds), and
// allows the repositories of the GitRepositories in those namespaces. A
// tenant with no namespace, or not exactly one account, is named.
func (t *translator) makeFluxTenants() {
	names := make([]string, 0, len(t.fluxTenants))
	for n := range t.fluxTenants {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		ft := t.fluxTenants[name]
		if len(ft.namespaces) == 0 {
			t.note(ft.first, "metadata.labels", "Flux tenant %s has no Namespace among the inputs: no Tenant made", name)
			continue
		}
		var accounts []string
		for sa := range ft.serviceAccounts {
			if ft.bound[sa] || len(ft.bound) == 0 {
				accounts = append(accounts, sa)
			}
		}
		if len(accounts) != 1 {
			t.note(ft.first, "metadata.labels", "Flux tenant %s: %d ServiceAccounts could be its account (%v); no Tenant made: its apps keep the agent's rights until one is made", name, len(accounts), accounts)
			continue
		}
		sort.Strings(ft.namespaces)
		tenant := v1alpha1.Tenant{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Tenant"},
			ObjectMeta: metav1.ObjectMeta{Name: dnsName(name)},
			Spec:       v1alpha1.TenantSpec{Namespaces: ft.namespaces, ServiceAccountName: accounts[0]}}
		repos := map[string]bool{}
		for _, src := range t.sources {
			if src.GetKind() != "GitRepository" && src.GetKind() != "OCIRepository" && src.GetKind() != "HelmRepository" {
				continue
			}
			for _, ns := range ft.namespaces {
				if src.GetNamespace() == ns {
					repos[source.NormalizeURL(str(src, "spec", "url"))] = true
				}
			}
		}
		for r := range repos {
			tenant.Spec.SourceRepos = append(tenant.Spec.SourceRepos, r)
		}
		sort.Strings(tenant.Spec.SourceRepos)
		if len(tenant.Spec.SourceRepos) == 0 {
			t.note(ft.first, "metadata.labels", "Flux tenant %s: no GitRepository, OCIRepository or HelmRepository in its namespaces among the inputs; Tenant %s allows no repository until spec.sourceRepos is set", name, tenant.Name)
		}
		t.res.Tenants = append(t.res.Tenants, tenant)
		// Its apps run as the Tenant's account: the field is the
		// Tenant's to set.
		for i := range t.res.Applications {
			a := &t.res.Applications[i]
			for _, ns := range ft.namespaces {
				if a.Namespace == ns && a.Spec.ServiceAccountName == accounts[0] {
					a.Spec.ServiceAccountName = ""
				}
			}
		}
	}
}
