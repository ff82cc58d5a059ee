// Package compat is the compatibility corpus: application directories
// shaped like real repositories (test/e2e uses them on the local cluster).
// Its tests check that converge renders each one exactly as the tool the
// repository was written for: Helm's SDK (`helm template`) and go-jsonnet.
package compat

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-jsonnet"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/cli"
	"helm.sh/helm/v4/pkg/downloader"
	"helm.sh/helm/v4/pkg/getter"
	"helm.sh/helm/v4/pkg/registry"
	release "helm.sh/helm/v4/pkg/release/v1"
	repo "helm.sh/helm/v4/pkg/repo/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/testutil/chartrepo"
)

// canonical maps each object ("Kind/namespace/name") to its JSON.
func canonical(t *testing.T, objs []map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, o := range objs {
		u := &unstructured.Unstructured{Object: o}
		data, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		out[render.Ref(u)] = string(data)
	}
	return out
}

func convergeRender(t *testing.T, dir string, opts render.Options) map[string]string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	opts.Root = abs
	res, err := render.Render(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	objs := make([]map[string]any, len(res.Objects))
	for i, o := range res.Objects {
		objs[i] = o.Object
	}
	return canonical(t, objs)
}

// helmTemplate renders a chart as `helm template --include-crds` would,
// through Helm's SDK, after `helm dependency build` on it (a copy, made by
// the caller when the chart must not change).
func helmTemplate(t *testing.T, work, releaseName, namespace string, values map[string]any, repos ...string) map[string]string {
	t.Helper()
	settings := cli.New()
	repoConfig := filepath.Join(t.TempDir(), "repositories.yaml")
	file := repo.NewFile()
	for i, u := range repos {
		file.Update(&repo.Entry{Name: fmt.Sprintf("r%d", i), URL: u})
	}
	if err := file.WriteFile(repoConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := registry.NewClient(registry.ClientOptPlainHTTP(), registry.ClientOptCredentialsFile(filepath.Join(t.TempDir(), "creds.json")))
	if err != nil {
		t.Fatal(err)
	}
	man := &downloader.Manager{
		Out: io.Discard, ChartPath: work, Getters: getter.All(settings), RegistryClient: rc,
		RepositoryConfig: repoConfig, RepositoryCache: t.TempDir(), ContentCache: t.TempDir(),
	}
	if err := man.Build(); err != nil {
		t.Fatalf("helm dependency build: %v", err)
	}
	ch, err := loader.Load(work)
	if err != nil {
		t.Fatal(err)
	}
	install := action.NewInstall(action.NewConfiguration())
	install.DryRunStrategy = action.DryRunClient
	install.Replace = true
	install.IncludeCRDs = true
	install.ReleaseName, install.Namespace = releaseName, namespace
	rel, err := install.Run(ch, values)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	r := rel.(*release.Release)
	manifests := r.Manifest
	for _, h := range r.Hooks {
		if strings.Contains(h.Manifest, "helm.sh/hook: test") {
			continue // `helm template` prints test hooks; no sync runs them
		}
		manifests += "\n---\n" + h.Manifest
	}
	return canonical(t, decodeAll(t, manifests))
}

func decodeAll(t *testing.T, stream string) []map[string]any {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	var out []map[string]any
	for {
		var o map[string]any
		if err := dec.Decode(&o); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		if o != nil {
			out = append(out, o)
		}
	}
}

func compare(t *testing.T, want, got map[string]string) {
	t.Helper()
	if len(got) == 0 {
		t.Fatal("converge rendered nothing")
	}
	keys := func(m map[string]string) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		sort.Strings(k)
		return k
	}
	if diff := cmp.Diff(keys(want), keys(got)); diff != "" {
		t.Fatalf("objects (-reference +converge):\n%s", diff)
	}
	for k, w := range want {
		var a, b any
		_ = json.Unmarshal([]byte(w), &a)
		_ = json.Unmarshal([]byte(got[k]), &b)
		if diff := cmp.Diff(a, b); diff != "" {
			t.Errorf("%s (-reference +converge):\n%s", k, diff)
		}
	}
}

func TestReference_HelmChartsRenderAsHelmTemplate(t *testing.T) {
	for _, c := range []struct {
		dir    string
		values map[string]any
	}{
		{dir: "admission-chart"},
		{dir: "admission-chart", values: map[string]any{"replicas": 3, "admission": map[string]any{"failurePolicy": "Fail"}}},
		{dir: "umbrella"},
	} {
		t.Run(c.dir, func(t *testing.T) {
			want := helmTemplate(t, copyDir(t, c.dir), "demo", "shop", c.values)
			got := convergeRender(t, c.dir, render.Options{Helm: render.HelmOptions{ReleaseName: "demo", Namespace: "shop", Values: c.values}})
			compare(t, want, got)
		})
	}
}

func copyDir(t *testing.T, dir string) string {
	t.Helper()
	work := filepath.Join(t.TempDir(), filepath.Base(dir))
	if err := os.CopyFS(work, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	return work
}

// A chart whose dependencies come from a Helm repository, an OCI registry
// and a file:// sibling, none vendored: converge fetches the first two
// itself; Helm needs `helm dependency build`.
func TestReference_DependenciesFromRepositoriesRenderAsHelmTemplate(t *testing.T) {
	helmRepo := chartrepo.NewHelmRepo()
	defer helmRepo.Close()
	helmRepo.Add("cache", "1.2.3", chartrepo.Package("cache", "1.2.3", map[string]string{
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cache\ndata:\n  size: {{ .Values.size | quote }}\n",
	}))
	reg := chartrepo.NewRegistry()
	defer reg.Close()
	if _, err := reg.Push("charts/metrics", "0.5.2", chartrepo.Package("metrics", "0.5.2", map[string]string{
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-metrics\ndata:\n  interval: {{ .Values.interval | quote }}\n",
	})); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, d := range []string{"platform-chart", "platform-chart-common"} {
		if err := os.CopyFS(filepath.Join(root, d), os.DirFS(d)); err != nil {
			t.Fatal(err)
		}
	}
	chartYAML := filepath.Join(root, "platform-chart", "Chart.yaml")
	data, err := os.ReadFile(chartYAML)
	if err != nil {
		t.Fatal(err)
	}
	data = []byte(strings.NewReplacer("HELM_REPOSITORY_URL", helmRepo.URL, "OCI_REPOSITORY_URL", "oci://"+reg.Host+"/charts").Replace(string(data)))
	if err := os.WriteFile(chartYAML, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cache, err := charts.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, err := cache.Render(t.Context(), render.Options{Root: root, Path: "platform-chart", Helm: render.HelmOptions{ReleaseName: "demo", Namespace: "shop"}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	objs := make([]map[string]any, len(res.Objects))
	for i, o := range res.Objects {
		objs[i] = o.Object
	}
	want := helmTemplate(t, filepath.Join(root, "platform-chart"), "demo", "shop", nil, helmRepo.URL)
	compare(t, want, canonical(t, objs))
	if len(want) != 4 {
		t.Errorf("helm rendered %d objects, want 4 (the chart and its three dependencies)", len(want))
	}
}

func TestReference_JsonnetRendersAsGoJsonnet(t *testing.T) {
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{"jsonnet-app"}})
	vm.ExtVar("environment", "staging")
	vm.TLAVar("tier", "api")
	out, err := vm.EvaluateFile("jsonnet-app/main.jsonnet")
	if err != nil {
		t.Fatal(err)
	}
	var byField map[string]map[string]any
	if err := json.Unmarshal([]byte(out), &byField); err != nil {
		t.Fatal(err)
	}
	var objs []map[string]any
	for _, o := range byField {
		objs = append(objs, o)
	}
	got := convergeRender(t, "jsonnet-app", render.Options{Jsonnet: render.JsonnetOptions{
		ExtVars: map[string]string{"environment": "staging"}, TLAs: map[string]string{"tier": "api"},
	}})
	compare(t, canonical(t, objs), got)
}

// The corpus's YAML stays parseable (a guard against editing mistakes).
func TestCorpus_ValuesFilesParse(t *testing.T) {
	files, _ := filepath.Glob("*/values.yaml")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(data, &v); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
