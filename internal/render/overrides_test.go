package render

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/types"
	kyamlresid "sigs.k8s.io/kustomize/kyaml/resid"
)

// Argo CD's source.kustomize overrides apply over the root as an overlay:
// images, a prefix, a namespace, labels, replicas, an inline patch and a
// component below the repository root. Components over a plain
// directory, a component outside the root and a patch by path are refused
// by name.
func TestRender_KustomizeOverridesApplyOverTheRoot(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string][]byte{
		"app/kustomization.yaml":              []byte("resources: [deploy.yaml]\n"),
		"app/deploy.yaml":                     []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx:1.25}]\n"),
		"components/debug/kustomization.yaml": []byte("apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\ncommonAnnotations: {debug: \"on\"}\n"),
		"plain/cm.yaml":                       []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
	})
	over := &KustomizeOverrides{
		Images:       []types.Image{{Name: "nginx", NewName: "registry.example.com/nginx", NewTag: "1.27"}},
		NamePrefix:   "prod-",
		Namespace:    "shop",
		CommonLabels: map[string]string{"team": "a"},
		Replicas:     []types.Replica{{Name: "web", Count: 3}},
		Patches:      []types.Patch{{Patch: "- op: add\n  path: /metadata/annotations/patched\n  value: \"yes\"\n", Target: &types.Selector{ResId: resid(t, "Deployment", "web")}}},
		Components:   []string{"../components/debug"},
	}
	res, err := Render(context.Background(), Options{Root: root, Path: "app", Isolation: "over", Kustomize: over})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Objects) != 1 {
		t.Fatalf("%d objects, want 1", len(res.Objects))
	}
	d := res.Objects[0]
	image := d.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["image"]
	replicas := d.Object["spec"].(map[string]any)["replicas"]
	if d.GetName() != "prod-web" || d.GetNamespace() != "shop" || d.GetLabels()["team"] != "a" || image != "registry.example.com/nginx:1.27" ||
		replicas != int64(3) || d.GetAnnotations()["patched"] != "yes" || d.GetAnnotations()["debug"] != "on" {
		t.Errorf("overridden Deployment: name %s, ns %s, labels %v, annotations %v, image %v, replicas %v", d.GetName(), d.GetNamespace(), d.GetLabels(), d.GetAnnotations(), image, replicas)
	}
	for name, tc := range map[string]struct {
		path string
		over *KustomizeOverrides
		want string
	}{
		"components over manifests": {"plain", &KustomizeOverrides{Components: []string{"../components/debug"}}, "spec.source.kustomize.components: components apply to a Kustomize root only"},
		"a component outside":       {"app", &KustomizeOverrides{Components: []string{"../../etc"}}, "spec.source.kustomize.components[0]"},
		"a patch by path":           {"app", &KustomizeOverrides{Patches: []types.Patch{{Path: "p.yaml"}}}, "spec.source.kustomize.patches[0]: give the patch inline"},
		"a component that is none":  {"app", &KustomizeOverrides{Components: []string{"../plain"}}, "is not a Kustomize component"},
	} {
		_, err := Render(context.Background(), Options{Root: root, Path: tc.path, Isolation: "over", Kustomize: tc.over})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
	}
}

// Flux builds every path with Kustomize, so its Kustomization's overrides
// apply to a plain directory too; its commonMetadata sets labels and
// annotations on each object's own metadata only, and labels without
// selectors (Argo CD's labelWithoutSelector) leave selectors alone: a
// Deployment's selector is immutable.
func TestRender_OverridesOverPlainManifestsAndMetadataOnly(t *testing.T) {
	root := t.TempDir()
	deploy := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {team: old}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx:1.25}]\n"
	writeFiles(t, root, map[string][]byte{
		"plain/deploy.yaml":       []byte(deploy),
		"plain/sub/cm.yaml":       []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n"),
		"kust/kustomization.yaml": []byte("resources: [deploy.yaml]\n"),
		"kust/deploy.yaml":        []byte(deploy),
	})
	over := &KustomizeOverrides{
		NamePrefix:          "p-",
		Images:              []types.Image{{Name: "nginx", NewTag: "1.27"}},
		Patches:             []types.Patch{{Patch: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {patched: \"yes\"}\n"}},
		MetadataLabels:      map[string]string{"team": "platform", "app.kubernetes.io/name": "web"},
		MetadataAnnotations: map[string]string{"owner": "ops"},
	}
	for _, path := range []string{"plain", "kust"} {
		if path == "kust" {
			over.Patches = nil // no ConfigMap there
		}
		res, err := Render(context.Background(), Options{Root: root, Path: path, Isolation: "plain-over", Kustomize: over})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for _, o := range res.Objects {
			if o.GetLabels()["team"] != "platform" || o.GetLabels()["app.kubernetes.io/name"] != "web" || o.GetAnnotations()["owner"] != "ops" || !strings.HasPrefix(o.GetName(), "p-") {
				t.Errorf("%s: %s %s: labels %v, annotations %v", path, o.GetKind(), o.GetName(), o.GetLabels(), o.GetAnnotations())
			}
			if o.GetKind() != "Deployment" {
				continue
			}
			spec := o.Object["spec"].(map[string]any)
			sel := spec["selector"].(map[string]any)["matchLabels"].(map[string]any)
			tmpl := spec["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any)
			image := spec["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["image"]
			if len(sel) != 1 || len(tmpl) != 1 || image != "nginx:1.27" {
				t.Errorf("%s: selector %v, template labels %v, image %v: want the selector and template untouched, the image set", path, sel, tmpl, image)
			}
		}
		if path != "plain" {
			continue
		}
		var got []string
		for _, o := range res.Objects {
			got = append(got, o.GetName()+" "+o.Source+" "+fmt.Sprint(o.Object["data"]))
		}
		if strings.Join(got, ", ") != "p-settings plain/sub/cm.yaml#1 map[patched:yes], p-web plain/deploy.yaml#1 <nil>" {
			t.Errorf("plain: %v: want both objects, each from its file, the ConfigMap patched", got)
		}
	}

	// Labels without selectors: objects and (when asked) templates, never
	// selectors; plain commonLabels reach all three.
	for _, tc := range []struct {
		name               string
		over               KustomizeOverrides
		selector, template int
	}{
		{"commonLabels", KustomizeOverrides{CommonLabels: map[string]string{"env": "prod"}}, 2, 2},
		{"without selector", KustomizeOverrides{CommonLabels: map[string]string{"env": "prod"}, LabelWithoutSelector: true}, 1, 1},
		{"without selector, with templates", KustomizeOverrides{CommonLabels: map[string]string{"env": "prod"}, LabelWithoutSelector: true, LabelIncludeTemplates: true}, 1, 2},
	} {
		res, err := Render(context.Background(), Options{Root: root, Path: "kust", Isolation: "plain-over", Kustomize: &tc.over})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		d := res.Objects[0]
		spec := d.Object["spec"].(map[string]any)
		sel := spec["selector"].(map[string]any)["matchLabels"].(map[string]any)
		tmpl := spec["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any)
		if d.GetLabels()["env"] != "prod" || len(sel) != tc.selector || len(tmpl) != tc.template {
			t.Errorf("%s: labels %v, selector %v, template %v", tc.name, d.GetLabels(), sel, tmpl)
		}
	}
}

func resid(t *testing.T, kind, name string) kyamlresid.ResId {
	t.Helper()
	return kyamlresid.ResId{Gvk: kyamlresid.Gvk{Kind: kind}, Name: name}
}

// Helm options: a post-renderer patches and relabels what the chart
// renders (sources kept), crds/ can be left out, and a missing values
// file is skipped only when asked.
func TestRender_HelmPostRenderersAndOptions(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string][]byte{
		"chart/Chart.yaml":        []byte("apiVersion: v2\nname: c\nversion: 0.1.0\n"),
		"chart/values.yaml":       []byte("replicas: 1\n"),
		"chart/crds/crd.yaml":     []byte("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n"),
		"chart/templates/cm.yaml": []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata: {replicas: \"{{ .Values.replicas }}\"}\n"),
	})
	opts := Options{Root: root, Path: "chart", Isolation: "helm-opts", Helm: HelmOptions{ReleaseName: "r", SkipCRDs: true,
		ValuesFiles: []string{"missing.yaml"}, IgnoreMissingValueFiles: true,
		PostRenderers: []KustomizeOverrides{{CommonLabels: map[string]string{"rendered": "post"},
			Patches: []types.Patch{{Patch: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: r-cm}\ndata: {extra: \"yes\"}\n"}}}}}}
	res, err := Render(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Objects) != 1 {
		t.Fatalf("%d objects, want the ConfigMap alone (crds/ skipped)", len(res.Objects))
	}
	cm := res.Objects[0]
	data := cm.Object["data"].(map[string]any)
	if cm.GetLabels()["rendered"] != "post" || data["extra"] != "yes" || data["replicas"] != "1" || cm.Source != "chart/templates/cm.yaml#1" {
		t.Errorf("post-rendered ConfigMap: labels %v, data %v, source %q", cm.GetLabels(), data, cm.Source)
	}
	opts.Helm.IgnoreMissingValueFiles = false
	if _, err := Render(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("a missing values file without ignoreMissingValueFiles: %v", err)
	}
}
