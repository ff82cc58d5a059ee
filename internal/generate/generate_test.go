package generate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"converge.dev/converge/api/v1alpha1"
)

func write(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func names(sets []Params, key string) []string {
	out := make([]string, len(sets))
	for i, p := range sets {
		out[i] = p[key]
	}
	return out
}

func TestGitDirectoriesAndFiles(t *testing.T) {
	root := t.TempDir()
	write(t, root, map[string]string{
		"apps/web/kustomization.yaml":  "",
		"apps/db/kustomization.yaml":   "",
		"apps/old/kustomization.yaml":  "",
		"apps/web/deep/x.yaml":         "",
		"clusters/eu/config.yaml":      "region: eu\nreplicas: 3\nlabels: {tier: gold}\n",
		"clusters/us/config.yaml":      "- {region: us-east}\n- {region: us-west}\n",
		".git/config":                  "",
		"apps/.git-not-really/x.yaml":  "",
		"outside-the-pattern/app.yaml": "",
	})
	// A link to a directory is never a match (checkouts hold none, but
	// a generator must not follow one either).
	if err := os.Symlink("/etc", filepath.Join(root, "apps", "etc")); err != nil {
		t.Fatal(err)
	}
	repo := "https://git.example.com/fleet"
	dirs := &v1alpha1.GitGenerator{RepoURL: repo, Directories: []v1alpha1.GitPathPattern{{Path: "apps/*"}, {Path: "apps/old", Exclude: true}}}
	files := &v1alpha1.GitGenerator{RepoURL: repo, Files: []v1alpha1.GitPathPattern{{Path: "clusters/*/config.yaml"}}}
	src := Sources{Checkouts: map[string]string{GitKey(dirs): root}}

	sets, err := Run([]v1alpha1.Generator{{Git: dirs}}, src, &Budget{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(sets, "path"), []string{"apps/.git-not-really", "apps/db", "apps/web"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("directories: %v, want %v", got, want)
	}
	if sets[2]["path.basename"] != "web" || sets[2]["path[0]"] != "apps" || sets[2]["path[1]"] != "web" {
		t.Fatalf("directory params: %v", sets[2])
	}

	sets, err = Run([]v1alpha1.Generator{{Git: files}}, src, &Budget{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(sets, "region"), []string{"eu", "us-east", "us-west"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("files: %v, want %v", got, want)
	}
	if sets[0]["labels.tier"] != "gold" || sets[0]["replicas"] != "3" || sets[0]["path.basename"] != "eu" || sets[0]["path.filename"] != "config.yaml" {
		t.Fatalf("file params: %v", sets[0])
	}

	for _, bad := range []string{"../*", "/etc/*", "apps/[", ""} {
		g := &v1alpha1.GitGenerator{RepoURL: repo, Directories: []v1alpha1.GitPathPattern{{Path: bad}}}
		if _, err := Run([]v1alpha1.Generator{{Git: g}}, src, &Budget{}); err == nil || !strings.Contains(err.Error(), "spec.generators[0]") {
			t.Errorf("pattern %q: %v", bad, err)
		}
	}
}

func TestClustersAndMatrix(t *testing.T) {
	cl := func(name, env string) v1alpha1.Cluster {
		return v1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"env": env}},
			Spec: v1alpha1.ClusterSpec{Server: "https://" + name}}
	}
	src := Sources{Clusters: []v1alpha1.Cluster{cl("prod-b", "prod"), cl("staging", "staging"), cl("prod-a", "prod")}}
	prod := v1alpha1.ClustersGenerator{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}, Values: map[string]string{"size": "l"}}
	teams := v1alpha1.ListGenerator{Elements: []map[string]string{{"team": "a"}, {"team": "b"}}}
	sets, err := Run([]v1alpha1.Generator{{Matrix: &v1alpha1.MatrixGenerator{Generators: []v1alpha1.NestedGenerator{{Clusters: &prod}, {List: &teams}}}}}, src, &Budget{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range sets {
		got = append(got, p["name"]+"/"+p["team"]+"/"+p["labels.env"]+"/"+p["values.size"])
	}
	want := []string{"prod-a/a/prod/l", "prod-a/b/prod/l", "prod-b/a/prod/l", "prod-b/b/prod/l"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("matrix: %v, want %v", got, want)
	}
}

func TestFill(t *testing.T) {
	tmpl := v1alpha1.ApplicationTemplate{
		Metadata: v1alpha1.ApplicationTemplateMeta{Name: "{{path.basename}}-{{ env }}", Labels: map[string]string{"env": "{{env}}"}},
		Spec: rawSpec(t, v1alpha1.ApplicationSpec{
			Source:      v1alpha1.ApplicationSource{RepoURL: "https://git.example.com/fleet", Path: "{{path}}"},
			Destination: v1alpha1.ApplicationDestination{Namespace: "{{path.basename}}", Cluster: "{{cluster}}"},
		}),
	}
	app, err := Fill(tmpl, Params{"path": "apps/web", "path.basename": "web", "env": "prod", "cluster": "eu-1"}, "platform", &Budget{})
	if err != nil {
		t.Fatal(err)
	}
	if app.Name != "web-prod" || app.Namespace != "platform" || app.Labels["env"] != "prod" || app.Spec.Source.Path != "apps/web" ||
		app.Spec.Destination.Namespace != "web" || app.Spec.Destination.Cluster != "eu-1" {
		t.Fatalf("filled: %+v", app)
	}
	if _, err := Fill(tmpl, Params{"path": "x", "path.basename": "x"}, "platform", &Budget{}); err == nil || !strings.Contains(err.Error(), "no parameter cluster, env") {
		t.Fatalf("missing parameters: %v", err)
	}
	// A value is text: quotes and braces add no structure.
	app, err = Fill(tmpl, Params{"path": `x", "serviceAccountName": "admin`, "path.basename": "web", "env": "prod", "cluster": "c"}, "platform", &Budget{})
	if err != nil {
		t.Fatal(err)
	}
	if app.Spec.ServiceAccountName != "" || app.Spec.Source.Path != `x", "serviceAccountName": "admin` {
		t.Fatalf("a parameter changed the structure: %+v", app.Spec)
	}
	if _, err := Fill(tmpl, Params{"path": "x", "path.basename": "Not_A_Name", "env": "p", "cluster": "c"}, "platform", &Budget{}); err == nil || !strings.Contains(err.Error(), "metadata.name") {
		t.Fatalf("invalid name: %v", err)
	}
	tmpl.Spec = runtime.RawExtension{Raw: []byte(`{"source":{"repoURL":"x"},"sourec":{}}`)}
	if _, err := Fill(tmpl, Params{"path.basename": "web", "env": "p"}, "platform", &Budget{}); err == nil || !strings.Contains(err.Error(), `unknown field "sourec"`) {
		t.Fatalf("a misspelt field: %v", err)
	}
}

func rawSpec(t *testing.T, spec v1alpha1.ApplicationSpec) runtime.RawExtension {
	t.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return runtime.RawExtension{Raw: raw}
}

func TestLeaves(t *testing.T) {
	git := &v1alpha1.GitGenerator{RepoURL: "https://git.example.com/fleet"}
	list := &v1alpha1.ListGenerator{Elements: []map[string]string{{"a": "b"}}}
	clusters := &v1alpha1.ClustersGenerator{}
	got := Leaves([]v1alpha1.Generator{{List: list}, {Matrix: &v1alpha1.MatrixGenerator{Generators: []v1alpha1.NestedGenerator{{Clusters: clusters}, {Git: git}}}}})
	if len(got) != 3 || got[0].List != list || got[1].Clusters != clusters || got[2].Git != git {
		t.Fatalf("leaves: %+v", got)
	}
}
