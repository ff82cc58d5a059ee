package engine

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// ErrPolicy is wrapped by every refusal of a desired object by a Policy.
var ErrPolicy = errors.New("refused by policy")

// Policy bounds what one app may put in the cluster: a tenant's limits,
// checked for every desired object before anything is asked of the
// cluster. The zero Policy allows nothing.
type Policy struct {
	// Name names the policy in refusals, e.g. "Tenant team-a".
	Name string
	// Namespaces are where namespaced objects may go: names, or patterns
	// as path.Match reads them ("team-a-*"). A Namespace object counts as
	// being in the namespace it names.
	Namespaces []string
	// ClusterKinds are the cluster-scoped kinds allowed; none when empty.
	ClusterKinds []GroupKind
	// DeniedKinds are refused everywhere, whatever else allows them.
	DeniedKinds []GroupKind
}

// GroupKind names a kind; "*" in either field matches any.
type GroupKind struct {
	Group string `json:"group"`
	Kind  string `json:"kind"`
}

func (g GroupKind) matches(gk schema.GroupKind) bool {
	return (g.Group == "*" || g.Group == gk.Group) && (g.Kind == "*" || g.Kind == gk.Kind)
}

func matchesAny(kinds []GroupKind, gk schema.GroupKind) bool {
	for _, k := range kinds {
		if k.matches(gk) {
			return true
		}
	}
	return false
}

// MatchName reports whether name matches one of patterns (exact names or
// path.Match patterns).
func MatchName(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok || p == name {
			return true
		}
	}
	return false
}

// admit refuses u (of a kind that is namespaced or not) when the policy
// does not allow it; the error names the object, its file and the rule.
func (p *Policy) admit(u *unstructured.Unstructured, source string, namespaced bool) error {
	if p == nil {
		return nil
	}
	gk := u.GroupVersionKind().GroupKind()
	refuse := func(format string, args ...any) error {
		return objectErrorf(u, source, "%w: %s", ErrPolicy, p.Name+" "+fmt.Sprintf(format, args...))
	}
	if matchesAny(p.DeniedKinds, gk) {
		return refuse("denies kind %s", kindName(gk))
	}
	if !namespaced {
		if !matchesAny(p.ClusterKinds, gk) {
			return refuse("allows no cluster-scoped %s", kindName(gk))
		}
		if gk == (schema.GroupKind{Kind: "Namespace"}) && !MatchName(p.Namespaces, u.GetName()) {
			return refuse("allows namespaces %s only", strings.Join(p.Namespaces, ", "))
		}
		return nil
	}
	if !MatchName(p.Namespaces, u.GetNamespace()) {
		return refuse("allows namespaces %s only", strings.Join(p.Namespaces, ", "))
	}
	return nil
}

func kindName(gk schema.GroupKind) string {
	if gk.Group == "" {
		return gk.Kind
	}
	return gk.Kind + "." + gk.Group
}
