package render

import (
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/google/go-jsonnet"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// JsonnetOptions configure evaluating .jsonnet files.
type JsonnetOptions struct {
	// ExtVars are external variables (std.extVar), as strings.
	ExtVars map[string]string `json:"extVars,omitempty"`
	// TLAs are top-level arguments, as strings, given to files that
	// evaluate to a function.
	TLAs map[string]string `json:"tlas,omitempty"`
	// LibPaths are directories, relative to the repository root, searched
	// for an import not found next to the importing file.
	LibPaths []string `json:"libPaths,omitempty"`
}

func isJsonnetFile(name string) bool { return strings.ToLower(path.Ext(name)) == ".jsonnet" }

// renderJsonnet evaluates one .jsonnet file. Its value may be an object, a
// List, an array of objects, or an object whose fields hold objects (as
// kubecfg and Tanka write them), nested to any depth. Imports are read
// through the sandbox: never from outside the repository.
func renderJsonnet(sb *sandbox, name string, opts JsonnetOptions) ([]Object, error) {
	data, err := sb.readFile(name)
	if err != nil {
		return nil, err
	}
	vm := jsonnet.MakeVM()
	imp := &sandboxImporter{sb: sb, main: name, cache: map[string]jsonnet.Contents{}}
	for _, l := range opts.LibPaths {
		p, err := clean(l)
		if err != nil {
			return nil, fmt.Errorf("jsonnet library path %s: %w", l, err)
		}
		imp.libs = append(imp.libs, p)
	}
	vm.Importer(imp)
	for k, v := range opts.ExtVars {
		vm.ExtVar(k, v)
	}
	for k, v := range opts.TLAs {
		vm.TLAVar(k, v)
	}
	out, err := vm.EvaluateAnonymousSnippet(name, string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %s", name, strings.TrimSpace(err.Error()))
	}
	var value any
	if err := json.Unmarshal([]byte(out), &value); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var objs []Object
	if err := collectJsonnet(name, "", value, &objs); err != nil {
		return nil, err
	}
	return objs, nil
}

// collectJsonnet flattens a Jsonnet value into objects; at names where in
// the value each one was found.
func collectJsonnet(file, at string, v any, objs *[]Object) error {
	where := func() string {
		if at == "" {
			return "the file's value"
		}
		return at
	}
	switch v := v.(type) {
	case nil:
		return nil
	case []any:
		for i, e := range v {
			if err := collectJsonnet(file, fmt.Sprintf("%s[%d]", at, i), e, objs); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		_, hasKind := v["kind"]
		_, hasAPIVersion := v["apiVersion"]
		if !hasKind && !hasAPIVersion {
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if err := collectJsonnet(file, at+"."+k, v[k], objs); err != nil {
					return err
				}
			}
			return nil
		}
		u := &unstructured.Unstructured{Object: v}
		if u.IsList() {
			items, _, _ := unstructured.NestedSlice(v, "items")
			return collectJsonnet(file, at+".items", items, objs)
		}
		*objs = append(*objs, Object{Unstructured: u, Source: fmt.Sprintf("%s#%d", file, len(*objs)+1)})
		return nil
	}
	return fmt.Errorf("%s: %s is a %T, not a Kubernetes object", file, where(), v)
}

// sandboxImporter resolves Jsonnet imports inside the repository: next to
// the importing file, then in each library path.
type sandboxImporter struct {
	sb *sandbox
	// main is the file evaluated: imports from it come "from" "".
	main  string
	libs  []string
	cache map[string]jsonnet.Contents
}

func (i *sandboxImporter) Import(from, imported string) (jsonnet.Contents, string, error) {
	if path.IsAbs(imported) || strings.Contains(imported, "://") {
		return jsonnet.Contents{}, "", fmt.Errorf("import %q: only paths inside the repository can be imported", imported)
	}
	if from == "" {
		from = i.main
	}
	candidates := []string{path.Join(path.Dir(from), imported)}
	for _, l := range i.libs {
		candidates = append(candidates, path.Join(l, imported))
	}
	for _, c := range candidates {
		p, err := clean(c)
		if err != nil {
			return jsonnet.Contents{}, "", fmt.Errorf("import %q: %w", imported, err)
		}
		if got, ok := i.cache[p]; ok {
			return got, p, nil
		}
		if !i.sb.exists(p) {
			continue
		}
		data, err := i.sb.readFile(p)
		if err != nil {
			return jsonnet.Contents{}, "", fmt.Errorf("import %q: %w", imported, err)
		}
		i.cache[p] = jsonnet.MakeContentsRaw(data)
		return i.cache[p], p, nil
	}
	return jsonnet.Contents{}, "", fmt.Errorf("import %q: not found next to %s or in the library paths", imported, from)
}
