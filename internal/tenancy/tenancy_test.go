package tenancy

import (
	"net/url"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

func TestResolveTenancy(t *testing.T) {
	teamA := v1alpha1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}, Spec: v1alpha1.TenantSpec{
		Namespaces: []string{"team-a", "team-a-*"}, ServiceAccountName: "deployer",
		SourceRepos: []string{"git.example.com/team-a/**", "github.com/org/shared"},
	}}
	overlap := v1alpha1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "overlap"}, Spec: v1alpha1.TenantSpec{Namespaces: []string{"team-a-dev"}, ServiceAccountName: "x"}}
	app := func(ns, repo, sa string) *v1alpha1.Application {
		return &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns}, Spec: v1alpha1.ApplicationSpec{
			Source: v1alpha1.ApplicationSource{RepoURL: repo}, ServiceAccountName: sa}}
	}
	for name, tc := range map[string]struct {
		app     *v1alpha1.Application
		tenants []v1alpha1.Tenant
		opts    Options
		wantSA  string
		wantErr string
		policy  bool
	}{
		"no tenant, single-tenant mode: the agent's rights":   {app: app("other", "https://x/y", ""), tenants: []v1alpha1.Tenant{teamA}},
		"no tenant, the app's own account":                    {app: app("other", "https://x/y", "mine"), wantSA: "mine"},
		"no tenant, the default account":                      {app: app("other", "https://x/y", ""), opts: Options{DefaultServiceAccount: "fallback"}, wantSA: "fallback"},
		"no tenant, multi-tenant mode":                        {app: app("other", "https://x/y", ""), opts: Options{RequireTenant: true}, wantErr: "no Tenant governs namespace other"},
		"tenant: its account and policy":                      {app: app("team-a", "https://git.example.com/team-a/deep/repo.git", ""), tenants: []v1alpha1.Tenant{teamA}, wantSA: "deployer", policy: true},
		"tenant by pattern, scp-like URL":                     {app: app("team-a-dev", "git@github.com:org/shared.git", ""), tenants: []v1alpha1.Tenant{teamA}, wantSA: "deployer", policy: true},
		"tenant: another account is refused":                  {app: app("team-a", "https://git.example.com/team-a/r", "cluster-admin"), tenants: []v1alpha1.Tenant{teamA}, wantErr: "runs its apps as deployer only"},
		"tenant: another repository is refused":               {app: app("team-a", "https://git.example.com/team-b/private", ""), tenants: []v1alpha1.Tenant{teamA}, wantErr: "allows repositories"},
		"tenant: a look-alike host is refused":                {app: app("team-a", "https://git.example.com.evil.io/team-a/r", ""), tenants: []v1alpha1.Tenant{teamA}, wantErr: "allows repositories"},
		"tenant: a dependency in its namespaces":              {app: withDeps(app("team-a", "https://git.example.com/team-a/r", ""), "team-a-dev/db", "cache"), tenants: []v1alpha1.Tenant{teamA}, wantSA: "deployer", policy: true},
		"tenant: a dependency elsewhere is refused":           {app: withDeps(app("team-a", "https://git.example.com/team-a/r", ""), "team-b/db"), tenants: []v1alpha1.Tenant{teamA}, wantErr: "may depend only on Applications in its namespaces"},
		"tenant: a cluster it does not allow is refused":      {app: toCluster(app("team-a", "https://git.example.com/team-a/r", ""), "prod"), tenants: []v1alpha1.Tenant{teamA}, wantErr: "spec.destination.cluster prod: Tenant team-a allows clusters (none) only"},
		"tenant: a cluster it allows":                         {app: toCluster(app("team-a", "https://git.example.com/team-a/r", ""), "staging-2"), tenants: []v1alpha1.Tenant{withClusters(teamA, "staging-*")}, wantSA: "deployer", policy: true},
		"tenant: a chart from a repository it does not allow": {app: withChart(app("team-a", "https://git.example.com/team-a/r", ""), "http://127.0.0.1:8080/charts"), tenants: []v1alpha1.Tenant{teamA}, wantErr: "spec.source.chart.repoURL http://127.0.0.1:8080/charts: Tenant team-a allows chart repositories"},
		"tenant: a chart from sourceRepos":                    {app: withChart(app("team-a", "https://git.example.com/team-a/r", ""), "oci://git.example.com/team-a/charts"), tenants: []v1alpha1.Tenant{teamA}, wantSA: "deployer", policy: true},
		"tenant: chartRepos replace sourceRepos for charts":   {app: withChart(app("team-a", "https://git.example.com/team-a/r", ""), "oci://git.example.com/team-a/charts"), tenants: []v1alpha1.Tenant{withChartRepos(teamA, "charts.example.com/**")}, wantErr: "allows chart repositories charts.example.com/** only"},
		"tenant: no notifyHosts, no notifications":            {app: withNotify(app("team-a", "https://git.example.com/team-a/r", ""), "https://hooks.slack.com/x"), tenants: []v1alpha1.Tenant{teamA}, wantErr: "spec.notify[0]: notify URL host hooks.slack.com: Tenant team-a allows notifyHosts (none) only"},
		"tenant: a notify host it allows":                     {app: withNotify(app("team-a", "https://git.example.com/team-a/r", ""), "https://hooks.slack.com/x"), tenants: []v1alpha1.Tenant{withNotifyHosts(teamA, "hooks.slack.com")}, wantSA: "deployer", policy: true},
		"tenant: a loopback notify URL":                       {app: withNotify(app("team-a", "https://git.example.com/team-a/r", ""), "http://127.0.0.1:9/x"), tenants: []v1alpha1.Tenant{withNotifyHosts(teamA, "hooks.slack.com")}, wantErr: "notify URL host 127.0.0.1:9"},
		"two tenants":                                         {app: app("team-a-dev", "https://git.example.com/team-a/r", ""), tenants: []v1alpha1.Tenant{teamA, overlap}, wantErr: "more than one Tenant (overlap, team-a)"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Resolve(tc.app, tc.tenants, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ServiceAccount != tc.wantSA || (got.Policy != nil) != tc.policy {
				t.Errorf("got account %q, policy %v; want %q, %v", got.ServiceAccount, got.Policy, tc.wantSA, tc.policy)
			}
			if tc.policy && (got.Adopt != engine.AdoptAnnotated || strings.Join(got.Policy.Namespaces, ",") != "team-a,team-a-*") {
				t.Errorf("policy = %+v, adopt %q", got.Policy, got.Adopt)
			}
		})
	}
}

func withDeps(app *v1alpha1.Application, deps ...string) *v1alpha1.Application {
	for _, d := range deps {
		ref := v1alpha1.ApplicationReference{Name: d}
		if ns, name, ok := strings.Cut(d, "/"); ok {
			ref = v1alpha1.ApplicationReference{Namespace: ns, Name: name}
		}
		app.Spec.DependsOn = append(app.Spec.DependsOn, ref)
	}
	return app
}

func toCluster(app *v1alpha1.Application, cluster string) *v1alpha1.Application {
	app.Spec.Destination.Cluster = cluster
	return app
}

func withClusters(t v1alpha1.Tenant, clusters ...string) v1alpha1.Tenant {
	t = *t.DeepCopy()
	t.Spec.Clusters = clusters
	return t
}

func withChart(app *v1alpha1.Application, repo string) *v1alpha1.Application {
	app.Spec.Source.Chart = &v1alpha1.ChartSource{RepoURL: repo, Name: "c"}
	return app
}

func withNotify(app *v1alpha1.Application, url string) *v1alpha1.Application {
	app.Spec.Notify = append(app.Spec.Notify, v1alpha1.NotifyTarget{Type: "webhook", URL: url})
	return app
}

func withChartRepos(t v1alpha1.Tenant, repos ...string) v1alpha1.Tenant {
	t = *t.DeepCopy()
	t.Spec.ChartRepos = repos
	return t
}

func withNotifyHosts(t v1alpha1.Tenant, hosts ...string) v1alpha1.Tenant {
	t = *t.DeepCopy()
	t.Spec.NotifyHosts = hosts
	return t
}

// A receiver URL is allowed only when its host is one the Tenant lists,
// however the URL is spelled.
func FuzzAllowNotify(f *testing.F) {
	for _, u := range []string{"https://hooks.slack.com/x", "http://127.0.0.1:9/x", "https://hooks.slack.com.evil.io/", "https://user@hooks.slack.com@evil.io/", "//hooks.slack.com", "https://HOOKS.slack.com:443/"} {
		f.Add(u)
	}
	ten := Tenancy{Tenant: "t", NotifyHosts: []string{"hooks.slack.com"}}
	f.Fuzz(func(t *testing.T, raw string) {
		if ten.AllowNotify(raw) != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil || !strings.EqualFold(u.Hostname(), "hooks.slack.com") {
			t.Fatalf("%q allowed: host %q", raw, u.Hostname())
		}
	})
}
