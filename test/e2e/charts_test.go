//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/chartrepo"
	"converge.dev/converge/internal/testutil/kubetest"
)

const shopTemplate = `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  chartVersion: {{ .Chart.Version | quote }}
  color: {{ .Values.color | quote }}
`

func shopChart(version string) []byte {
	return chartrepo.Package("shop", version, map[string]string{"templates/cm.yaml": shopTemplate, "values.yaml": "color: grey\n"})
}

func settings(t *testing.T, ns, name string) map[string]any {
	t.Helper()
	cm := get(t, "v1", "ConfigMap", ns, name)
	if cm == nil {
		return nil
	}
	data, _ := cm.Object["data"].(map[string]any)
	return data
}

// Argo CD's "multiple sources": a chart from an OCI registry, its values
// from Git. A values commit syncs, and so does a new chart version in the
// app's range.
func TestCharts_OCIChartWithValuesFromGit(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	reg := chartrepo.NewRegistry()
	defer reg.Close()
	if _, err := reg.Push("charts/shop", "1.0.0", shopChart("1.0.0")); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Push("charts/shop", "2.0.0", shopChart("2.0.0")); err != nil { // outside the range
		t.Fatal(err)
	}
	repo, _ := a.repoWith(t, ns+"-values", map[string]string{"env/prod/values.yaml": "color: blue\n"}, "blue")
	policy := automated(true, true)
	policy.Interval = &metav1.Duration{Duration: 2 * time.Second}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source: v1alpha1.ApplicationSource{
				RepoURL: a.git.URL(repo.Name), Path: "env/prod",
				Chart: &v1alpha1.ChartSource{RepoURL: "oci://" + reg.Host + "/charts", Name: "shop", Version: "~1.0"},
				Helm:  &v1alpha1.HelmSource{ValuesFiles: []string{"values.yaml"}},
			},
			SyncPolicy: policy,
		},
	}
	a.create(t, app)
	want := func(what, version, color string) {
		t.Helper()
		kubetest.Eventually(t, 30*time.Second, what, func(context.Context) (bool, error) {
			d := settings(t, ns, "shop-settings")
			return d["chartVersion"] == version && d["color"] == color, fmt.Errorf("ConfigMap data %v", d)
		})
	}
	want("the chart's first version with the values from Git", "1.0.0", "blue")
	got := a.waitApp(t, ns, "shop", 10*time.Second, "synced", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.Sync.Chart != nil
	})
	if c := got.Status.Sync.Chart; c.Version != "1.0.0" || !strings.HasPrefix(c.Digest, "sha256:") || !strings.Contains(got.Status.Sync.Revision, "+sha256:") {
		t.Errorf("status.sync = %+v", got.Status.Sync)
	}

	if err := repo.Write(map[string]string{"env/prod/values.yaml": "color: green\n"}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "green"); err != nil {
		t.Fatal(err)
	}
	want("a values commit synced", "1.0.0", "green")

	if _, err := reg.Push("charts/shop", "1.0.1", shopChart("1.0.1")); err != nil {
		t.Fatal(err)
	}
	want("a new chart version in the range synced", "1.0.1", "green")
}

// A chart alone, from a Helm repository that wants credentials; a digest
// that does not match is refused.
func TestCharts_HelmRepositoryChartWithCredentialsAndDigest(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo := chartrepo.NewHelmRepo()
	defer repo.Close()
	repo.Username, repo.Password = "reader", "chart-token-5150"
	digest := repo.Add("shop", "3.1.0", shopChart("3.1.0"))
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "chart-creds", Namespace: ns},
		StringData: map[string]string{"username": "reader", "password": "chart-token-5150"}}
	if err := a.client.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	mk := func(name, digest string) {
		app := &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ApplicationSpec{
				Source: v1alpha1.ApplicationSource{Chart: &v1alpha1.ChartSource{RepoURL: repo.URL, Name: "shop", Version: "3.x", Digest: digest,
					SecretRef: &v1alpha1.LocalObjectReference{Name: "chart-creds"}, Insecure: true}},
				SyncPolicy: automated(true, true),
			},
		}
		a.create(t, app)
	}
	mk("store", digest)
	mk("pinned-wrong", "sha256:"+strings.Repeat("ab", 32))
	app := a.waitApp(t, ns, "store", 30*time.Second, "synced and healthy", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.Health.Status == v1alpha1.HealthHealthy
	})
	if d := settings(t, ns, "store-settings"); d["chartVersion"] != "3.1.0" || d["color"] != "grey" {
		t.Errorf("ConfigMap data %v, want the chart's defaults at 3.1.0", d)
	}
	if app.Status.Sync.Revision != digest || app.Status.Sync.Chart == nil || app.Status.Sync.Chart.Version != "3.1.0" {
		t.Errorf("status.sync = %+v", app.Status.Sync)
	}
	// The preview fetches the chart as the agent does: nothing differs.
	if r := converge(t, "diff", "store", "-n", ns); r.code != 0 || !strings.Contains(r.stderr, "Chart shop 3.1.0") {
		t.Errorf("diff APP of a chart source: exit %d, want 0:\n%s", r.code, r.output())
	}
	bad := a.waitApp(t, ns, "pinned-wrong", 30*time.Second, "FetchFailed naming the digest", func(app *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		return ready != nil && ready.Reason == v1alpha1.ReasonFetchFailed && strings.Contains(ready.Message, "digest")
	})
	if strings.Contains(bad.Status.LastError, "chart-token-5150") {
		t.Error("the status leaks the repository's password")
	}
	if get(t, "v1", "ConfigMap", ns, "pinned-wrong-settings") != nil {
		t.Error("a chart whose digest does not match was applied")
	}
}

// A chart from Git whose dependencies are not vendored: one from a Helm
// repository, one from an OCI registry, one a file:// sibling. The agent
// and `converge build` fetch the first two into the chart cache.
func TestCharts_DependenciesFromARepositoryARegistryAndASibling(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	helmRepo := chartrepo.NewHelmRepo()
	defer helmRepo.Close()
	helmRepo.Add("cache", "1.2.3", chartrepo.Package("cache", "1.2.3", map[string]string{
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cache\ndata:\n  size: {{ .Values.size | quote }}\n",
	}))
	helmRepo.Add("cache", "1.3.0", chartrepo.Package("cache", "1.3.0", nil)) // outside ~1.2.0
	reg := chartrepo.NewRegistry()
	defer reg.Close()
	if _, err := reg.Push("charts/metrics", "0.5.2", chartrepo.Package("metrics", "0.5.2", map[string]string{
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-metrics\ndata:\n  interval: {{ .Values.interval | quote }}\n",
	})); err != nil {
		t.Fatal(err)
	}
	fill := func(files map[string]string) map[string]string {
		for k, v := range files {
			v = strings.ReplaceAll(v, "HELM_REPOSITORY_URL", helmRepo.URL)
			files[k] = strings.ReplaceAll(v, "OCI_REPOSITORY_URL", "oci://"+reg.Host+"/charts")
		}
		return files
	}
	files := fill(corpus(t, "platform-chart", "charts/platform-chart"))
	for k, v := range corpus(t, "platform-chart-common", "charts/platform-chart-common") {
		files[k] = v
	}

	// converge build fetches them too.
	dir := writeTree(t, ns, files)
	r := convergeOffline(t, "build", filepath.Join(dir, "charts/platform-chart"), "--root", dir, "--release-name", "p")
	for _, want := range []string{"name: p-platform", "name: p-cache", `size: "3"`, "name: p-metrics", "interval: 15s", "name: p-common", "team: platform"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("build: exit %d, output lacks %q:\n%s%s", r.code, want, r.stdout, r.stderr)
		}
	}

	repo, rev := a.repoWith(t, ns+"-platform", files, "platform chart")
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "platform", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "charts/platform-chart"},
			SyncPolicy: automated(true, true),
		},
	}
	a.create(t, app)
	a.waitApp(t, ns, "platform", 60*time.Second, "synced and healthy", func(app *v1alpha1.Application) bool {
		return synced(rev)(app) && app.Status.Health.Status == v1alpha1.HealthHealthy
	})
	for name, want := range map[string]map[string]any{
		"platform-cache":   {"size": "3"},
		"platform-metrics": {"interval": "15s"},
		"platform-common":  {"team": "platform"},
	} {
		if got := settings(t, ns, name); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("ConfigMap %s data = %v, want %v", name, got, want)
		}
	}
}

func TestCharts_AppCreateWithAChartAndHelmFlags(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo := chartrepo.NewHelmRepo()
	defer repo.Close()
	repo.Add("shop", "3.2.0", shopChart("3.2.0"))
	r := converge(t, "app", "create", "web", "-n", ns, "--chart-repo", repo.URL, "--chart", "shop", "--chart-version", "3.x",
		"--release-name", "storefront", "--set", "color=red", "--auto-sync", "--self-heal")
	if r.code != 0 {
		t.Fatalf("app create exited %d:\n%s", r.code, r.output())
	}
	a.waitApp(t, ns, "web", 30*time.Second, "synced and healthy", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.Health.Status == v1alpha1.HealthHealthy
	})
	if d := settings(t, ns, "storefront-settings"); d["color"] != "red" || d["chartVersion"] != "3.2.0" {
		t.Errorf("ConfigMap data %v, want color red from --set at chart 3.2.0", d)
	}
}

// Values from a ConfigMap and a Secret, read as the app's account; a
// change to the ConfigMap syncs the app within its interval.
func TestCharts_ValuesFromConfigMapsAndSecrets(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	files := map[string]string{}
	for k, v := range map[string]string{"Chart.yaml": "apiVersion: v2\nname: shop\nversion: 1.0.0\n", "templates/cm.yaml": shopTemplate + "  tier: {{ .Values.tier | quote }}\n", "values.yaml": "color: grey\ntier: free\n"} {
		files["charts/shop/"+k] = v
	}
	repo, _ := a.repoWith(t, ns+"-vf", files, "chart")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "shop-values", Namespace: ns}, Data: map[string]string{"values.yaml": "color: teal\ntier: gold\n"}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "shop-secret-values", Namespace: ns}, StringData: map[string]string{"override.yaml": "tier: platinum\n"}}
	for _, o := range []client.Object{cm, secret} {
		if err := a.client.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
	policy := automated(true, true)
	policy.Interval = &metav1.Duration{Duration: 2 * time.Second}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "charts/shop", Helm: &v1alpha1.HelmSource{
				ValuesFrom: []v1alpha1.ValuesReference{{Kind: "ConfigMap", Name: "shop-values"}, {Kind: "Secret", Name: "shop-secret-values", Key: "override.yaml"}, {Kind: "ConfigMap", Name: "absent", Optional: true}},
			}},
			SyncPolicy: policy,
		},
	}
	a.create(t, app)
	want := func(what, color, tier string) {
		t.Helper()
		kubetest.Eventually(t, 30*time.Second, what, func(context.Context) (bool, error) {
			d := settings(t, ns, "shop-settings")
			return d["color"] == color && d["tier"] == tier, fmt.Errorf("ConfigMap data %v", d)
		})
	}
	want("values from the ConfigMap, then the Secret", "teal", "platinum")
	cm.Data["values.yaml"] = "color: orange\ntier: gold\n"
	if err := a.client.Update(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	want("the changed ConfigMap synced", "orange", "platinum")
}
