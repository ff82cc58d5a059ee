package engine

import (
	"fmt"
	"sort"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// serverOwnedMetadata are metadata fields that say how the server stores an
// object, not what it is; they never count as a difference.
var serverOwnedMetadata = []string{"managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink"}

// normalize returns a copy of u without the fields a diff must ignore:
// server bookkeeping in metadata and status.
func normalize(u *unstructured.Unstructured) *unstructured.Unstructured {
	if u == nil {
		return nil
	}
	c := u.DeepCopy()
	for _, f := range serverOwnedMetadata {
		unstructured.RemoveNestedField(c.Object, "metadata", f)
	}
	unstructured.RemoveNestedField(c.Object, "status")
	if ann := c.GetAnnotations(); len(ann) == 0 {
		unstructured.RemoveNestedField(c.Object, "metadata", "annotations")
	}
	return c
}

// equalNormalized reports whether two objects are the same once normalized.
func equalNormalized(a, b *unstructured.Unstructured) bool {
	return equality.Semantic.DeepEqual(normalize(a).Object, normalize(b).Object)
}

// Secret values are replaced by these markers in every diff: the same
// value on both sides stays the same marker, a changed one differs, so a
// reader sees which keys were added, changed or removed, never a value.
const (
	maskedValue  = "*** (masked)"
	maskedBefore = "*** (masked, before)"
	maskedAfter  = "*** (masked, after)"
)

// maskSecrets returns copies of a live and a desired object with the values
// of Secret data replaced by markers. Non-Secrets are returned as they are.
func maskSecrets(live, want *unstructured.Unstructured) (*unstructured.Unstructured, *unstructured.Unstructured) {
	isSecret := func(u *unstructured.Unstructured) bool {
		return u != nil && u.GetKind() == "Secret" && u.GroupVersionKind().Group == ""
	}
	if !isSecret(live) && !isSecret(want) {
		return live, want
	}
	var l, w map[string]any
	if live != nil {
		live = live.DeepCopy()
		l = secretValues(live)
	}
	if want != nil {
		want = want.DeepCopy()
		w = secretValues(want)
	}
	mark := func(own, other map[string]any, changed string) {
		for k, v := range own {
			if ov, ok := other[k]; ok && equality.Semantic.DeepEqual(ov, v) {
				own[k] = maskedValue
			} else if ok {
				own[k] = changed
			} else {
				own[k] = maskedValue
			}
		}
	}
	lc, wc := copyMap(l), copyMap(w)
	mark(l, wc, maskedBefore)
	mark(w, lc, maskedAfter)
	return live, want
}

// secretValues returns the data map of a Secret (merging stringData into it
// for display), masked in place by the caller. Annotations that kubectl uses
// to keep a copy of the object are dropped, since they hold the values too.
func secretValues(u *unstructured.Unstructured) map[string]any {
	data, _, _ := unstructured.NestedMap(u.Object, "data")
	if data == nil {
		data = map[string]any{}
	}
	if sd, _, _ := unstructured.NestedMap(u.Object, "stringData"); sd != nil {
		for k, v := range sd {
			data[k] = v
		}
		unstructured.RemoveNestedField(u.Object, "stringData")
	}
	if ann := u.GetAnnotations(); ann != nil {
		delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
		u.SetAnnotations(ann)
	}
	if len(data) > 0 {
		u.Object["data"] = data
	}
	return data
}

func copyMap(m map[string]any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// unifiedDiff renders the difference between live and want (either may be
// nil) as a unified diff of their normalized YAML, Secret values masked.
func unifiedDiff(ref string, live, want *unstructured.Unstructured) (string, error) {
	live, want = maskSecrets(normalize(live), normalize(want))
	a, err := toYAML(live)
	if err != nil {
		return "", err
	}
	b, err := toYAML(want)
	if err != nil {
		return "", err
	}
	return difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A:        lines(a),
		B:        lines(b),
		FromFile: "live/" + ref,
		ToFile:   "desired/" + ref,
		Context:  3,
	})
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	// SplitLines would add an empty last line for the final newline.
	return difflib.SplitLines(strings.TrimSuffix(s, "\n"))
}

func toYAML(u *unstructured.Unstructured) (string, error) {
	if u == nil {
		return "", nil
	}
	data, err := yaml.Marshal(u.Object)
	if err != nil {
		return "", fmt.Errorf("rendering %s as YAML: %w", u.GetName(), err)
	}
	return string(data), nil
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
