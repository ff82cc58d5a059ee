package engine

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/render"
)

// liveSet holds the live objects an app owns, found by label, keyed like the
// desired set.
type liveSet map[render.Key]*unstructured.Unstructured

// listOwned lists, once per kind, the live objects labelled as app's. kinds
// maps each kind to the namespaces its objects may be in (for the fallback
// when the caller may not list across namespaces). Kinds the cluster no
// longer serves are skipped.
func (m *Manager) listOwned(ctx context.Context, app App, kinds map[schema.GroupVersionKind]map[string]bool) (liveSet, error) {
	live := liveSet{}
	var mu sync.Mutex
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(m.opts.Concurrency)
	gvks := make([]schema.GroupVersionKind, 0, len(kinds))
	for gvk := range kinds {
		gvks = append(gvks, gvk)
	}
	sort.Slice(gvks, func(i, j int) bool { return gvks[i].String() < gvks[j].String() })
	for _, gvk := range gvks {
		g.Go(func() error {
			items, err := m.listKind(ctx, app, gvk, kinds[gvk])
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			for i := range items {
				u := &items[i]
				if u.GetAnnotations()[AnnotationOwner] != app.String() {
					continue // same app name, another record: not ours
				}
				live[render.KeyOf(u)] = u
			}
			return nil
		})
	}
	return live, g.Wait()
}

func (m *Manager) listKind(ctx context.Context, app App, gvk schema.GroupVersionKind, namespaces map[string]bool) ([]unstructured.Unstructured, error) {
	list := func(opts ...client.ListOption) ([]unstructured.Unstructured, error) {
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		err := m.client.List(ctx, l, append(opts, client.MatchingLabels{LabelApp: app.Name})...)
		return l.Items, err
	}
	items, err := list()
	switch {
	case err == nil:
		return items, nil
	case meta.IsNoMatchError(err) || apierrors.IsNotFound(err):
		return nil, nil
	case apierrors.IsForbidden(err) && len(namespaces) > 0:
		// Not allowed across namespaces: ask each namespace in turn.
		var all []unstructured.Unstructured
		for ns := range namespaces {
			items, err := list(client.InNamespace(ns))
			if err != nil && !apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("listing %s in %s: %w", gvk.Kind, ns, err)
			}
			all = append(all, items...)
		}
		return all, nil
	}
	return nil, fmt.Errorf("listing %s: %w", gvk.Kind, err)
}
