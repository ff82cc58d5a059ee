package render

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRender_PostBuildSubstitutesLikeFlux(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"app/cm.yaml":  "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${app_name}\n  namespace: ${ns:=shop}\ndata:\n  cluster: ${cluster}\n  region: ${region:-eu}\n  literal: $${not_a_var}\n",
		"app/off.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n  annotations: {kustomize.toolkit.fluxcd.io/substitute: disabled}\ndata:\n  script: echo ${HOME}\n",
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Render(context.Background(), Options{Root: root, Path: "app", Isolation: "subst",
		Substitute: &Substitution{Vars: map[string]string{"app_name": "web", "cluster": "prod-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Object{}
	for _, o := range res.Objects {
		byName[o.GetName()] = o
	}
	web, ok := byName["web"]
	if !ok {
		t.Fatalf("objects %v, want web", res.Objects)
	}
	data := web.Object["data"].(map[string]any)
	if web.GetNamespace() != "shop" || data["cluster"] != "prod-1" || data["region"] != "eu" || data["literal"] != "${not_a_var}" {
		t.Errorf("substituted: namespace %q, data %v", web.GetNamespace(), data)
	}
	if kept := byName["kept"].Object["data"].(map[string]any)["script"]; kept != "echo ${HOME}" {
		t.Errorf("a disabled object was substituted: %q", kept)
	}

	// Strict: an undefined variable without a default names itself and
	// the object.
	_, err = Render(context.Background(), Options{Root: root, Path: "app", Isolation: "subst",
		Substitute: &Substitution{Vars: map[string]string{"app_name": "web"}, Strict: true}})
	if err == nil || !strings.Contains(err.Error(), "cluster") || !strings.Contains(err.Error(), "ConfigMap") {
		t.Fatalf("strict with cluster undefined: %v", err)
	}
}
