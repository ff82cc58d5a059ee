package migrate

import (
	"fmt"
	"path"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// generated is one output artifact of an ArtifactGenerator: the
// ExternalArtifact of its name, in the generator's namespace.
type generated struct {
	generator *unstructured.Unstructured
	index     int
	spec      map[string]any // spec.artifacts[index]
}

// indexGenerators finds the ExternalArtifacts each ArtifactGenerator among
// the manifests makes (Flux 2.7's source-watcher), by namespace and name.
func (t *translator) indexGenerators(u *unstructured.Unstructured) {
	list, _, _ := unstructured.NestedSlice(u.Object, "spec", "artifacts")
	for i, a := range list {
		m, _ := a.(map[string]any)
		if name := strAt(m, "name"); name != "" {
			t.artifacts[u.GetNamespace()+"/"+name] = generated{generator: u, index: i, spec: m}
		}
	}
}

// artifactSource resolves the ExternalArtifact ns/name that an
// ArtifactGenerator makes, and a path within it, to the Git or OCI source
// it copies from and the path there with the same content. That holds
// when the artifact is one subtree of one source: one copy rule, from a
// directory of a GitRepository or OCIRepository (`@alias/dir/**`,
// `@alias/dir/` or `@alias/`) to a directory of the artifact (`@artifact/`
// or `@artifact/dir/`). Anything
// else (several rules or sources, single files, globs, excludes of
// manifests, merge strategies) is named, and ok is false.
func (t *translator) artifactSource(u *unstructured.Unstructured, field, ns, name, within string) (repo *unstructured.Unstructured, sourcePath string, ok bool) {
	g, found := t.artifacts[ns+"/"+name]
	if !found {
		t.note(u, field, "ExternalArtifact/%s/%s: no ArtifactGenerator among the manifests makes it; not translated", ns, name)
		return nil, "", false
	}
	rule := fmt.Sprintf("ArtifactGenerator/%s/%s spec.artifacts[%d]", ns, g.generator.GetName(), g.index)
	refuse := func(why string, args ...any) (*unstructured.Unstructured, string, bool) {
		t.note(u, field, "ExternalArtifact/%s/%s: %s: %s; not translated (converge syncs a directory of one Git or OCI source)", ns, name, rule, fmt.Sprintf(why, args...))
		return nil, "", false
	}
	copies, _, _ := unstructured.NestedSlice(g.spec, "copy")
	if len(copies) != 1 {
		return refuse("%d copy rules (one subtree of one source can be translated)", len(copies))
	}
	c, _ := copies[0].(map[string]any)
	if s := strAt(c, "strategy"); s != "" && !strings.EqualFold(s, "Overwrite") {
		return refuse("copy strategy %s", s)
	}
	if ex, _, _ := unstructured.NestedStringSlice(c, "exclude"); !onlyNonManifests(ex) {
		return refuse("exclude %v leaves out files a render could read", ex)
	}
	alias, from, okFrom := subtree(strAt(c, "from"))
	if !okFrom {
		return refuse("copy from %q is not a directory of a source (@alias/dir/** or @alias/dir/)", strAt(c, "from"))
	}
	toAlias, to, okTo := subtree(strAt(c, "to"))
	if !okTo || toAlias != "artifact" {
		return refuse("copy to %q is not a directory of the artifact (@artifact/dir/)", strAt(c, "to"))
	}
	srcs, _, _ := unstructured.NestedSlice(g.generator.Object, "spec", "sources")
	var kind, srcName, srcNS string
	for _, s := range srcs {
		m, _ := s.(map[string]any)
		if strAt(m, "alias") == alias {
			kind, srcName, srcNS = strAt(m, "kind"), strAt(m, "name"), strAt(m, "namespace")
		}
	}
	if srcNS == "" {
		srcNS = ns
	}
	switch {
	case kind == "":
		return refuse("no source has the alias %q", alias)
	case kind != "GitRepository" && kind != "OCIRepository":
		return refuse("source %s is a %s", alias, kind)
	}
	key := kind + "/" + srcNS + "/" + srcName
	if repo = t.sources[key]; repo == nil {
		return refuse("source %s is not among the manifests", key)
	}
	within = cleanDir(within)
	switch {
	case to == "" || within == to || strings.HasPrefix(within, to+"/"):
		// Inside the copied subtree: the same path below from.
		sourcePath = cleanDir(path.Join(from, strings.TrimPrefix(within, to)))
	case strings.HasPrefix(to, within+"/") || within == "":
		// Above it: the artifact holds that subtree alone.
		sourcePath = from
	default:
		return refuse("the path %s is not within what it copies (%s)", orDot(within), to)
	}
	return repo, sourcePath, true
}

// subtree reads "@alias/dir/**", "@alias/dir/" or "@alias/" as alias and
// dir ("" for the root). Without the trailing slash a path may name a
// file: not a subtree.
func subtree(s string) (alias, dir string, ok bool) {
	rest, found := strings.CutPrefix(s, "@")
	if !found {
		return "", "", false
	}
	alias, dir, _ = strings.Cut(rest, "/")
	dir = strings.TrimSuffix(dir, "**")
	if alias == "" || (dir != "" && !strings.HasSuffix(dir, "/")) || strings.ContainsAny(dir, "*?[{") {
		return "", "", false
	}
	return alias, cleanDir(dir), true
}

// cleanDir is a relative directory without ./ or slashes at its ends; ""
// for the root.
func cleanDir(p string) string {
	p = path.Clean("/" + p)
	return strings.TrimPrefix(p, "/")
}

func orDot(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// onlyNonManifests says whether exclude patterns leave every file a
// render reads (YAML, JSON, Jsonnet, charts' files) in place: docs and
// the like only.
func onlyNonManifests(patterns []string) bool {
	for _, p := range patterns {
		ext := strings.ToLower(path.Ext(p))
		if ext != ".md" && ext != ".txt" && ext != ".adoc" && ext != ".png" && ext != ".svg" {
			return false
		}
	}
	return true
}
