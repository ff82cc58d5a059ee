package preview

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tenancy"
	"converge.dev/converge/internal/testutil/kubetest"
)

var env *kubetest.Env

func TestMain(m *testing.M) {
	kubetest.Main(m, kubetest.WithConvergeAPI(kubetest.EnvOptions{}), &env)
}

// A preview is governed as the sync is: an app its Tenant refuses (a
// repository or a chart repository it does not allow, or no Tenant under
// --require-tenant) shows the refusal, and neither server it names hears
// a single request.
func TestPreview_RefusedAppFetchesNothing(t *testing.T) {
	ctx := context.Background()
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	defer srv.Close()
	ns := kubetest.Namespace(t, env.Client)
	tenant := &v1alpha1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "preview-" + ns}, Spec: v1alpha1.TenantSpec{
		Namespaces: []string{ns}, ServiceAccountName: "deployer", SourceRepos: []string{"git.example.com/team/**"},
	}}
	if err := env.Client.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), tenant) })
	sources, err := source.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	chartCache, err := charts.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := &Previewer{Builder: &appspec.Builder{Sources: sources, Charts: chartCache}, Tenancy: &tenancy.Options{RequireTenant: true}, Tenants: env.Client}
	for name, app := range map[string]*v1alpha1.Application{
		"a repository the Tenant does not allow": {ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: ns},
			Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: srv.URL + "/team/app.git", Path: "."}}},
		"a chart repository the Tenant does not allow": {ObjectMeta: metav1.ObjectMeta{Name: "chart", Namespace: ns},
			Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{Chart: &v1alpha1.ChartSource{RepoURL: srv.URL + "/charts", Name: "c"}}}},
		"no Tenant under --require-tenant": {ObjectMeta: metav1.ObjectMeta{Name: "loose", Namespace: "default"},
			Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: srv.URL + "/x.git", Path: "."}}},
	} {
		_, err := p.Preview(ctx, Request{Config: env.Config, Client: env.Client, App: app})
		if !tenancy.Refused(err) || !strings.Contains(err.Error(), "refused by the agent's tenancy rules") {
			t.Errorf("%s: err = %v, want the Tenant's refusal", name, err)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("the refused apps' servers received %d requests", n)
	}
}
