package engine

import (
	"context"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// prune deletes the owned objects the plan found no longer desired: custom
// resources before CRDs, namespaces last. Each is checked once more right before deletion: it must
// still carry this app's label and owner annotation. It returns what it
// deleted.
func (m *Manager) prune(ctx context.Context, p *Plan) ([]*unstructured.Unstructured, error) {
	// Custom resources go before their CRDs, everything before namespaces.
	var namespaces, crds, others []*unstructured.Unstructured
	for _, u := range p.prune {
		switch gk := u.GroupVersionKind().GroupKind(); {
		case gk.Group == "" && gk.Kind == "Namespace":
			namespaces = append(namespaces, u)
		case gk.Group == "apiextensions.k8s.io" && gk.Kind == "CustomResourceDefinition":
			crds = append(crds, u)
		default:
			others = append(others, u)
		}
	}
	if len(p.prune) > 0 {
		p.progress("pruning %d object(s)", len(p.prune))
	}
	var deleted []*unstructured.Unstructured
	for _, group := range [][]*unstructured.Unstructured{others, crds, namespaces} {
		for _, u := range group {
			if !ownedBy(u, p.opts.App) {
				continue
			}
			// Preconditions make the delete fail if the object changed
			// hands since it was listed.
			err := m.client.Delete(ctx, u, client.Preconditions{UID: ptr(u.GetUID())}, client.PropagationPolicy("Background"))
			if client.IgnoreNotFound(err) != nil {
				return deleted, objectErrorf(u, "", "prune failed: %w", apiError(err, u))
			}
			deleted = append(deleted, u)
		}
	}
	return deleted, nil
}

// prunesLast says whether an object to prune asks to go last (Argo CD's
// PruneLast=true on it).
func prunesLast(objs []*unstructured.Unstructured) bool {
	for _, u := range objs {
		if argoSyncOption(u.GetAnnotations(), "PruneLast", "true") {
			return true
		}
	}
	return false
}

func ownedBy(u *unstructured.Unstructured, app App) bool {
	return u.GetLabels()[LabelApp] == app.Name && u.GetAnnotations()[AnnotationOwner] == app.String()
}

func ptr[T any](v T) *T { return &v }
