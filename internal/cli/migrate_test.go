package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
)

// The layout flux bootstrap writes: the GitRepository lives in the
// flux-system Kustomize root beside the cluster's Kustomizations; migrate
// renders that root, resolves the sources across the tree, leaves Flux's
// own bootstrap Kustomization out (named), and carries dependsOn and
// postBuild over.
func TestMigrate_ReadsAFluxBootstrapLayout(t *testing.T) {
	var out, errOut bytes.Buffer
	code := Execute(context.Background(), Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut},
		[]string{"migrate", "testdata/flux-bootstrap/clusters/prod"})
	if code != ExitChanges {
		t.Fatalf("exit %d, want 1 (printed, with something left out: the bootstrap Kustomization)\n%s", code, errOut.String())
	}
	apps := map[string]v1alpha1.Application{}
	for _, doc := range strings.Split(out.String(), "\n---\n") {
		var app v1alpha1.Application
		if err := yaml.Unmarshal([]byte(doc), &app); err != nil {
			t.Fatal(err)
		}
		apps[app.Name] = app
	}
	if len(apps) != 2 {
		t.Fatalf("Applications %v, want apps and infrastructure\n%s", keysOf(apps), errOut.String())
	}
	a := apps["apps"]
	if a.Spec.Source.RepoURL != "ssh://git@github.com/example/fleet" || a.Spec.Source.Path != "apps/prod" ||
		a.Spec.Source.SecretRef == nil || a.Spec.Source.SecretRef.Name != "flux-system" {
		t.Errorf("apps source: %+v", a.Spec.Source)
	}
	if len(a.Spec.DependsOn) != 1 || a.Spec.DependsOn[0].Name != "infrastructure" {
		t.Errorf("apps dependsOn: %+v", a.Spec.DependsOn)
	}
	if pb := a.Spec.Source.PostBuild; pb == nil || pb.Substitute["cluster_name"] != "prod" || len(pb.SubstituteFrom) != 1 {
		t.Errorf("apps postBuild: %+v", pb)
	}
	for _, want := range []string{"/clusters/prod/flux-system (kustomize): 3 object(s)", "Kustomization/flux-system/flux-system: metadata.name: Flux's bootstrap Kustomization is not translated"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut.String())
		}
	}
}

func keysOf(m map[string]v1alpha1.Application) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// An Argo CD app-of-apps Helm chart is rendered with its default values
// and its Applications translated, instead of refused as "a helm source".
func TestMigrate_RendersAnArgoCDAppOfAppsChart(t *testing.T) {
	var out, errOut bytes.Buffer
	code := Execute(context.Background(), Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut},
		[]string{"migrate", "testdata/argo-app-of-apps", "-o", "json"})
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
	for _, want := range []string{`"name": "guestbook"`, `"name": "shop"`, `"path": "apps/shop"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %s:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errOut.String(), "testdata/argo-app-of-apps/apps (helm): 2 object(s)") {
		t.Errorf("stderr: %s", errOut.String())
	}
}
