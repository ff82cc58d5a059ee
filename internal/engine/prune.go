package engine

import (
	"context"
	"maps"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/render"
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

func ownedBy(u *unstructured.Unstructured, app App) bool {
	return u.GetLabels()[LabelApp] == app.Name && u.GetAnnotations()[AnnotationOwner] == app.String()
}

func ptr[T any](v T) *T { return &v }

// recordSync writes the inventory after a sync: every desired object that
// was applied (with the new resourceVersion) or found unchanged, every
// previously owned object that is still there (not pruned, or pruning
// failed). Objects kept by converge.dev/prune: "false" leave the inventory.
// Nothing is written when the inventory is as it was.
func (m *Manager) recordSync(ctx context.Context, p *Plan, applied *appliedSet, deleted []*unstructured.Unstructured) error {
	prev := p.inventory
	next := &Inventory{Revision: prev.Revision, Entries: make(map[render.Key]Entry, len(p.objects))}
	if p.opts.Revision != "" {
		next.Revision = p.opts.Revision
	}
	desiredKeys := make(map[render.Key]bool, len(p.objects))
	for _, d := range p.objects {
		desiredKeys[d.key] = true
		old, had := prev.Entries[d.key]
		e := Entry{Group: d.gvk.Group, Version: d.gvk.Version, Kind: d.gvk.Kind, Namespace: d.obj.GetNamespace(), Name: d.obj.GetName(), Hash: d.hash}
		switch rv, ok := applied.rv[d.key]; {
		case ok:
			e.ResourceVersion = rv
		case d.action == ActionUnchanged && had && old.Hash == d.hash:
			e = old
		case d.action == ActionUnchanged && d.live != nil:
			e.ResourceVersion = d.live.GetResourceVersion()
		case had:
			e = old // not applied this time: the cluster still has the old state
		default:
			continue
		}
		next.Entries[d.key] = e
	}
	gone := map[render.Key]bool{}
	for _, u := range deleted {
		gone[render.KeyOf(u)] = true
	}
	for _, c := range p.pruneChanges {
		if c.Action == ActionSkipped && c.Reason == AnnotationPrune+": \"false\"" {
			gone[render.Key{Group: groupOf(c.APIVersion), Kind: c.Kind, Namespace: c.Namespace, Name: c.Name}] = true
		}
	}
	for k, e := range prev.Entries {
		if !desiredKeys[k] && !gone[k] && p.live[k] != nil {
			next.Entries[k] = e
		}
	}
	if p.hadInventory && next.Revision == prev.Revision && maps.Equal(next.Entries, prev.Entries) {
		return nil
	}
	if !p.hadInventory && len(next.Entries) == 0 {
		return nil
	}
	return m.saveInventory(ctx, p.opts.App, next)
}

func groupOf(apiVersion string) string {
	for i := 0; i < len(apiVersion); i++ {
		if apiVersion[i] == '/' {
			return apiVersion[:i]
		}
	}
	return ""
}

// result is the change set of a plan's objects and deletions, or of a
// sync once applied is known: objects whose apply failed are marked
// failed, and when the sync stopped early (err), those it did not reach are
// marked skipped.
func result(objects []*desired, pruneChanges []Change, applied *appliedSet, err error) *ChangeSet {
	cs := &ChangeSet{}
	for _, d := range objects {
		c := changeFor(d, d.action)
		c.Reason, c.Diff = d.reason, d.diff
		if applied != nil && (d.action == ActionCreated || d.action == ActionConfigured) {
			if ferr, failed := applied.failed[d.key]; failed {
				c.Action, c.Reason = ActionFailed, ferr.Error()
			} else if _, ok := applied.rv[d.key]; !ok && err != nil {
				c.Action, c.Reason = ActionSkipped, "not applied: the sync stopped before it"
			}
		}
		cs.add(c)
	}
	for _, c := range pruneChanges {
		cs.add(c)
	}
	cs.sort()
	return cs
}
