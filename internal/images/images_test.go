package images

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"converge.dev/converge/api/v1alpha1"
)

func TestChoose(t *testing.T) {
	tags := []string{"1.0.0", "1.1.0", "2.0.0-rc.1", "latest", "v1.0.5", "main-abc123-1700000002", "main-def456-1700000010", "main-zzz-9", "10", "9", "1.10"}
	for _, tc := range []struct {
		name string
		spec v1alpha1.ImagePolicySpec
		want string
	}{
		{"semver range leaves out prereleases", v1alpha1.ImagePolicySpec{Policy: v1alpha1.ImagePolicyChoice{Semver: &v1alpha1.SemverPolicy{Range: ">=1.0.0 <2.0.0"}}}, "1.10"},
		{"semver prerelease range", v1alpha1.ImagePolicySpec{Policy: v1alpha1.ImagePolicyChoice{Semver: &v1alpha1.SemverPolicy{Range: ">=2.0.0-rc.0 <3"}}}, "2.0.0-rc.1"},
		{"numerical over extracted timestamps", v1alpha1.ImagePolicySpec{
			FilterTags: &v1alpha1.TagFilter{Pattern: `^main-[a-f0-9]+-(?P<ts>[0-9]+)`, Extract: "$ts"},
			Policy:     v1alpha1.ImagePolicyChoice{Numerical: &v1alpha1.OrderPolicy{Order: "asc"}}}, "main-def456-1700000010"},
		{"numerical asc is not alphabetical", v1alpha1.ImagePolicySpec{
			FilterTags: &v1alpha1.TagFilter{Pattern: `^[0-9]+$`},
			Policy:     v1alpha1.ImagePolicyChoice{Numerical: &v1alpha1.OrderPolicy{}}}, "10"},
		{"numerical desc", v1alpha1.ImagePolicySpec{
			FilterTags: &v1alpha1.TagFilter{Pattern: `^[0-9]+$`},
			Policy:     v1alpha1.ImagePolicyChoice{Numerical: &v1alpha1.OrderPolicy{Order: "desc"}}}, "9"},
		{"alphabetical", v1alpha1.ImagePolicySpec{
			FilterTags: &v1alpha1.TagFilter{Pattern: `^main-`},
			Policy:     v1alpha1.ImagePolicyChoice{Alphabetical: &v1alpha1.OrderPolicy{}}}, "main-zzz-9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Choose(tc.spec, tags)
			if err != nil || got != tc.want {
				t.Fatalf("Choose = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := Choose(v1alpha1.ImagePolicySpec{Policy: v1alpha1.ImagePolicyChoice{Semver: &v1alpha1.SemverPolicy{Range: ">=11"}}}, tags); err == nil {
		t.Fatal("no tag within range: want an error")
	}
}

func TestUpdate_KeepsEverythingButTheMarkedValues(t *testing.T) {
	deploy := `# the web tier
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # keep this comment
spec:
  template:
    spec:
      containers:
        - name: web
          image: registry.local/web:1.0.0 # {"$imagepolicy": "team:web"}
        - name: side
          image: "registry.local/side:0.1"  # {"$imagepolicy": "team:other"}
---
# second document
kind: ConfigMap
data:
  tag: '1.0.0' # {"$imagepolicy": "team:web:tag"}
  name:   registry.local/web   # {"$imagepolicy": "team:web:name"}
`
	kust := `images:
  - name: web
    newTag: 1.0.0 # {"$imagepolicy": "team:web:tag"}
`
	latest := map[string]Latest{"team:web": {Name: "registry.local/web", Tag: "1.10"}}
	out, changes, err := Update(map[string][]byte{"deploy.yaml": []byte(deploy), "kustomization.yaml": []byte(kust), "plain.yaml": []byte("a: b\n")}, latest)
	if err != nil {
		t.Fatal(err)
	}
	wantDeploy := strings.Replace(deploy, "registry.local/web:1.0.0 #", "registry.local/web:1.10 #", 1)
	wantDeploy = strings.Replace(wantDeploy, "tag: '1.0.0'", "tag: '1.10'", 1)
	if got := string(out["deploy.yaml"]); got != wantDeploy {
		t.Fatalf("deploy.yaml:\n%s\nwant:\n%s", got, wantDeploy)
	}
	// A plain "1.10" would read back as the number 1.1.
	if got, want := string(out["kustomization.yaml"]), strings.Replace(kust, "newTag: 1.0.0", `newTag: "1.10"`, 1); got != want {
		t.Fatalf("kustomization.yaml:\n%s\nwant:\n%s", got, want)
	}
	if _, ok := out["plain.yaml"]; ok || len(changes) != 3 {
		t.Fatalf("changed %v, %d changes %+v", keys(out), len(changes), changes)
	}
	again, changes, err := Update(out, latest)
	if err != nil || len(again) != 0 || len(changes) != 0 {
		t.Fatalf("a second update changed %v (%v)", keys(again), err)
	}
}

func TestUpdate_RefusesAMarkerItCannotHonour(t *testing.T) {
	for _, doc := range []string{
		"image: web\n  :1.0 # {\"$imagepolicy\": \"team:web\"}\n",
		"image: \"web\\u003a1.0\" # {\"$imagepolicy\": \"team:web\"}\n",
		"digest: x # {\"$imagepolicy\": \"team:web:digest\"}\n",
	} {
		if _, _, err := Update(map[string][]byte{"f.yaml": []byte(doc)}, map[string]Latest{"team:web": {Name: "web", Tag: "2.0"}}); err == nil || !strings.Contains(err.Error(), "f.yaml:") {
			t.Errorf("%q: err = %v, want one naming f.yaml and its line", doc, err)
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestReadManifests_StaysInsideAndSkipsLinks(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "apps", "web"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "apps", "web", "deploy.yaml"), []byte("a: b\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "apps", "README.md"), []byte("x"), 0o644))
	must(os.WriteFile(filepath.Join(outside, "secret.yaml"), []byte("token: x\n"), 0o644))
	must(os.Symlink(outside, filepath.Join(dir, "apps", "out")))
	must(os.Symlink(filepath.Join(outside, "secret.yaml"), filepath.Join(dir, "apps", "link.yaml")))
	must(os.Symlink(outside, filepath.Join(dir, "escape")))
	files, err := ReadManifests(dir, "apps")
	if err != nil || len(files) != 1 || string(files["apps/web/deploy.yaml"]) != "a: b\n" {
		t.Fatalf("files = %v, %v", keys(files), err)
	}
	for _, sub := range []string{"escape", "../" + filepath.Base(outside), "apps/out"} {
		if files, err := ReadManifests(dir, sub); err == nil {
			t.Errorf("path %q: read %v, want an error", sub, keys(files))
		}
	}
}

func TestMessage_BoundsTheTemplate(t *testing.T) {
	data := MessageData{AutomationName: "team/auto", Updates: []PolicyUpdate{{Policy: "team:web", Image: "r/web", OldTag: "1.0.0", NewTag: "1.1.0", Files: []string{"a.yaml"}}}}
	msg, err := Message("", data)
	if err != nil || !strings.Contains(msg, "team:web (r/web): 1.0.0 -> 1.1.0 in a.yaml") {
		t.Fatalf("default message %q, %v", msg, err)
	}
	for _, tpl := range []string{"{{range 1000000000}}x{{end}}", `{{define "x"}}{{end}}`, "{{range .Updates}}{{range 5}}{{end}}{{end}}", "{{range .Updates}}{{with $}}{{range .Updates}}{{with $}}{{range .Updates}}{{end}}{{end}}{{end}}{{end}}{{end}}", strings.Repeat("{{.AutomationName}}", 1000)} {
		if _, err := Message(tpl, data); err == nil {
			t.Errorf("%.40q: want an error", tpl)
		}
	}
}

func TestTagOf(t *testing.T) {
	for in, want := range map[string]string{"registry:5000/web:1.0": "1.0", "web:1.0@sha256:ab": "1.0", "registry:5000/web": "registry:5000/web", "1.2.3": "1.2.3"} {
		if got := TagOf(in); got != want {
			t.Errorf("TagOf(%q) = %q, want %q", in, got, want)
		}
	}
}
