package controller

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/source"
)

// syncRun gathers what the history entry of one reconcile needs.
type syncRun struct {
	start    time.Time
	trigger  engine.Trigger
	artifact *source.Artifact
	changes  *engine.ChangeSet
	applied  bool
	// record says the reconcile was a sync worth an entry (a new
	// revision, a request, or changes applied); failures always are.
	record bool
}

// appendHistory writes the run into the app's history record. A failure to
// write is logged, not returned: the sync itself happened.
func (r *ApplicationReconciler) appendHistory(ctx context.Context, app *v1alpha1.Application, run *syncRun, syncErr error) {
	e := engine.NewHistoryEntry(run.changes, syncErr, run.applied || syncErr != nil)
	e.Mode = "pull"
	e.Trigger = run.trigger
	if e.Trigger.Type == "" {
		e.Trigger.Type = engine.TriggerInterval
	}
	e.StartedAt, e.FinishedAt = run.start.UTC(), r.now().UTC()
	if a := run.artifact; a != nil {
		e.Revision, e.Ref = a.Revision, a.RefName
		commit := a.Commit
		commit.Date = commit.Date.UTC()
		e.Commit, e.Signer = &commit, a.Signer
	}
	var verr *source.VerificationError
	if errors.As(syncErr, &verr) {
		e.Revision = verr.Revision
	}
	limit := 0
	if app.Spec.HistoryLimit != nil {
		limit = int(*app.Spec.HistoryLimit)
	}
	if _, err := engine.AppendHistory(ctx, r.Engine.Client(), engine.App{Name: app.Name, Namespace: app.Namespace}, e, limit); err != nil {
		log.FromContext(ctx).Error(err, "recording sync history")
	}
}

// refused handles what retrying cannot mend: a revision whose signature is
// missing or untrusted, or an app its Tenant's rules refuse. Nothing is
// rendered or applied, the previous state keeps running, and the app is
// Stalled, with reason and message, until its spec, its Tenant or its
// revision changes.
func (r *ApplicationReconciler) refused(ctx context.Context, app *v1alpha1.Application, run *syncRun, reason string, err error, interval time.Duration) (ctrl.Result, error) {
	syncTotal.WithLabelValues("failed").Inc()
	r.appendHistory(ctx, app, run, err)
	msg := err.Error()
	if app.Status.LastError != msg {
		r.Recorder.Event(app, corev1.EventTypeWarning, reason, msg)
	}
	app.Status.LastError = msg
	app.Status.ObservedGeneration = app.Generation
	if app.Status.Sync.Status == "" {
		app.Status.Sync.Status = v1alpha1.SyncStatusUnknown
	}
	setReady(app, metav1.ConditionFalse, reason, msg)
	setCondition(app, v1alpha1.ConditionStalled, metav1.ConditionTrue, reason, msg)
	apimeta.RemoveStatusCondition(&app.Status.Conditions, v1alpha1.ConditionReconciling)
	return ctrl.Result{RequeueAfter: interval}, nil
}
