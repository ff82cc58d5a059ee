package engine

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// ResourceSelector picks objects for a selective sync, in Argo CD's words:
// GROUP:KIND:NAME or GROUP:KIND:NAMESPACE/NAME, the group empty for the
// core group (":ConfigMap:settings"). A selector without a namespace
// matches the name in any namespace.
type ResourceSelector struct {
	Group, Kind, Namespace, Name string
}

// MaxResourceSelectors bounds a selective sync's selectors.
const MaxResourceSelectors = 64

// ParseResourceSelector reads GROUP:KIND:NAME or GROUP:KIND:NAMESPACE/NAME.
func ParseResourceSelector(s string) (ResourceSelector, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" || len(s) > 512 {
		return ResourceSelector{}, fmt.Errorf("resource %q: want GROUP:KIND:NAME or GROUP:KIND:NAMESPACE/NAME (an empty group for the core group: :ConfigMap:settings)", s)
	}
	sel := ResourceSelector{Group: parts[0], Kind: parts[1], Name: parts[2]}
	if ns, name, ok := strings.Cut(parts[2], "/"); ok {
		if ns == "" || name == "" || strings.Contains(name, "/") {
			return ResourceSelector{}, fmt.Errorf("resource %q: want NAMESPACE/NAME after the kind", s)
		}
		sel.Namespace, sel.Name = ns, name
	}
	return sel, nil
}

func (s ResourceSelector) String() string {
	if s.Namespace != "" {
		return s.Group + ":" + s.Kind + ":" + s.Namespace + "/" + s.Name
	}
	return s.Group + ":" + s.Kind + ":" + s.Name
}

func (s ResourceSelector) matches(u *unstructured.Unstructured) bool {
	gvk := u.GroupVersionKind()
	return s.Group == gvk.Group && s.Kind == gvk.Kind && s.Name == u.GetName() && (s.Namespace == "" || s.Namespace == u.GetNamespace())
}

// selected says whether a selective sync (only) takes u; every object is
// when there is no selection.
func selected(only []ResourceSelector, u *unstructured.Unstructured) bool {
	if len(only) == 0 {
		return true
	}
	for _, s := range only {
		if s.matches(u) {
			return true
		}
	}
	return false
}
