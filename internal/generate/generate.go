// Package generate turns an ApplicationSet's generators into parameter
// sets and its template into Applications. It does no I/O of its own: the
// caller fetches the repositories (a checkout directory) and lists the
// Clusters, so the same sources and caches serve sets and Applications.
package generate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
)

// Params is one parameter set.
type Params map[string]string

// Limits bound what a generator may produce from hostile input.
const (
	// MaxSets is the most parameter sets one set may produce.
	MaxSets = 5000
	// MaxFileSize is the largest parameter file read.
	MaxFileSize = 1 << 20
)

// Sources are what generators read: the Clusters, and a checkout per Git
// generator (by its position in the spec, see GitKey).
type Sources struct {
	Clusters []v1alpha1.Cluster
	// Checkouts maps GitKey(g) to the directory its repository was
	// checked out in.
	Checkouts map[string]string
}

// GitKey identifies a Git generator's checkout: its repository and ref.
func GitKey(g *v1alpha1.GitGenerator) string {
	ref := ""
	if r := g.Ref; r != nil {
		ref = r.Branch + "|" + r.Tag + "|" + r.Semver + "|" + r.Commit
	}
	return g.RepoURL + "#" + ref
}

// Leaves are the generators of gens that read something: each one, or a
// matrix's two.
func Leaves(gens []v1alpha1.Generator) []v1alpha1.NestedGenerator {
	var out []v1alpha1.NestedGenerator
	for _, g := range gens {
		if g.Matrix != nil {
			out = append(out, g.Matrix.Generators...)
			continue
		}
		out = append(out, v1alpha1.NestedGenerator{List: g.List, Clusters: g.Clusters, Git: g.Git})
	}
	return out
}

// Run produces every generator's parameter sets, in order.
func Run(gens []v1alpha1.Generator, src Sources) ([]Params, error) {
	var out []Params
	for i, g := range gens {
		sets, err := one(v1alpha1.NestedGenerator{List: g.List, Clusters: g.Clusters, Git: g.Git}, g.Matrix, src)
		if err != nil {
			return nil, fmt.Errorf("spec.generators[%d]: %w", i, err)
		}
		out = append(out, sets...)
		if len(out) > MaxSets {
			return nil, fmt.Errorf("the generators produce more than %d parameter sets", MaxSets)
		}
	}
	return out, nil
}

func one(g v1alpha1.NestedGenerator, matrix *v1alpha1.MatrixGenerator, src Sources) ([]Params, error) {
	switch {
	case matrix != nil:
		if len(matrix.Generators) != 2 {
			return nil, fmt.Errorf("matrix: want two generators, have %d", len(matrix.Generators))
		}
		a, err := one(matrix.Generators[0], nil, src)
		if err != nil {
			return nil, fmt.Errorf("matrix.generators[0]: %w", err)
		}
		b, err := one(matrix.Generators[1], nil, src)
		if err != nil {
			return nil, fmt.Errorf("matrix.generators[1]: %w", err)
		}
		if len(a)*len(b) > MaxSets {
			return nil, fmt.Errorf("matrix: %d × %d parameter sets is more than %d", len(a), len(b), MaxSets)
		}
		out := make([]Params, 0, len(a)*len(b))
		for _, x := range a {
			for _, y := range b {
				p := Params{}
				for k, v := range x {
					p[k] = v
				}
				for k, v := range y {
					p[k] = v
				}
				out = append(out, p)
			}
		}
		return out, nil
	case g.List != nil:
		out := make([]Params, 0, len(g.List.Elements))
		for _, e := range g.List.Elements {
			p := Params{}
			for k, v := range e {
				p[k] = v
			}
			out = append(out, p)
		}
		return out, nil
	case g.Clusters != nil:
		return clusters(g.Clusters, src.Clusters)
	case g.Git != nil:
		dir, ok := src.Checkouts[GitKey(g.Git)]
		if !ok {
			return nil, fmt.Errorf("git %s: not fetched", g.Git.RepoURL)
		}
		return git(g.Git, dir)
	}
	return nil, fmt.Errorf("no generator given (list, clusters, git or matrix)")
}

func clusters(g *v1alpha1.ClustersGenerator, all []v1alpha1.Cluster) ([]Params, error) {
	sel, err := metav1.LabelSelectorAsSelector(&g.Selector)
	if err != nil {
		return nil, fmt.Errorf("clusters.selector: %w", err)
	}
	var out []Params
	for _, c := range all {
		if !sel.Matches(labels.Set(c.Labels)) {
			continue
		}
		p := Params{"name": c.Name, "server": c.Spec.Server}
		for k, v := range c.Labels {
			p["labels."+k] = v
		}
		for k, v := range g.Values {
			p["values."+k] = v
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["name"] < out[j]["name"] })
	return out, nil
}

// git produces a set per matching directory or file of the checkout in
// root. Patterns are relative to the repository root and may not leave
// it; links are never followed (checkouts hold none).
func git(g *v1alpha1.GitGenerator, root string) ([]Params, error) {
	if len(g.Directories) > 0 && len(g.Files) > 0 {
		return nil, fmt.Errorf("git %s: directories and files are separate generators", g.RepoURL)
	}
	if len(g.Directories) == 0 && len(g.Files) == 0 {
		return nil, fmt.Errorf("git %s: give directories or files", g.RepoURL)
	}
	patterns := g.Directories
	wantDir := true
	if len(g.Files) > 0 {
		patterns, wantDir = g.Files, false
	}
	for _, p := range patterns {
		if err := checkPattern(p.Path); err != nil {
			return nil, err
		}
	}
	var matched []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if rel == "." || d.Type()&fs.ModeSymlink != 0 || d.IsDir() != wantDir {
			return nil
		}
		include := false
		for _, pat := range patterns {
			if ok, _ := path.Match(pat.Path, rel); ok {
				if pat.Exclude {
					return nil
				}
				include = true
			}
		}
		if include {
			matched = append(matched, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("git %s: %w", g.RepoURL, err)
	}
	sort.Strings(matched)
	var out []Params
	for _, rel := range matched {
		if wantDir {
			out = append(out, pathParams(rel))
			continue
		}
		sets, err := fileParams(root, rel)
		if err != nil {
			return nil, fmt.Errorf("git %s: %s: %w", g.RepoURL, rel, err)
		}
		dir := path.Dir(rel)
		for _, p := range sets {
			for k, v := range pathParams(dir) {
				p[k] = v
			}
			p["path.filename"] = path.Base(rel)
			out = append(out, p)
			if len(out) > MaxSets {
				return nil, fmt.Errorf("git %s: more than %d parameter sets", g.RepoURL, MaxSets)
			}
		}
	}
	return out, nil
}

func checkPattern(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "..") || strings.ContainsRune(p, '\\') {
		return fmt.Errorf("path pattern %q: want a relative glob inside the repository (no leading /, no ..)", p)
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("path pattern %q: %w", p, err)
	}
	return nil
}

// pathParams are a directory's parameters: path, path.basename and each
// segment as path[i].
func pathParams(rel string) Params {
	p := Params{"path": rel, "path.basename": path.Base(rel)}
	for i, seg := range strings.Split(rel, "/") {
		p["path["+strconv.Itoa(i)+"]"] = seg
	}
	return p
}

// fileParams reads a YAML or JSON file: a map is one set, a list of maps
// one set each; nested keys are joined with dots, lists by index.
func fileParams(root, rel string) ([]Params, error) {
	full := filepath.Join(root, filepath.FromSlash(rel))
	info, err := os.Lstat(full)
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	if info.Size() > MaxFileSize {
		return nil, fmt.Errorf("%d bytes is more than the %d a parameter file may have", info.Size(), MaxFileSize)
	}
	data, err := os.ReadFile(full)
	if err != nil {
		return nil, err
	}
	raw, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not YAML or JSON: %w", err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	var items []any
	switch t := v.(type) {
	case map[string]any:
		items = []any{t}
	case []any:
		items = t
	default:
		return nil, fmt.Errorf("want a map or a list of maps")
	}
	out := make([]Params, 0, len(items))
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("item %d: want a map", i)
		}
		p := Params{}
		flatten("", m, p)
		out = append(out, p)
	}
	return out, nil
}

func flatten(prefix string, v any, out Params) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			flatten(key, x, out)
		}
	case []any:
		for i, x := range t {
			flatten(prefix+"["+strconv.Itoa(i)+"]", x, out)
		}
	case nil:
		out[prefix] = ""
	case string:
		out[prefix] = t
	default:
		b, _ := json.Marshal(t)
		out[prefix] = string(b)
	}
}

var placeholder = regexp.MustCompile(`\{\{\s*([^{}\s]+)\s*\}\}`)

// Fill returns the Application tmpl makes from p, in namespace: every
// "{{key}}" in its strings replaced with p[key]. Values are inserted as
// text into string fields only, so a parameter cannot add structure. A
// placeholder naming no parameter is an error naming it.
func Fill(tmpl v1alpha1.ApplicationTemplate, p Params, namespace string) (*v1alpha1.Application, error) {
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return nil, err
	}
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return nil, err
	}
	var missing []string
	tree = substitute(tree, p, &missing)
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("template: no parameter %s (have %s)", strings.Join(unique(missing), ", "), strings.Join(keys(p), ", "))
	}
	raw, err = json.Marshal(tree)
	if err != nil {
		return nil, err
	}
	var out v1alpha1.ApplicationTemplate
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	if errs := validation.IsDNS1123Subdomain(out.Metadata.Name); len(errs) > 0 {
		return nil, fmt.Errorf("template: metadata.name %q: %s", out.Metadata.Name, strings.Join(errs, "; "))
	}
	var spec v1alpha1.ApplicationSpec
	dec := json.NewDecoder(bytes.NewReader(out.Spec.Raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return nil, fmt.Errorf("template: spec: %w", err)
	}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: out.Metadata.Name, Namespace: namespace, Labels: out.Metadata.Labels, Annotations: out.Metadata.Annotations},
		Spec:       spec,
	}
	app.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("Application"))
	return app, nil
}

func substitute(v any, p Params, missing *[]string) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[substitute(k, p, missing).(string)] = substitute(x, p, missing)
		}
		return out
	case []any:
		for i := range t {
			t[i] = substitute(t[i], p, missing)
		}
		return t
	case string:
		return placeholder.ReplaceAllStringFunc(t, func(m string) string {
			key := placeholder.FindStringSubmatch(m)[1]
			val, ok := p[key]
			if !ok {
				*missing = append(*missing, key)
			}
			return val
		})
	}
	return v
}

func keys(p Params) []string {
	out := make([]string, 0, len(p))
	for k := range p {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func unique(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}
