// Package generate turns an ApplicationSet's generators into parameter
// sets and its template into Applications. It does no I/O of its own: the
// caller fetches the repositories (a checkout directory) and lists the
// Clusters, so the same sources and caches serve sets and Applications.
package generate

import (
	"bytes"
	"encoding/json"
	"errors"
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

// Limits bound what one ApplicationSet can make the agent hold. Each is
// checked before the work that would pass it (a matrix's product is sized
// before it is built, a placeholder's value before it is inserted), and a
// set that passes one fails with a *LimitError naming it: the agent's
// memory does not move whatever the set's input.
const (
	// MaxSets is the most parameter sets one set may produce.
	MaxSets = 5000
	// MaxKeys is the most parameters in one parameter set (a matrix's
	// merged pair included).
	MaxKeys = 256
	// MaxValueBytes is the longest parameter name or value.
	MaxValueBytes = 16 << 10
	// MaxParamBytes is the most bytes (names and values) of all the
	// parameter sets one set produces, intermediate ones (a matrix's
	// two sides) included.
	MaxParamBytes = 16 << 20
	// MaxFileSize is the largest parameter file read.
	MaxFileSize = 1 << 20
	// MaxFileBytes is the most bytes of parameter files one set reads.
	MaxFileBytes = 16 << 20
	// MaxFilledBytes is the largest filled template (one Application).
	MaxFilledBytes = 512 << 10
	// MaxTotalFilledBytes is the most bytes of filled templates one set
	// produces.
	MaxTotalFilledBytes = 64 << 20
)

// LimitError is a set's input passing one of the limits above: Where names
// the generator or template, Bound the limit.
type LimitError struct {
	Where string
	Bound string
	Limit int
	Have  int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s: %d is more than the %d allowed (%s)", e.Where, e.Have, e.Limit, e.Bound)
}

// Budget counts what one set's generation has used against the limits; a
// zero Budget is a fresh one. Run and Fill take the same Budget so that a
// set's parameters and filled templates are bounded together.
type Budget struct {
	paramBytes  int
	fileBytes   int
	filledBytes int
}

func (b *Budget) spendParams(where string, n int) error {
	if b.paramBytes+n > MaxParamBytes {
		return &LimitError{Where: where, Bound: "parameter bytes per ApplicationSet", Limit: MaxParamBytes, Have: b.paramBytes + n}
	}
	b.paramBytes += n
	return nil
}

// checkSet checks one parameter set's size, then spends it.
func (b *Budget) checkSet(where string, p Params) error {
	if len(p) > MaxKeys {
		return &LimitError{Where: where, Bound: "parameters per set", Limit: MaxKeys, Have: len(p)}
	}
	n := 0
	for k, v := range p {
		if len(k) > MaxValueBytes || len(v) > MaxValueBytes {
			return &LimitError{Where: fmt.Sprintf("%s: parameter %.64q", where, k), Bound: "bytes per parameter name or value", Limit: MaxValueBytes, Have: max(len(k), len(v))}
		}
		n += len(k) + len(v)
	}
	return b.spendParams(where, n)
}

func size(sets []Params) int {
	n := 0
	for _, p := range sets {
		for k, v := range p {
			n += len(k) + len(v)
		}
	}
	return n
}

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

// Run produces every generator's parameter sets, in order, within the
// limits above (spent from b).
func Run(gens []v1alpha1.Generator, src Sources, b *Budget) ([]Params, error) {
	var out []Params
	for i, g := range gens {
		where := fmt.Sprintf("spec.generators[%d]", i)
		sets, err := one(where, v1alpha1.NestedGenerator{List: g.List, Clusters: g.Clusters, Git: g.Git}, g.Matrix, src, b)
		if err != nil {
			return nil, err
		}
		if len(out)+len(sets) > MaxSets {
			return nil, &LimitError{Where: "spec.generators", Bound: "parameter sets per ApplicationSet", Limit: MaxSets, Have: len(out) + len(sets)}
		}
		out = append(out, sets...)
	}
	return out, nil
}

func one(where string, g v1alpha1.NestedGenerator, matrix *v1alpha1.MatrixGenerator, src Sources, b *Budget) ([]Params, error) {
	switch {
	case matrix != nil:
		return product(where+".matrix", matrix, src, b)
	case g.List != nil:
		where += ".list.elements"
		if len(g.List.Elements) > MaxSets {
			return nil, &LimitError{Where: where, Bound: "parameter sets per generator", Limit: MaxSets, Have: len(g.List.Elements)}
		}
		out := make([]Params, 0, len(g.List.Elements))
		for i, e := range g.List.Elements {
			if err := b.checkSet(fmt.Sprintf("%s[%d]", where, i), e); err != nil {
				return nil, err
			}
			p := make(Params, len(e))
			for k, v := range e {
				p[k] = v
			}
			out = append(out, p)
		}
		return out, nil
	case g.Clusters != nil:
		return clusters(where+".clusters", g.Clusters, src.Clusters, b)
	case g.Git != nil:
		dir, ok := src.Checkouts[GitKey(g.Git)]
		if !ok {
			return nil, fmt.Errorf("%s.git %s: not fetched", where, g.Git.RepoURL)
		}
		return git(where+".git", g.Git, dir, b)
	}
	return nil, fmt.Errorf("%s: no generator given (list, clusters, git or matrix)", where)
}

// product is a matrix: every pair of its two generators' sets, merged.
// Its count, keys and bytes are known from the two sides, and checked,
// before a single pair is built.
func product(where string, matrix *v1alpha1.MatrixGenerator, src Sources, b *Budget) ([]Params, error) {
	if len(matrix.Generators) != 2 {
		return nil, fmt.Errorf("%s: want two generators, have %d", where, len(matrix.Generators))
	}
	var sides [2][]Params
	for i := range sides {
		s, err := one(fmt.Sprintf("%s.generators[%d]", where, i), matrix.Generators[i], nil, src, b)
		if err != nil {
			return nil, err
		}
		sides[i] = s
	}
	a, c := sides[0], sides[1]
	if len(a) > 0 && len(c) > MaxSets/len(a) {
		return nil, &LimitError{Where: where, Bound: "parameter sets per generator", Limit: MaxSets, Have: len(a) * len(c)}
	}
	maxKeys := func(sets []Params) int {
		n := 0
		for _, p := range sets {
			n = max(n, len(p))
		}
		return n
	}
	if k := maxKeys(a) + maxKeys(c); k > MaxKeys {
		return nil, &LimitError{Where: where, Bound: "parameters per set", Limit: MaxKeys, Have: k}
	}
	// Each of a's sets appears len(c) times and each of c's len(a) times.
	if err := b.spendParams(where, size(a)*len(c)+size(c)*len(a)); err != nil {
		return nil, err
	}
	out := make([]Params, 0, len(a)*len(c))
	for _, x := range a {
		for _, y := range c {
			p := make(Params, len(x)+len(y))
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
}

func clusters(where string, g *v1alpha1.ClustersGenerator, all []v1alpha1.Cluster, b *Budget) ([]Params, error) {
	sel, err := metav1.LabelSelectorAsSelector(&g.Selector)
	if err != nil {
		return nil, fmt.Errorf("%s.selector: %w", where, err)
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
		if err := b.checkSet(fmt.Sprintf("%s (Cluster %s)", where, c.Name), p); err != nil {
			return nil, err
		}
		out = append(out, p)
		if len(out) > MaxSets {
			return nil, &LimitError{Where: where, Bound: "parameter sets per generator", Limit: MaxSets, Have: len(out)}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["name"] < out[j]["name"] })
	return out, nil
}

// git produces a set per matching directory or file of the checkout in
// root. Patterns are relative to the repository root and may not leave
// it; links are never followed (checkouts hold none).
func git(where string, g *v1alpha1.GitGenerator, root string, b *Budget) ([]Params, error) {
	if len(g.Directories) > 0 && len(g.Files) > 0 {
		return nil, fmt.Errorf("%s: directories and files are separate generators", where)
	}
	if len(g.Directories) == 0 && len(g.Files) == 0 {
		return nil, fmt.Errorf("%s: give directories or files", where)
	}
	patterns := g.Directories
	wantDir := true
	if len(g.Files) > 0 {
		patterns, wantDir = g.Files, false
	}
	for _, p := range patterns {
		if err := checkPattern(p.Path); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
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
			if len(matched) == MaxSets {
				return &LimitError{Where: where, Bound: "parameter sets per generator", Limit: MaxSets, Have: MaxSets + 1}
			}
			matched = append(matched, rel)
		}
		return nil
	})
	if err != nil {
		var lerr *LimitError
		if errors.As(err, &lerr) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	sort.Strings(matched)
	var out []Params
	for _, rel := range matched {
		at := fmt.Sprintf("%s: %s", where, rel)
		if wantDir {
			p := pathParams(rel)
			if err := b.checkSet(at, p); err != nil {
				return nil, err
			}
			out = append(out, p)
			continue
		}
		sets, err := fileParams(root, rel, at, b)
		if err != nil {
			return nil, err
		}
		dir := path.Dir(rel)
		for _, p := range sets {
			for k, v := range pathParams(dir) {
				p[k] = v
			}
			p["path.filename"] = path.Base(rel)
			if err := b.checkSet(at, p); err != nil {
				return nil, err
			}
			out = append(out, p)
			if len(out) > MaxSets {
				return nil, &LimitError{Where: where, Bound: "parameter sets per generator", Limit: MaxSets, Have: len(out)}
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
func fileParams(root, rel, where string, b *Budget) ([]Params, error) {
	full := filepath.Join(root, filepath.FromSlash(rel))
	info, err := os.Lstat(full)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", where)
	}
	if info.Size() > MaxFileSize {
		return nil, &LimitError{Where: where, Bound: "bytes per parameter file", Limit: MaxFileSize, Have: int(info.Size())}
	}
	if b.fileBytes+int(info.Size()) > MaxFileBytes {
		return nil, &LimitError{Where: where, Bound: "bytes of parameter files per ApplicationSet", Limit: MaxFileBytes, Have: b.fileBytes + int(info.Size())}
	}
	b.fileBytes += int(info.Size())
	data, err := os.ReadFile(full)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	raw, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: not YAML or JSON: %w", where, err)
	}
	// YAML aliases can make the JSON far larger than the file.
	if len(raw) > 4*MaxFileSize {
		return nil, &LimitError{Where: where, Bound: "bytes of a parameter file once its aliases are expanded", Limit: 4 * MaxFileSize, Have: len(raw)}
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	var items []any
	switch t := v.(type) {
	case map[string]any:
		items = []any{t}
	case []any:
		items = t
	default:
		return nil, fmt.Errorf("%s: want a map or a list of maps", where)
	}
	if len(items) > MaxSets {
		return nil, &LimitError{Where: where, Bound: "parameter sets per generator", Limit: MaxSets, Have: len(items)}
	}
	out := make([]Params, 0, len(items))
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: item %d: want a map", where, i)
		}
		p := Params{}
		if !flatten("", m, p) {
			return nil, &LimitError{Where: fmt.Sprintf("%s: item %d", where, i), Bound: "parameters per set", Limit: MaxKeys, Have: len(p)}
		}
		out = append(out, p)
	}
	return out, nil
}

// flatten adds v's leaves to out, and says false as soon as out holds
// more than MaxKeys.
func flatten(prefix string, v any, out Params) bool {
	if len(out) > MaxKeys {
		return false
	}
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			if !flatten(key, x, out) {
				return false
			}
		}
		return true
	case []any:
		for i, x := range t {
			if !flatten(prefix+"["+strconv.Itoa(i)+"]", x, out) {
				return false
			}
		}
		return true
	case nil:
		out[prefix] = ""
	case string:
		out[prefix] = t
	default:
		b, _ := json.Marshal(t)
		out[prefix] = string(b)
	}
	return len(out) <= MaxKeys
}

var placeholder = regexp.MustCompile(`\{\{\s*([^{}\s]+)\s*\}\}`)

// ReservedPrefix marks converge's own labels and annotations (requests,
// rollbacks, ownership): a template may set none of them, so a set cannot
// speak for a person or take another app's objects.
const ReservedPrefix = "converge.dev/"

// Fill returns the Application tmpl makes from p, in namespace: every
// "{{key}}" in its strings replaced with p[key]. Values are inserted as
// text into string fields only, so a parameter cannot add structure. A
// placeholder naming no parameter is an error naming it; so is a filled
// template over MaxFilledBytes (or the set's total over
// MaxTotalFilledBytes, spent from b), measured before it is built, and a
// converge.dev/ label or annotation.
func Fill(tmpl v1alpha1.ApplicationTemplate, p Params, namespace string, b *Budget) (*v1alpha1.Application, error) {
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return nil, err
	}
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return nil, err
	}
	f := filler{p: p, size: len(raw)}
	if err := f.measure(tree); err != nil {
		return nil, err
	}
	if f.size > MaxFilledBytes {
		return nil, &LimitError{Where: "template", Bound: "bytes per filled template", Limit: MaxFilledBytes, Have: f.size}
	}
	if b.filledBytes+f.size > MaxTotalFilledBytes {
		return nil, &LimitError{Where: "template", Bound: "bytes of filled templates per ApplicationSet", Limit: MaxTotalFilledBytes, Have: b.filledBytes + f.size}
	}
	b.filledBytes += f.size
	if len(f.missing) > 0 {
		sort.Strings(f.missing)
		return nil, fmt.Errorf("template: no parameter %s (have %s)", strings.Join(unique(f.missing), ", "), strings.Join(keys(p), ", "))
	}
	raw, err = json.Marshal(f.fill(tree))
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
	if err := reserved(out.Metadata); err != nil {
		return nil, err
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

// reserved refuses a converge.dev/ label or annotation, naming it.
func reserved(m v1alpha1.ApplicationTemplateMeta) error {
	for field, kv := range map[string]map[string]string{"labels": m.Labels, "annotations": m.Annotations} {
		for _, k := range keys(kv) {
			if strings.HasPrefix(k, ReservedPrefix) || strings.Contains(k, "."+ReservedPrefix) {
				return fmt.Errorf("template: metadata.%s[%q]: %s labels and annotations are converge's own; a template may not set them", field, k, ReservedPrefix)
			}
		}
	}
	return nil
}

// filler fills placeholders from p. measure walks the template first and
// adds to size what filling will add, so nothing is built before the
// result's size is known.
type filler struct {
	p       Params
	size    int
	missing []string
	encoded map[string]int // a value's length once JSON-encoded, by key
}

func (f *filler) encodedLen(key string) int {
	if n, ok := f.encoded[key]; ok {
		return n
	}
	raw, _ := json.Marshal(f.p[key])
	if f.encoded == nil {
		f.encoded = map[string]int{}
	}
	f.encoded[key] = len(raw) - 2
	return len(raw) - 2
}

func (f *filler) measure(v any) error {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if err := f.measure(k); err != nil {
				return err
			}
			if err := f.measure(x); err != nil {
				return err
			}
		}
	case []any:
		for _, x := range t {
			if err := f.measure(x); err != nil {
				return err
			}
		}
	case string:
		for _, m := range placeholder.FindAllStringSubmatchIndex(t, -1) {
			key := t[m[2]:m[3]]
			if _, ok := f.p[key]; !ok {
				f.missing = append(f.missing, key)
			}
			f.size += f.encodedLen(key) - (m[1] - m[0])
			if f.size > MaxFilledBytes {
				return &LimitError{Where: "template", Bound: "bytes per filled template", Limit: MaxFilledBytes, Have: f.size}
			}
		}
	}
	return nil
}

func (f *filler) fill(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[f.fill(k).(string)] = f.fill(x)
		}
		return out
	case []any:
		for i := range t {
			t[i] = f.fill(t[i])
		}
		return t
	case string:
		return placeholder.ReplaceAllStringFunc(t, func(m string) string {
			return f.p[placeholder.FindStringSubmatch(m)[1]]
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
