// Package tenancy decides what governs an Application: the Tenant whose
// namespaces hold it (or none), the account it runs as, and what its
// sources, charts, notifications, destinations and kinds may be. It is
// pure: callers list the Tenants. The reconcilers, the ApplicationSet
// generators and the previews (CLI and web UI) all decide through Resolve,
// so a preview never fetches what a sync would refuse.
package tenancy

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strings"

	"converge.dev/converge/internal/redact"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/egress"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/notify"
	"converge.dev/converge/internal/source"
)

// Options are the agent-wide rules for Applications.
type Options struct {
	// RequireTenant refuses every Application that no Tenant governs: the
	// multi-tenant mode, in which nothing is applied with the agent's own
	// rights.
	RequireTenant bool
	// DefaultServiceAccount is impersonated for Applications that name no
	// ServiceAccount and that no Tenant governs.
	DefaultServiceAccount string
}

// Tenancy is what governs one Application.
type Tenancy struct {
	// tenant is the governing Tenant's name, "" for none; version its
	// generation.
	Tenant  string
	Version int64
	// serviceAccount is impersonated for everything the app does in the
	// cluster; "" acts with the agent's own rights.
	ServiceAccount string
	Policy         *engine.Policy
	Adopt          engine.AdoptPolicy
	Windows        []v1alpha1.SyncWindow
	// chartRepos and notifyHosts bound what the app's charts and
	// notifications may reach (governed apps only).
	ChartRepos  []string
	NotifyHosts []string
}

// AllowChart refuses a chart URL (repository, index-listed chart, or
// dependency) that the Tenant does not allow; nil when no Tenant governs.
func (t Tenancy) AllowChart() func(rawURL string) error {
	if t.Tenant == "" {
		return nil
	}
	return func(rawURL string) error {
		if MatchRepo(t.ChartRepos, source.NormalizeURL(rawURL)) {
			return nil
		}
		return &PolicyError{Err: fmt.Errorf("chart URL %s: Tenant %s allows chart repositories %s only", redact.URL(rawURL), t.Tenant, orNone(t.ChartRepos))}
	}
}

// Queue is the render queue of the app's Tenant: "" (the agent's own,
// trusted) when none governs it.
func (t Tenancy) Queue() string {
	if t.Tenant == "" {
		return ""
	}
	return "tenant/" + t.Tenant
}

// AllowNotify refuses a receiver URL whose host the Tenant does not allow.
func (t Tenancy) AllowNotify(rawURL string) error {
	if t.Tenant == "" {
		return nil
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("notify URL %s: not an http(s) URL", redact.URL(rawURL))
	}
	if len(t.NotifyHosts) == 0 || !(source.HostAllowed(t.NotifyHosts, u.Host) || source.HostAllowed(t.NotifyHosts, u.Hostname())) {
		return &PolicyError{Err: fmt.Errorf("notify URL host %s: Tenant %s allows notifyHosts %s only", u.Host, t.Tenant, orNone(t.NotifyHosts))}
	}
	return nil
}

// PolicyError is a fetch or send that the Tenant refuses: the app is
// refused with PolicyViolation, not retried as a failure.
type PolicyError struct{ Err error }

func (e *PolicyError) Error() string { return e.Err.Error() }
func (e *PolicyError) Unwrap() error { return e.Err }

// Resolve decides what governs app, given every Tenant: the one
// whose namespaces match app's, or none. It refuses an app that breaks
// its Tenant's account or source rules, one governed by two Tenants, and,
// when opts.RequireTenant, one governed by none.
func Resolve(app *v1alpha1.Application, tenants []v1alpha1.Tenant, opts Options) (Tenancy, error) {
	t, err := Governor(app.Namespace, tenants, opts)
	if err != nil {
		return Tenancy{}, err
	}
	if t == nil {
		sa := app.Spec.ServiceAccountName
		if sa == "" {
			sa = opts.DefaultServiceAccount
		}
		return Tenancy{ServiceAccount: sa}, nil
	}
	if sa := app.Spec.ServiceAccountName; sa != "" && sa != t.Spec.ServiceAccountName {
		return Tenancy{}, fmt.Errorf("spec.serviceAccountName %s: Tenant %s runs its apps as %s only", sa, t.Name, t.Spec.ServiceAccountName)
	}
	// A chart-only app has no Git source to check (its chart is, below).
	if app.Spec.Source.RepoURL != "" {
		if err := allowRepo(t, "spec.source.repoURL", app.Spec.Source.RepoURL); err != nil {
			return Tenancy{}, err
		}
	}
	if o := app.Spec.Source.OCI; o != nil {
		if err := allowRepo(t, "spec.source.oci.url", o.URL); err != nil {
			return Tenancy{}, err
		}
	}
	// Dependencies stay within the Tenant: an app's status would
	// otherwise tell of Applications its team may not see.
	for _, d := range app.Spec.DependsOn {
		if d.Namespace != "" && !engine.MatchName(t.Spec.Namespaces, d.Namespace) {
			return Tenancy{}, fmt.Errorf("spec.dependsOn %s/%s: Tenant %s's apps may depend only on Applications in its namespaces (%s)", d.Namespace, d.Name, t.Name, strings.Join(t.Spec.Namespaces, ", "))
		}
	}
	chartRepos := t.Spec.ChartRepos
	if len(chartRepos) == 0 {
		chartRepos = t.Spec.SourceRepos
	}
	if cs := app.Spec.Source.Chart; cs != nil && !MatchRepo(chartRepos, source.NormalizeURL(cs.RepoURL)) {
		return Tenancy{}, fmt.Errorf("spec.source.chart.repoURL %s: Tenant %s allows chart repositories %s only", redact.URL(cs.RepoURL), t.Name, orNone(chartRepos))
	}
	if c := app.Spec.Destination.Cluster; c != "" && !engine.MatchName(t.Spec.Clusters, c) {
		return Tenancy{}, fmt.Errorf("spec.destination.cluster %s: Tenant %s allows clusters %s only", c, t.Name, orNone(t.Spec.Clusters))
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
	ten := Tenancy{Tenant: t.Name, Version: t.Generation, ServiceAccount: t.Spec.ServiceAccountName, Policy: policy, Adopt: adopt, Windows: t.Spec.SyncWindows,
		ChartRepos: chartRepos, NotifyHosts: t.Spec.NotifyHosts}
	// Receivers named in the spec are checked here; a URL from a Secret
	// when the event is sent.
	for i, n := range app.Spec.Notify {
		target := n.URL
		if target == "" {
			target = notify.DefaultURL(n.Type)
		}
		if target == "" {
			continue // from its Secret: checked when sent
		}
		if err := ten.AllowNotify(target); err != nil {
			return Tenancy{}, fmt.Errorf("spec.notify[%d]: %w", i, err)
		}
	}
	return ten, nil
}

// ResolveRepo decides what governs a read of Git repository repoURL
// (named by field) for an object in namespace that is not an Application:
// an ApplicationSet's Git generator, an ImageUpdateAutomation. It reads as the Tenant's account,
// and only the repositories the Tenant allows; with no Tenant, as the
// agent's default account.
func ResolveRepo(namespace, field, repoURL string, tenants []v1alpha1.Tenant, opts Options) (Tenancy, error) {
	t, err := Governor(namespace, tenants, opts)
	if err != nil {
		return Tenancy{}, err
	}
	if t == nil {
		return Tenancy{ServiceAccount: opts.DefaultServiceAccount}, nil
	}
	if err := allowRepo(t, field, repoURL); err != nil {
		return Tenancy{}, err
	}
	return Tenancy{Tenant: t.Name, Version: t.Generation, ServiceAccount: t.Spec.ServiceAccountName, NotifyHosts: t.Spec.NotifyHosts}, nil
}

// allowRepo refuses a Git repository (named by field) that t does not
// allow.
func allowRepo(t *v1alpha1.Tenant, field, repoURL string) error {
	if MatchRepo(t.Spec.SourceRepos, source.NormalizeURL(repoURL)) {
		return nil
	}
	return fmt.Errorf("%s %s: Tenant %s allows repositories %s only", field, redact.URL(repoURL), t.Name, orNone(t.Spec.SourceRepos))
}

// Governor is the Tenant whose namespaces hold namespace: nil for none
// (refused when opts.RequireTenant), an error for more than one.
func Governor(namespace string, tenants []v1alpha1.Tenant, opts Options) (*v1alpha1.Tenant, error) {
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

// MatchRepo matches a normalized repository URL against patterns: "*"
// matches within one path segment, a trailing "/**" any depth below.
func MatchRepo(patterns []string, repo string) bool {
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

// Refused says whether err is a fetch or send that the Tenant or the
// agent's egress policy refused: a PolicyViolation, not a failure to
// retry.
func Refused(err error) bool {
	var perr *PolicyError
	return errors.As(err, &perr) || egress.IsRefused(err)
}
