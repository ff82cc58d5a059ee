package engine

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/itchyny/gojq"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// IgnoreRule is one of an app's ignoreDifferences (Argo CD's shape): for
// the objects it matches, the fields its JSON pointers and jq path
// expressions select are the live object's business (an HPA's replicas, a
// webhook's injected caBundle). They count in no diff, no drift and no
// self-heal, and a sync never overwrites them on an existing object: the
// desired object takes the live values there before it is compared and
// applied (Argo CD's RespectIgnoreDifferences). A new object is created
// with the values from Git.
type IgnoreRule struct {
	// Group and Kind select the kind ("" is the core group); Name and
	// Namespace, when set, one object.
	Group, Kind, Name, Namespace string
	JSONPointers                 []string
	JQPathExpressions            []string
	// Field names the rule for errors ("spec.ignoreDifferences[0]").
	Field string

	queries []*gojq.Code
}

// Compile checks the rule's pointers and expressions, naming the first bad
// one; an IgnoreRule must be compiled before it is used.
func (r *IgnoreRule) Compile() error {
	if r.Kind == "" {
		return fmt.Errorf("%s.kind: required", r.Field)
	}
	for i, p := range r.JSONPointers {
		if _, err := parsePointer(p); err != nil {
			return fmt.Errorf("%s.jsonPointers[%d] %q: %w", r.Field, i, p, err)
		}
	}
	r.queries = r.queries[:0]
	for i, expr := range r.JQPathExpressions {
		q, err := gojq.Parse("path(" + expr + ")")
		if err != nil {
			return fmt.Errorf("%s.jqPathExpressions[%d] %q: %w", r.Field, i, expr, err)
		}
		code, err := gojq.Compile(q)
		if err != nil {
			return fmt.Errorf("%s.jqPathExpressions[%d] %q: %w", r.Field, i, expr, err)
		}
		r.queries = append(r.queries, code)
	}
	return nil
}

func (r *IgnoreRule) matches(u *unstructured.Unstructured) bool {
	gvk := u.GroupVersionKind()
	return gvk.Group == r.Group && gvk.Kind == r.Kind &&
		(r.Name == "" || r.Name == u.GetName()) && (r.Namespace == "" || r.Namespace == u.GetNamespace())
}

// maxIgnoredPaths bounds the paths one object's rules may select (a jq
// expression can select many).
const maxIgnoredPaths = 1000

// respectIgnored returns desired with the live values at every path the
// matching rules select (a path live lacks is removed from desired); nil
// when no rule matches.
func respectIgnored(desired, live *unstructured.Unstructured, rules []IgnoreRule) (*unstructured.Unstructured, error) {
	var paths [][]any
	for i := range rules {
		r := &rules[i]
		if !r.matches(desired) {
			continue
		}
		for _, p := range r.JSONPointers {
			path, _ := parsePointer(p)
			paths = append(paths, path)
		}
		if len(r.queries) > 0 {
			var doc any
			raw, err := json.Marshal(live.Object)
			if err != nil {
				return nil, err
			}
			if err := json.Unmarshal(raw, &doc); err != nil {
				return nil, err
			}
			for j, q := range r.queries {
				iter := q.Run(doc)
				for {
					v, ok := iter.Next()
					if !ok {
						break
					}
					if err, ok := v.(error); ok {
						if _, halt := err.(*gojq.HaltError); halt {
							break
						}
						return nil, fmt.Errorf("%s.jqPathExpressions[%d]: %w", r.Field, j, err)
					}
					path, ok := v.([]any)
					if !ok {
						continue
					}
					if len(paths) == maxIgnoredPaths {
						return nil, fmt.Errorf("%s.jqPathExpressions[%d]: selects more than %d paths", r.Field, j, maxIgnoredPaths)
					}
					paths = append(paths, path)
				}
			}
		}
	}
	if paths == nil {
		return nil, nil
	}
	out := desired.DeepCopy()
	for _, p := range paths {
		if v, ok := getPath(live.Object, p); ok {
			setPath(out.Object, p, deepCopyJSON(v))
		} else {
			deletePath(out.Object, p)
		}
	}
	return out, nil
}

// parsePointer splits an RFC 6901 JSON pointer into its tokens; numbers
// index lists where the document has one.
func parsePointer(p string) ([]any, error) {
	if p == "" {
		return nil, fmt.Errorf("an empty pointer selects the whole object")
	}
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("a JSON pointer starts with /")
	}
	var out []any
	for _, tok := range strings.Split(p[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		out = append(out, tok)
	}
	return out, nil
}

// index reads a path element as a list index.
func index(e any) (int, bool) {
	switch v := e.(type) {
	case int:
		return v, true
	case string:
		n, err := strconv.Atoi(v)
		return n, err == nil && n >= 0
	}
	return 0, false
}

func getPath(doc any, path []any) (any, bool) {
	for _, e := range path {
		switch node := doc.(type) {
		case map[string]any:
			k, ok := e.(string)
			if !ok {
				return nil, false
			}
			if doc, ok = node[k]; !ok {
				return nil, false
			}
		case []any:
			i, ok := index(e)
			if !ok || i >= len(node) {
				return nil, false
			}
			doc = node[i]
		default:
			return nil, false
		}
	}
	return doc, true
}

// setPath sets v at path in doc, making maps on the way; a list index
// past the list's end is left alone (lists are not grown).
func setPath(doc map[string]any, path []any, v any) {
	var node any = doc
	for i, e := range path {
		last := i == len(path)-1
		switch n := node.(type) {
		case map[string]any:
			k, ok := e.(string)
			if !ok {
				return
			}
			if last {
				n[k] = v
				return
			}
			next, ok := n[k]
			if !ok {
				if _, isIndex := index(path[i+1]); isIndex {
					return
				}
				next = map[string]any{}
				n[k] = next
			}
			node = next
		case []any:
			j, ok := index(e)
			if !ok || j >= len(n) {
				return
			}
			if last {
				n[j] = v
				return
			}
			node = n[j]
		default:
			return
		}
	}
}

func deletePath(doc map[string]any, path []any) {
	if len(path) == 0 {
		return
	}
	parent, ok := getPath(doc, path[:len(path)-1])
	if !ok {
		return
	}
	last := path[len(path)-1]
	switch p := parent.(type) {
	case map[string]any:
		if k, ok := last.(string); ok {
			delete(p, k)
		}
	case []any:
		// Removing from the middle of a list would shift the rest: the
		// element is left as Git has it.
	}
}

func deepCopyJSON(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = deepCopyJSON(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = deepCopyJSON(x)
		}
		return out
	}
	return v
}
