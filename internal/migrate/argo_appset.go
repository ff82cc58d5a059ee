package migrate

import (
	"encoding/json"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"converge.dev/converge/api/v1alpha1"
)

// argoPlaceholders are Argo CD's fasttemplate parameters spelled
// otherwise in converge (its clusters generator's labels); the rest
// (path, path.basename, path[n], name, server, a list's and a file's
// keys) mean the same.
var argoPlaceholders = strings.NewReplacer("{{metadata.labels.", "{{labels.", "{{ metadata.labels.", "{{ labels.")

// argoAppSet translates an ApplicationSet: list, clusters, git and matrix
// generators, the template (an Application spec, translated as one, its
// placeholders kept), the sync policy and a RollingSync strategy.
// Go templates, other generators and what has no equivalent are named.
func (t *translator) argoAppSet(u *unstructured.Unstructured) {
	spec := mapAt(u.Object, "spec")
	if gt, _ := spec["goTemplate"].(bool); gt {
		t.note(u, "spec.goTemplate", "Go templates are not supported: converge's placeholders are {{param}} text (fasttemplate's); not translated")
		return
	}
	set := v1alpha1.ApplicationSet{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ApplicationSet"},
		ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), Namespace: u.GetNamespace()}}
	gens, _, _ := unstructured.NestedSlice(spec, "generators")
	for i, g := range gens {
		m, _ := g.(map[string]any)
		gen, ok := t.argoGenerator(u, m, fmt.Sprintf("spec.generators[%d]", i), true)
		if !ok {
			return
		}
		set.Spec.Generators = append(set.Spec.Generators, gen)
	}
	if !t.argoTemplate(u, spec, &set) {
		return
	}
	switch p := strAt(spec, "syncPolicy", "applicationsSync"); p {
	case "", "sync", "create-delete":
	case "create-only", "create-update":
		set.Spec.Policy = p
	default:
		t.note(u, "spec.syncPolicy.applicationsSync", "%q is not carried over", p)
	}
	if keep, _, _ := unstructured.NestedBool(spec, "syncPolicy", "preserveResourcesOnDeletion"); keep {
		t.note(u, "spec.syncPolicy.preserveResourcesOnDeletion", "not carried over: set deletionPolicy: Orphan in the template's spec instead")
	}
	set.Spec.Strategy = t.argoRollingSync(u, spec)
	t.res.ApplicationSets = append(t.res.ApplicationSets, set)
}

// argoTemplate translates the template: its metadata as it is, its spec
// as an Application's. The set lives in the namespace its Applications
// go to when that is fixed; converge makes a set's Applications in its
// own namespace.
func (t *translator) argoTemplate(u *unstructured.Unstructured, spec map[string]any, set *v1alpha1.ApplicationSet) bool {
	tmpl := mapAt(spec, "template")
	meta := mapAt(tmpl, "metadata")
	set.Spec.Template.Metadata.Name = strAt(meta, "name")
	set.Spec.Template.Metadata.Labels, _, _ = unstructured.NestedStringMap(meta, "labels")
	set.Spec.Template.Metadata.Annotations, _, _ = unstructured.NestedStringMap(meta, "annotations")
	if set.Spec.Template.Metadata.Name == "" {
		t.note(u, "spec.template.metadata.name", "missing: not translated")
		return false
	}
	app, ok := t.argoApp(u, mapAt(tmpl, "spec"), true)
	if !ok {
		return false
	}
	if ns := app.Spec.Destination.Namespace; strings.Contains(ns, "{{") {
		t.note(u, "spec.template.spec.destination.namespace", "%s: converge makes a set's Applications in the set's namespace (%s), each sending its objects to its own destination namespace", ns, set.Namespace)
	} else {
		set.Namespace = ns
	}
	raw, err := json.Marshal(app.Spec)
	if err != nil {
		t.note(u, "spec.template.spec", "%v; not translated", err)
		return false
	}
	set.Spec.Template.Spec = runtime.RawExtension{Raw: []byte(argoPlaceholders.Replace(string(raw)))}
	set.Spec.Template.Metadata.Name = argoPlaceholders.Replace(set.Spec.Template.Metadata.Name)
	for k, v := range set.Spec.Template.Metadata.Labels {
		set.Spec.Template.Metadata.Labels[k] = argoPlaceholders.Replace(v)
	}
	return true
}

// argoGenerator translates one generator; nested (within a matrix) ones
// may not be matrices.
func (t *translator) argoGenerator(u *unstructured.Unstructured, g map[string]any, field string, top bool) (v1alpha1.Generator, bool) {
	var out v1alpha1.Generator
	kinds := sortedKeys(g)
	if len(kinds) != 1 {
		t.note(u, field, "want one generator, got %s; not translated", strings.Join(kinds, ", "))
		return out, false
	}
	body := mapAt(g, kinds[0])
	if sel := mapAt(body, "selector"); sel != nil && kinds[0] != "clusters" {
		t.note(u, field+"."+kinds[0]+".selector", "post-selectors are not supported; not translated")
		return out, false
	}
	switch kinds[0] {
	case "list":
		l, ok := t.argoList(u, body, field+".list")
		out.List = l
		return out, ok
	case "clusters":
		out.Clusters = t.argoClusters(u, body, field+".clusters")
		return out, true
	case "git":
		gg, ok := t.argoGit(u, body, field+".git")
		out.Git = gg
		return out, ok
	case "matrix":
		if !top {
			t.note(u, field+".matrix", "a matrix within a matrix is not supported; not translated")
			return out, false
		}
		nested, _, _ := unstructured.NestedSlice(body, "generators")
		m := &v1alpha1.MatrixGenerator{}
		for i, n := range nested {
			nm, _ := n.(map[string]any)
			g, ok := t.argoGenerator(u, nm, fmt.Sprintf("%s.matrix.generators[%d]", field, i), false)
			if !ok {
				return out, false
			}
			m.Generators = append(m.Generators, v1alpha1.NestedGenerator{List: g.List, Clusters: g.Clusters, Git: g.Git})
		}
		out.Matrix = m
		return out, true
	}
	t.note(u, field+"."+kinds[0], "the %s generator is not supported (list, clusters, git and matrix are); not translated", kinds[0])
	return out, false
}

// argoList keeps elements whose values are strings (converge's
// parameters are text).
func (t *translator) argoList(u *unstructured.Unstructured, body map[string]any, field string) (*v1alpha1.ListGenerator, bool) {
	if body["elementsYaml"] != nil {
		t.note(u, field+".elementsYaml", "not supported: list the elements; not translated")
		return nil, false
	}
	elems, _, _ := unstructured.NestedSlice(body, "elements")
	l := &v1alpha1.ListGenerator{}
	for i, e := range elems {
		m, _ := e.(map[string]any)
		out := map[string]string{}
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				t.note(u, fmt.Sprintf("%s.elements[%d].%s", field, i, k), "a value that is not text: converge's parameters are strings; not translated")
				return nil, false
			}
			out[k] = s
		}
		l.Elements = append(l.Elements, out)
	}
	return l, true
}

// argoClusters selects converge Clusters by the labels Argo CD's cluster
// Secrets had (carried over to the Clusters made of them).
func (t *translator) argoClusters(u *unstructured.Unstructured, body map[string]any, field string) *v1alpha1.ClustersGenerator {
	c := &v1alpha1.ClustersGenerator{}
	if sel := mapAt(body, "selector"); sel != nil {
		raw, _ := json.Marshal(sel)
		if err := json.Unmarshal(raw, &c.Selector); err != nil {
			t.note(u, field+".selector", "%v; selecting every Cluster", err)
		}
	}
	c.Values, _, _ = unstructured.NestedStringMap(body, "values")
	t.note(u, field, "Argo CD's clusters generator also yields the cluster it runs in; converge's yields Clusters only (the agent's own cluster is not one)")
	return c
}

// argoGit is a Git generator: directories and files.
func (t *translator) argoGit(u *unstructured.Unstructured, body map[string]any, field string) (*v1alpha1.GitGenerator, bool) {
	g := &v1alpha1.GitGenerator{RepoURL: strAt(body, "repoURL")}
	var why string
	if g.Ref, why = gitRef(strAt(body, "revision")); why != "" {
		t.note(u, field+".revision", "%s", why)
	}
	for _, f := range []string{"directories", "files"} {
		list, _, _ := unstructured.NestedSlice(body, f)
		for _, d := range list {
			m, _ := d.(map[string]any)
			exclude, _ := m["exclude"].(bool)
			p := v1alpha1.GitPathPattern{Path: strAt(m, "path"), Exclude: exclude}
			if f == "directories" {
				g.Directories = append(g.Directories, p)
			} else {
				g.Files = append(g.Files, p)
			}
		}
	}
	if len(g.Directories)+len(g.Files) == 0 {
		t.note(u, field, "neither directories nor files; not translated")
		return nil, false
	}
	if body["pathParamPrefix"] != nil || body["values"] != nil {
		t.note(u, field, "pathParamPrefix and values are not supported; not carried over")
	}
	return g, true
}

// argoRollingSync translates a RollingSync strategy's steps (label
// selectors); maxUpdate is named.
func (t *translator) argoRollingSync(u *unstructured.Unstructured, spec map[string]any) *v1alpha1.RolloutStrategy {
	st := mapAt(spec, "strategy")
	if st == nil {
		return nil
	}
	if typ := strAt(st, "type"); typ != "RollingSync" {
		t.note(u, "spec.strategy.type", "%q: only RollingSync is carried over", typ)
		return nil
	}
	steps, _, _ := unstructured.NestedSlice(st, "rollingSync", "steps")
	out := &v1alpha1.RolloutStrategy{}
	for i, s := range steps {
		m, _ := s.(map[string]any)
		if m["maxUpdate"] != nil {
			t.note(u, fmt.Sprintf("spec.strategy.rollingSync.steps[%d].maxUpdate", i), "not supported: a step syncs all its apps; not carried over")
		}
		exprs, _, _ := unstructured.NestedSlice(m, "matchExpressions")
		var sel metav1.LabelSelector
		for _, e := range exprs {
			em, _ := e.(map[string]any)
			vals, _, _ := unstructured.NestedStringSlice(em, "values")
			sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{Key: strAt(em, "key"),
				Operator: metav1.LabelSelectorOperator(strAt(em, "operator")), Values: vals})
		}
		out.Steps = append(out.Steps, v1alpha1.RolloutStep{Selector: sel})
	}
	return out
}
