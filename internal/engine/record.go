package engine

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Health reports the kstatus of every object in app's inventory.
func (m *Manager) Health(ctx context.Context, app App) ([]ObjectHealth, error) {
	inv, _, err := m.loadInventory(ctx, app)
	if err != nil {
		return nil, err
	}
	objs := make([]*desired, 0, len(inv.Entries))
	for k, e := range inv.Entries {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(e.gvk())
		u.SetNamespace(e.Namespace)
		u.SetName(e.Name)
		objs = append(objs, &desired{obj: u, key: k, gvk: e.gvk()})
	}
	return m.health(ctx, app, objs)
}

// OwnedKinds returns the kinds in app's inventory.
func (m *Manager) OwnedKinds(ctx context.Context, app App) ([]schema.GroupVersionKind, error) {
	inv, _, err := m.loadInventory(ctx, app)
	if err != nil {
		return nil, err
	}
	seen := map[schema.GroupVersionKind]bool{}
	var out []schema.GroupVersionKind
	for _, e := range inv.Entries {
		if !seen[e.gvk()] {
			seen[e.gvk()] = true
			out = append(out, e.gvk())
		}
	}
	return out, nil
}

// Delete removes everything app owns (as Sync with an empty desired set and
// prune would, custom resources before CRDs, namespaces last) and then its
// record. Objects annotated converge.dev/prune: "false" are left.
func (m *Manager) Delete(ctx context.Context, app App) (*ChangeSet, error) {
	cs, err := m.Sync(ctx, nil, SyncOptions{PlanOptions: PlanOptions{App: app, Prune: true, AllowEmpty: true}})
	if err != nil {
		return cs, err
	}
	rec := &corev1.ConfigMap{}
	rec.Namespace, rec.Name = app.Namespace, InventoryName(app.Name)
	if err := client.IgnoreNotFound(m.client.Delete(ctx, rec)); err != nil {
		return cs, fmt.Errorf("deleting the record of %s: %w", app, err)
	}
	return cs, nil
}
