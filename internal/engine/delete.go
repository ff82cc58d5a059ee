package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/render"
)

// Event reasons of an app's deletion.
const (
	EventDeleted      = "Deleted"
	EventDeleteFailed = "PruneFailed"
)

// DeleteOptions say what deleting an app runs besides pruning, and how it
// is recorded.
type DeleteOptions struct {
	// Objects is the app's rendered source, if it could be rendered: its
	// PreDelete hooks run before anything is deleted (a failure stops the
	// deletion), its PostDelete hooks after, and hook objects its earlier
	// syncs left behind are deleted. Nil deletes without hooks.
	Objects []render.Object
	// DefaultNamespace and Policy are as for the app's syncs.
	DefaultNamespace string
	Policy           *Policy
	Timeout          time.Duration
	Progress         func(string)
	// Records is where the app's inventory is kept (PlanOptions.Records).
	Records client.Client
	// History, when set, records the deletion in the app's history
	// (RunOptions.History); Mode and HistoryLimit are as for its syncs.
	History      client.Client
	Mode         string
	HistoryLimit int
	// Events, if set, receives the deletion's one outcome event:
	// Deleted or PruneFailed.
	Events Events
	// NoDiffs is as for a plan (PlanOptions.NoDiffs).
	NoDiffs bool
}

// Delete removes everything app owns (as Sync with an empty desired set and
// prune would, custom resources before CRDs, namespaces last) and then its
// record. Objects marked to outlive a prune or the app (converge.dev/prune
// or converge.dev/delete "false", Argo CD's Prune=false or Delete=false,
// Flux's prune: disabled, Helm's keep) are left. The deletion is recorded
// like a sync, its hooks and what was kept included (the history outlives
// the app as its audit trail), and announced by one event.
func (m *Manager) Delete(ctx context.Context, app App, opts DeleteOptions) (*Result, error) {
	run := RunOptions{
		SyncOptions: SyncOptions{PlanOptions: PlanOptions{App: app}},
		Mode:        opts.Mode, Trigger: Trigger{Type: TriggerDeletion},
		History: opts.History, HistoryLimit: opts.HistoryLimit, Started: time.Now(),
	}
	res := &Result{}
	err := m.deleteApp(ctx, app, opts, res)
	if res.Changes != nil {
		res.Counts = res.Changes.Counts()
	}
	record(ctx, res, run, err)
	switch {
	case err != nil || res.HistoryError == nil:
	case namespaceGoing(res.HistoryError):
		// The app's namespace is being deleted, its record with it: the
		// deletion must not wait for a record that can no longer be
		// written (the namespace would wait for the app for ever).
	default:
		err = res.HistoryError
	}
	switch {
	case opts.Events == nil:
	case err != nil:
		opts.Events.Event("Warning", EventDeleteFailed, redact.Error(err))
	default:
		opts.Events.Event("Normal", EventDeleted, fmt.Sprintf("deleted what %s owned (%s, %s): %s%s%s",
			app, run.Trigger, run.Mode, res.Counts, keptSummary(res.Changes), hookSummary(res.Hooks)))
	}
	return res, err
}

// namespaceGoing says err is a write refused because its namespace is
// being deleted, or is gone.
func namespaceGoing(err error) bool {
	var status apierrors.APIStatus
	if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
		return true
	}
	return apierrors.IsNotFound(err) && errors.As(err, &status) && status.Status().Details != nil && status.Status().Details.Kind == "namespaces"
}

// deleteApp runs the PreDelete hooks, prunes, runs the PostDelete hooks
// and deletes the inventory, into res.
func (m *Manager) deleteApp(ctx context.Context, app App, opts DeleteOptions, res *Result) error {
	var hooks []*hook
	if len(opts.Objects) > 0 {
		var err error
		if _, hooks, err = m.splitHooks(app, opts.DefaultNamespace, opts.Policy, opts.Objects); err != nil {
			return err
		}
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	results, err := m.runHooks(ctx, app, hooks, PhasePreDelete, always, timeout, opts.Progress)
	res.Hooks = append(res.Hooks, results...)
	if err != nil {
		return fmt.Errorf("not deleted: %w", err)
	}
	m.deleteLeftHooks(ctx, app, hooks)
	res.Changes, err = m.Sync(ctx, nil, SyncOptions{PlanOptions: PlanOptions{App: app, Prune: true, AppDeleted: true, AllowEmpty: true, Records: opts.Records, NoDiffs: opts.NoDiffs}})
	res.Applied = true
	if err != nil {
		return err
	}
	results, err = m.runHooks(ctx, app, hooks, PhasePostDelete, always, timeout, opts.Progress)
	res.Hooks = append(res.Hooks, results...)
	if err != nil {
		return err
	}
	rec := &corev1.ConfigMap{}
	rec.Namespace, rec.Name = app.Namespace, InventoryName(app.Name)
	if err := client.IgnoreNotFound(m.records(opts.Records).Delete(ctx, rec)); err != nil {
		return fmt.Errorf("deleting the record of %s: %w", app, err)
	}
	return nil
}

// keptSummary names how many objects a deletion left in place.
func keptSummary(cs *ChangeSet) string {
	if cs == nil {
		return ""
	}
	kept := 0
	for _, c := range cs.Changes {
		if c.Action == ActionSkipped && c.Kept != "" {
			kept++
		}
	}
	if kept == 0 {
		return ""
	}
	return fmt.Sprintf(", %d kept", kept)
}

// deleteLeftHooks deletes what earlier syncs' hooks left (those whose
// policy keeps them), of the kinds the app's hooks are: hook objects are
// in no inventory, so pruning does not find them. PreDelete and PostDelete
// hooks are left to their own delete policies.
func (m *Manager) deleteLeftHooks(ctx context.Context, app App, hooks []*hook) {
	seen := map[string]bool{}
	for _, h := range hooks {
		key := h.gvk.String() + "/" + h.obj.GetNamespace()
		if seen[key] {
			continue
		}
		seen[key] = true
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(h.gvk.GroupVersion().WithKind(h.gvk.Kind + "List"))
		if err := m.client.List(ctx, list, client.InNamespace(h.obj.GetNamespace()), client.MatchingLabels{LabelHook: app.Name}); err != nil {
			continue
		}
		for i := range list.Items {
			u := &list.Items[i]
			if u.GetAnnotations()[AnnotationOwner] != app.String() {
				continue
			}
			if phases, _, _ := hookSpec(u.GetAnnotations()); phases[PhasePreDelete] != 0 || phases[PhasePostDelete] != 0 {
				continue
			}
			_ = client.IgnoreNotFound(m.client.Delete(ctx, u, client.PropagationPolicy(metav1.DeletePropagationBackground)))
		}
	}
}
