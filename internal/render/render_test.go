package render

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const repo = "testdata/repo"

func renderPath(t *testing.T, root, path string, helm HelmOptions) (*Result, error) {
	t.Helper()
	return Render(context.Background(), Options{Root: root, Path: path, Helm: helm})
}

func refs(res *Result) []string {
	var out []string
	for _, o := range res.Objects {
		out = append(out, o.Ref()+" <- "+o.Source)
	}
	return out
}

func TestRender_DirectoryIsRecursiveMultiDocumentAndSorted(t *testing.T) {
	res, err := renderPath(t, repo, "plain", HelmOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Sorted by group, kind, namespace, name: the core group ("") first.
	want := []string{
		"ConfigMap/settings <- plain/app.yaml#1",
		"Service/web <- plain/app.yaml#2",
		"ServiceAccount/runner <- plain/nested/list.yaml#1",
		"Deployment/web <- plain/nested/deploy.json#1",
	}
	if diff := cmp.Diff(want, refs(res)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	if res.Kind != KindDirectory {
		t.Errorf("kind = %s", res.Kind)
	}
	warnings := strings.Join(res.Warnings, "\n")
	for _, w := range []string{"plain/values.yaml: skipped", "plain/chart-inside: skipped"} {
		if !strings.Contains(warnings, w) {
			t.Errorf("warnings lack %q:\n%s", w, warnings)
		}
	}
}

func TestRender_BrokenYAMLNamesFileDocumentAndLine(t *testing.T) {
	_, err := renderPath(t, repo, "broken", HelmOptions{})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"broken/bad.yaml", "document 2", "line 9"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestRender_InvalidObjectsAreNamed(t *testing.T) {
	cases := map[string]struct{ content, want string }{
		"no name":                         {"apiVersion: v1\nkind: ConfigMap\n", "m.yaml#1: a ConfigMap has no metadata.name"},
		"no kind":                         {"apiVersion: v1\nmetadata: {name: x}\n", `m.yaml#1: object "x" has no kind`},
		"duplicate":                       {"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "m.yaml#2: ConfigMap/x is also defined in m.yaml#1"},
		"no apiVersion and kind mixed in": {"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\nfoo: bar\n", "m.yaml#2: document has no apiVersion and no kind"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := renderPath(t, dir, ".", HelmOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestRender_SymlinkOutsideRootIsRefused(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret.yaml")
	if err := os.WriteFile(secret, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(root, "app", "link.yaml")); err != nil {
		t.Fatal(err)
	}
	_, err := renderPath(t, root, "app", HelmOptions{})
	if !errors.Is(err, ErrOutsideRoot) || !strings.Contains(err.Error(), "app/link.yaml") {
		t.Errorf("error = %v, want ErrOutsideRoot naming app/link.yaml", err)
	}
}

func TestRender_SymlinkedDirectoryOutsideRootIsRefused(t *testing.T) {
	outside := t.TempDir()
	root := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "app")); err != nil {
		t.Fatal(err)
	}
	_, err := renderPath(t, root, "app", HelmOptions{})
	if !errors.Is(err, ErrOutsideRoot) {
		t.Errorf("error = %v, want ErrOutsideRoot", err)
	}
}

func TestRender_PathOutsideRootIsRefused(t *testing.T) {
	_, err := renderPath(t, repo+"/plain", "../broken", HelmOptions{})
	if !errors.Is(err, ErrOutsideRoot) {
		t.Errorf("error = %v, want ErrOutsideRoot", err)
	}
}

func TestRender_HugeFileIsRefused(t *testing.T) {
	root := t.TempDir()
	big := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n  x: \"" + strings.Repeat("a", 2<<10) + "\"\n"
	if err := os.WriteFile(filepath.Join(root, "big.yaml"), []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Render(context.Background(), Options{Root: root, Limits: Limits{MaxFileSize: 1 << 10}})
	if err == nil || !strings.Contains(err.Error(), "big.yaml: file is") {
		t.Errorf("error = %v, want the size limit naming big.yaml", err)
	}
}

func TestRender_KustomizeOverlayFollowsBaseInsideRoot(t *testing.T) {
	res, err := renderPath(t, repo, "app/overlays/prod", HelmOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindKustomize {
		t.Errorf("kind = %s", res.Kind)
	}
	var names []string
	for _, o := range res.Objects {
		names = append(names, o.Ref())
		if o.GetKind() == "Deployment" {
			if r, _, _ := unstructured.NestedInt64(o.Object, "spec", "replicas"); r != 3 {
				t.Errorf("replicas = %d, want 3 from the overlay patch", r)
			}
		}
	}
	if len(names) != 2 || names[1] != "Deployment/prod-web" || !strings.HasPrefix(names[0], "ConfigMap/prod-settings-") {
		t.Errorf("objects = %v", names)
	}
}

func TestRender_KustomizeRemoteBaseIsRefused(t *testing.T) {
	_, err := renderPath(t, repo, "remote", HelmOptions{})
	if err == nil || !strings.Contains(err.Error(), "remote/kustomization.yaml: resources[0]: ") || !strings.Contains(err.Error(), "remote references are refused") {
		t.Errorf("error = %v", err)
	}
}

func TestRender_KustomizeCannotReadOutsideRoot(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(root, outside)
	k := "resources:\n- " + filepath.ToSlash(filepath.Join(rel, "cm.yaml")) + "\n"
	if err := os.WriteFile(filepath.Join(root, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := renderPath(t, root, ".", HelmOptions{})
	if err == nil {
		t.Fatalf("rendered %v from outside the root", refs(res))
	}
}

func TestRender_HelmChartWithValuesDependenciesAndCRDs(t *testing.T) {
	res, err := renderPath(t, repo, "charts/web", HelmOptions{
		ReleaseName: "shop",
		Namespace:   "prod",
		ValuesFiles: []string{"prod-values.yaml"},
		Values:      map[string]any{"image": "nginx:1.28"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindHelm {
		t.Errorf("kind = %s", res.Kind)
	}
	want := []string{
		"ConfigMap/shop-cache <- charts/web/charts/cache/templates/cm.yaml#1",
		"CustomResourceDefinition/widgets.example.converge.dev <- charts/web/crds/widgets.yaml#1",
		"Deployment/prod/shop-web <- charts/web/templates/deploy.yaml#1",
	}
	if diff := cmp.Diff(want, refs(res)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	for _, o := range res.Objects {
		if o.GetKind() != "Deployment" {
			continue
		}
		if r, _, _ := unstructured.NestedInt64(o.Object, "spec", "replicas"); r != 4 {
			t.Errorf("replicas = %d, want 4 from prod-values.yaml", r)
		}
		if got := o.GetLabels()["app.kubernetes.io/instance"]; got != "shop" {
			t.Errorf("instance label = %q", got)
		}
	}
}

func TestRender_HelmConditionDisablesDependency(t *testing.T) {
	res, err := renderPath(t, repo, "charts/web", HelmOptions{Values: map[string]any{"cache": map[string]any{"enabled": false}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range res.Objects {
		if strings.Contains(o.GetName(), "cache") {
			t.Errorf("disabled dependency rendered %s", o.Ref())
		}
	}
}

func TestRender_HelmValuesFileOutsideRootIsRefused(t *testing.T) {
	_, err := renderPath(t, repo, "charts/web", HelmOptions{ValuesFiles: []string{"../../../../go.mod"}})
	if !errors.Is(err, ErrOutsideRoot) {
		t.Errorf("error = %v, want ErrOutsideRoot", err)
	}
}
