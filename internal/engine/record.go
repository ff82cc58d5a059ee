package engine

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

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
