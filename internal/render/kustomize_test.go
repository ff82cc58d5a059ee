package render

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// Every field Kustomize loads from, each with a remote reference in a
// spelling of its own, is refused before the build; the server the
// references point at never hears from the render.
func TestRender_KustomizeRemoteReferencesInEveryFieldAreRefused(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprint(w, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stolen\n")
	}))
	defer srv.Close()
	u := srv.URL + "/latest/meta-data"
	head := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
	for name, k := range map[string]string{
		"resources url":                 "resources: [" + u + "]",
		"resources git mixed case host": "resources: [GitHub.com/org/repo]",
		"resources scp-like":            "resources: ['host.example:org/repo']",
		"resources git@":                "resources: ['git@github.com:org/repo.git']",
		"resources ref query":           "resources: ['example.com/org/repo?ref=main']",
		"resources file url":            "resources: ['file:///etc/passwd']",
		"bases":                         "bases: [" + u + "]",
		"components":                    "components: [" + u + "]",
		"crds":                          "resources: [cm.yaml]\ncrds: [" + u + "]",
		"configurations":                "resources: [cm.yaml]\nconfigurations: [" + u + "]",
		"openapi":                       "resources: [cm.yaml]\nopenapi:\n  path: " + u,
		"configMapGenerator files":      "configMapGenerator:\n- name: x\n  files: [" + u + "]",
		"configMapGenerator keyed file": "configMapGenerator:\n- name: x\n  files: ['key=" + u + "']",
		"configMapGenerator envs":       "configMapGenerator:\n- name: x\n  envs: [" + u + "]",
		"secretGenerator env":           "secretGenerator:\n- name: x\n  env: " + u,
		"patches":                       "resources: [cm.yaml]\npatches:\n- path: " + u,
		"patchesStrategicMerge":         "resources: [cm.yaml]\npatchesStrategicMerge: [" + u + "]",
		"patchesJson6902":               "resources: [cm.yaml]\npatchesJson6902:\n- target: {kind: ConfigMap, name: x}\n  path: " + u,
		"replacements":                  "resources: [cm.yaml]\nreplacements:\n- path: " + u,
		"transformers":                  "resources: [cm.yaml]\ntransformers: [" + u + "]",
		"generators":                    "generators: [" + u + "]",
		"validators":                    "resources: [cm.yaml]\nvalidators: [" + u + "]",
		"helmCharts":                    "helmCharts:\n- name: x\n  repo: " + u,
		"in an included base":           "resources: [base]",
	} {
		t.Run(name, func(t *testing.T) {
			root := writeRepo(t, map[string]string{
				"k/kustomization.yaml":      head + k + "\n",
				"k/cm.yaml":                 "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
				"k/base/kustomization.yaml": head + "configMapGenerator:\n- name: y\n  files: [" + u + "]\n",
			})
			_, err := Render(context.Background(), Options{Root: root, Path: "k"})
			if err == nil || !strings.Contains(err.Error(), "kustomization.yaml: ") ||
				!(strings.Contains(err.Error(), "remote references are refused") || strings.Contains(err.Error(), "not supported")) {
				t.Errorf("error = %v, want a refusal naming the kustomization", err)
			}
		})
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("the server received %d request(s)", n)
	}
}

// Inline content is not a reference, and local files in every field still
// work.
func TestRender_KustomizeLocalReferencesAndInlinePatchesWork(t *testing.T) {
	root := writeRepo(t, map[string]string{
		"k/kustomization.yaml": "resources: [cm.yaml]\nconfigMapGenerator:\n- name: gen\n  files: [conf=files/app.conf]\n  envs: [files/app.env]\n" +
			"patches:\n- path: patch.yaml\n- patch: |-\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: x}\n    data: {inline: \"yes\"}\n",
		"k/cm.yaml":        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n",
		"k/patch.yaml":     "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  patched: \"yes\"\n",
		"k/files/app.conf": "setting=1\n",
		"k/files/app.env":  "KEY=value\n",
	})
	res, err := Render(context.Background(), Options{Root: root, Path: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Objects) != 2 {
		t.Fatalf("objects = %v", refs(res))
	}
	if got := res.Objects[1].Object["data"].(map[string]any); got["patched"] != "yes" || got["inline"] != "yes" {
		t.Errorf("data = %v, want both patches applied", got)
	}
}

// FuzzKustomizeReferences: whatever reference the check lets through names
// a file or directory in the repository.
func FuzzKustomizeReferences(f *testing.F) {
	for _, seed := range []string{"cm.yaml", "GitHub.com/x/y", "host:org/repo", "https://x", "../k/cm.yaml", "./", "base?ref=v1", "cm.yaml\n"} {
		f.Add(seed)
	}
	root := f.TempDir()
	for name, content := range map[string]string{"k/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n", "k/kustomization.yaml": ""} {
		if err := os.MkdirAll(root+"/"+name[:strings.LastIndex(name, "/")], 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(root+"/"+name, []byte(content), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, ref string) {
		k := map[string]any{"resources": []any{ref}, "configMapGenerator": []any{map[string]any{"files": []any{"k=" + ref}}}}
		sb, err := openSandbox(root, DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Close()
		for _, r := range kustomizeReferences(k) {
			if strings.Contains(r.path, "\n") {
				t.Fatalf("inline content %q taken for a reference", r.path)
			}
		}
		data := fmt.Sprintf("resources: [%q]\n", ref)
		if err := os.WriteFile(root+"/k/kustomization.yaml", []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if refuseRemote(sb, "k", map[string]bool{}) == nil && !strings.Contains(ref, "\n") && ref != "" {
			if _, err := sb.stat(strings.TrimPrefix(ref, "/")); err != nil {
				if _, err := sb.stat("k/" + ref); err != nil {
					t.Fatalf("reference %q passed the check but is nothing in the repository", ref)
				}
			}
		}
	})
}
