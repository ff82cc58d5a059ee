package render

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"converge.dev/converge/internal/testutil/chartrepo"
)

// tree writes files (slash paths -> content) under a new directory.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const cmTemplate = `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-{{ .Chart.Name }}
data:
  greeting: {{ .Values.greeting | quote }}
`

func TestRender_HelmFileDependencyFromTheRepository(t *testing.T) {
	root := tree(t, map[string]string{
		"charts/app/Chart.yaml": `apiVersion: v2
name: app
version: 1.0.0
dependencies:
- name: common
  version: ^2.0.0
  repository: file://../../lib/common
`,
		"charts/app/templates/cm.yaml": cmTemplate,
		"charts/app/values.yaml":       "greeting: hi\ncommon:\n  greeting: from-parent\n",
		"lib/common/Chart.yaml":        "apiVersion: v2\nname: common\nversion: 2.3.1\n",
		"lib/common/values.yaml":       "greeting: hello\n",
		"lib/common/templates/cm.yaml": cmTemplate,
	})
	res, err := renderPath(t, root, "charts/app", HelmOptions{ReleaseName: "r", Namespace: "ns"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ConfigMap/r-app <- charts/app/templates/cm.yaml#1",
		"ConfigMap/r-common <- charts/app/charts/common/templates/cm.yaml#1",
	}
	if diff := cmp.Diff(want, refs(res)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	for _, o := range res.Objects {
		if o.GetName() == "r-common" && o.Object["data"].(map[string]any)["greeting"] != "from-parent" {
			t.Errorf("the parent's values did not reach the dependency: %v", o.Object["data"])
		}
	}
}

func TestRender_HelmMissingDependencyIsNamed(t *testing.T) {
	root := tree(t, map[string]string{
		"Chart.yaml": `apiVersion: v2
name: app
version: 1.0.0
dependencies:
- name: redis
  version: 19.x
  repository: https://charts.example.com/stable
`,
		"templates/cm.yaml": cmTemplate,
	})
	_, err := renderPath(t, root, "", HelmOptions{})
	if err == nil || !strings.Contains(err.Error(), `dependency "redis"`) || !strings.Contains(err.Error(), "https://charts.example.com/stable") {
		t.Fatalf("error = %v, want one naming the dependency and its repository", err)
	}
}

func TestRender_HelmFileDependencyCannotLeaveTheRepository(t *testing.T) {
	outside := tree(t, map[string]string{"Chart.yaml": "apiVersion: v2\nname: secret\nversion: 1.0.0\n"})
	for _, repoURL := range []string{"file://../../../../../../../../" + outside, "file://" + outside} {
		root := tree(t, map[string]string{
			"charts/app/Chart.yaml": "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: secret\n  repository: " + repoURL + "\n",
		})
		_, err := renderPath(t, root, "charts/app", HelmOptions{})
		if !errors.Is(err, ErrOutsideRoot) {
			t.Errorf("%s: error = %v, want ErrOutsideRoot", repoURL, err)
		}
	}
}

func TestRender_HelmFileDependencyMismatchIsRefused(t *testing.T) {
	root := tree(t, map[string]string{
		"app/Chart.yaml": "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: lib\n  version: '>=3'\n  repository: file://../lib\n",
		"lib/Chart.yaml": "apiVersion: v2\nname: lib\nversion: 2.0.0\n",
	})
	if _, err := renderPath(t, root, "app", HelmOptions{}); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("error = %v, want a version mismatch", err)
	}
	root = tree(t, map[string]string{
		"app/Chart.yaml": "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: lib\n  repository: file://../app\n",
	})
	if _, err := renderPath(t, root, "app", HelmOptions{}); err == nil {
		t.Error("a chart depending on itself rendered")
	}
}

func TestRender_JsonnetWithImportsLibrariesAndVariables(t *testing.T) {
	root := tree(t, map[string]string{
		"lib/k.libsonnet":            `{ configMap(name, data):: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: name }, data: data } }`,
		"apps/shop/params.libsonnet": `{ replicas: 3 }`,
		"apps/shop/main.jsonnet": `
local k = import 'k.libsonnet';
local params = import 'params.libsonnet';
function(tier='web') {
  settings: k.configMap('settings', { env: std.extVar('env'), tier: tier }),
  list: { apiVersion: 'v1', kind: 'List', items: [k.configMap('a', {}), k.configMap('b', {})] },
  nested: { deep: [k.configMap('c', { replicas: std.toString(params.replicas) })] },
}`,
		"apps/shop/extra.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n",
	})
	res, err := Render(t.Context(), Options{Root: root, Path: "apps/shop", Jsonnet: JsonnetOptions{
		ExtVars: map[string]string{"env": "prod"}, TLAs: map[string]string{"tier": "api"}, LibPaths: []string{"lib"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindJsonnet {
		t.Errorf("kind = %s, want jsonnet", res.Kind)
	}
	var names []string
	for _, o := range res.Objects {
		names = append(names, o.GetName())
		if o.GetName() == "settings" {
			data := o.Object["data"].(map[string]any)
			if data["env"] != "prod" || data["tier"] != "api" {
				t.Errorf("settings data = %v, want the ext var and the TLA", data)
			}
		}
	}
	if diff := cmp.Diff([]string{"a", "b", "c", "plain", "settings"}, names); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
}

func TestRender_JsonnetImportsStayInsideTheRepository(t *testing.T) {
	outside := tree(t, map[string]string{"secret.libsonnet": `{ token: 'hunter2' }`})
	for _, imp := range []string{"../../../../../../../../.." + outside + "/secret.libsonnet", outside + "/secret.libsonnet", "https://example.com/x.libsonnet"} {
		root := tree(t, map[string]string{"main.jsonnet": `(import '` + imp + `') + { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } }`})
		_, err := Render(t.Context(), Options{Root: root})
		if err == nil {
			t.Errorf("import %s: rendered", imp)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("import %s: the error leaks the file: %v", imp, err)
		}
	}
	// std.extVar of an unset variable and a value that is not an object
	// fail, naming the file.
	root := tree(t, map[string]string{"main.jsonnet": `[1, 2]`})
	if _, err := Render(t.Context(), Options{Root: root}); err == nil || !strings.Contains(err.Error(), "main.jsonnet") {
		t.Errorf("error = %v, want one naming main.jsonnet", err)
	}
}

func TestRender_OtherFormatsAreNamedNotSilentlyEmpty(t *testing.T) {
	root := tree(t, map[string]string{
		"cue/app.cue":     "package app\n",
		"cue/service.cue": "package app\n",
		"cue/README.md":   "# app\n",
	})
	_, err := Render(t.Context(), Options{Root: root, Path: "cue"})
	if err == nil || !strings.Contains(err.Error(), "2 CUE file(s)") || !strings.Contains(err.Error(), "cue/app.cue") {
		t.Fatalf("error = %v, want one naming the CUE files", err)
	}
	root = tree(t, map[string]string{
		"app.cue": "package app\n",
		"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
	})
	res, err := Render(t.Context(), Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Objects) != 1 || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "app.cue") {
		t.Errorf("objects %d, warnings %v: want the YAML rendered and the CUE file named", len(res.Objects), res.Warnings)
	}
}

func TestRender_ChartArchiveWithValuesFromTheRepository(t *testing.T) {
	root := tree(t, map[string]string{"env/prod/values.yaml": "greeting: from-git\n"})
	archive := filepath.Join(t.TempDir(), "web.tgz")
	if err := os.WriteFile(archive, chartrepo.Package("web", "1.2.0", map[string]string{
		"templates/cm.yaml": cmTemplate, "values.yaml": "greeting: default\n",
	}), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Render(t.Context(), Options{Root: root, Path: "env/prod", Chart: archive,
		Helm: HelmOptions{ReleaseName: "shop", Namespace: "prod", ValuesFiles: []string{"values.yaml"}}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"ConfigMap/shop-web <- chart:web/templates/cm.yaml#1"}, refs(res)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	if got := res.Objects[0].Object["data"].(map[string]any)["greeting"]; got != "from-git" {
		t.Errorf("greeting = %v, want the value from Git", got)
	}
	// Values files still may not leave the repository.
	_, err = Render(t.Context(), Options{Root: root, Path: "env/prod", Chart: archive,
		Helm: HelmOptions{ValuesFiles: []string{"../../../../../etc/passwd"}}})
	if !errors.Is(err, ErrOutsideRoot) {
		t.Errorf("values outside the root: %v", err)
	}
	// A chart that lists a dependency it does not package is named.
	broken := filepath.Join(t.TempDir(), "broken.tgz")
	_ = os.WriteFile(broken, chartrepo.Package("app", "1.0.0", map[string]string{
		"Chart.yaml": "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: redis\n  repository: https://charts.example.com\n",
	}), 0o644)
	if _, err := Render(t.Context(), Options{Root: root, Chart: broken}); err == nil || !strings.Contains(err.Error(), `dependency "redis"`) {
		t.Errorf("a chart missing a packaged dependency: %v", err)
	}
}

func TestRender_KustomizeBaseOutsideTheRootSaysSo(t *testing.T) {
	root := tree(t, map[string]string{
		"repo/overlay/kustomization.yaml": "resources: [../../base]\n",
		"base/kustomization.yaml":         "resources: [cm.yaml]\n",
		"base/cm.yaml":                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
	})
	_, err := Render(t.Context(), Options{Root: filepath.Join(root, "repo"), Path: "overlay"})
	if !errors.Is(err, ErrOutsideRoot) || !strings.Contains(err.Error(), "leads outside the repository root") || !strings.Contains(err.Error(), "--root") {
		t.Errorf("error = %v, want one saying the base is outside the root and naming --root", err)
	}
}
