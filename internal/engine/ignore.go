package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/itchyny/gojq"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
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
	// ManagedFieldsManagers leave the fields these field managers own in
	// the live object's managedFields to them (Argo CD's): an operator's
	// defaulting, an HPA's replicas, whoever writes them. Their own
	// metadata labels and annotations included; other metadata and status
	// never count.
	ManagedFieldsManagers []string
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
	for i, m := range r.ManagedFieldsManagers {
		if m == "" || strings.HasPrefix(m, FieldManager) {
			return fmt.Errorf("%s.managedFieldsManagers[%d] %q: name another tool's field manager (converge's own fields are what it syncs)", r.Field, i, m)
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

// digest names what the rule selects.
func (r *IgnoreRule) digest() string {
	return digestStrings([]string{r.Group, r.Kind, r.Name, r.Namespace, strings.Join(r.JSONPointers, "\x00"),
		strings.Join(r.JQPathExpressions, "\x00"), strings.Join(r.ManagedFieldsManagers, "\x00")})
}

// digestStrings hashes a list of strings, each told apart from the next.
func digestStrings(parts []string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
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
		if len(r.ManagedFieldsManagers) > 0 {
			managed, err := managedPaths(live, r.ManagedFieldsManagers, maxIgnoredPaths-len(paths))
			if err != nil {
				return nil, fmt.Errorf("%s.managedFieldsManagers: %w", r.Field, err)
			}
			paths = append(paths, managed...)
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

// managedPaths are the leaf fields of live that managers own, by its
// managedFields, as paths that select list items by their keys (at most
// limit). Status and metadata other than labels and annotations are left
// out: they are not the desired object's to say.
func managedPaths(live *unstructured.Unstructured, managers []string, limit int) ([][]any, error) {
	var out [][]any
	for _, e := range live.GetManagedFields() {
		if !slices.Contains(managers, e.Manager) || e.FieldsV1 == nil {
			continue
		}
		set := &fieldpath.Set{}
		if err := set.FromJSON(bytes.NewReader(e.FieldsV1.Raw)); err != nil {
			return nil, fmt.Errorf("the fields %s owns: %w", e.Manager, err)
		}
		var err error
		set.Leaves().Iterate(func(p fieldpath.Path) {
			path := fieldPath(p)
			if path == nil || err != nil {
				return
			}
			if len(out) >= limit {
				err = fmt.Errorf("%s owns more than %d fields", e.Manager, maxIgnoredPaths)
				return
			}
			out = append(out, path)
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fieldPath turns a managedFields path into one getPath and setPath
// follow; nil for what is not the desired object's to say.
func fieldPath(p fieldpath.Path) []any {
	out := make([]any, 0, len(p))
	for _, e := range p {
		switch {
		case e.FieldName != nil:
			out = append(out, *e.FieldName)
		case e.Key != nil:
			k := keyElem{}
			for _, f := range *e.Key {
				k[f.Name] = f.Value.Unstructured()
			}
			out = append(out, k)
		case e.Value != nil:
			out = append(out, valueElem{(*e.Value).Unstructured()})
		case e.Index != nil:
			out = append(out, *e.Index)
		}
	}
	if len(out) == 0 || out[0] == "status" || out[0] == "apiVersion" || out[0] == "kind" {
		return nil
	}
	if out[0] == "metadata" && (len(out) < 3 || (out[1] != "labels" && out[1] != "annotations")) {
		return nil
	}
	return out
}

// keyElem selects the item of a list of maps whose fields have these
// values (a container by its name, a port by port and protocol).
type keyElem map[string]any

// valueElem selects the item of a list of scalars equal to v.
type valueElem struct{ v any }

// listIndex finds the item e selects in list.
func listIndex(list []any, e any) (int, bool) {
	switch k := e.(type) {
	case keyElem:
		for i, item := range list {
			m, ok := item.(map[string]any)
			if !ok {
				continue
			}
			match := true
			for name, want := range k {
				if !sameScalar(m[name], want) {
					match = false
					break
				}
			}
			if match {
				return i, true
			}
		}
		return 0, false
	case valueElem:
		for i, item := range list {
			if sameScalar(item, k.v) {
				return i, true
			}
		}
		return 0, false
	}
	i, ok := index(e)
	return i, ok && i < len(list)
}

// sameScalar compares scalars as JSON would (an int64 and a float64 of
// the same number are the same).
func sameScalar(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return fmt.Sprint(a) == fmt.Sprint(b)
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
			i, ok := listIndex(node, e)
			if !ok {
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
				if isListElem(path[i+1]) {
					return
				}
				next = map[string]any{}
				n[k] = next
			}
			node = next
		case []any:
			j, ok := listIndex(n, e)
			if !ok {
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

// isListElem says whether e can only select a list item.
func isListElem(e any) bool {
	switch e.(type) {
	case keyElem, valueElem:
		return true
	}
	_, ok := index(e)
	return ok
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
