package controller

import (
	"context"
	"errors"

	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/source"
)

// runOptions describes app's sync for its history entry and events; the
// caller adds what to plan and whether to apply.
func (r *ApplicationReconciler) runOptions(app *v1alpha1.Application, run *attempt) engine.RunOptions {
	opts := engine.RunOptions{
		Mode:    engine.ModePull,
		Cluster: app.Spec.Destination.Cluster,
		Trigger: run.trigger,
		History: r.Engine.Client(),
		Events:  appEvents{r.Recorder, app, run},
		Started: run.start,
	}
	opts.App = engine.App{Name: app.Name, Namespace: app.Namespace}
	opts.HistoryLimit = app.Spec.GetHistoryLimit()
	if a := run.artifact; a != nil {
		commit := a.Commit
		opts.Revision, opts.Ref, opts.Commit, opts.Signer = a.Revision, a.RefName, &commit, a.Signer
	}
	return opts
}

// recordFailure concludes a sync that failed before engine.Run (which
// concludes its own) as the engine does: SyncFailed and a history entry.
// A failure to write is logged, not returned: the failure itself is in
// the status.
func (r *ApplicationReconciler) recordFailure(ctx context.Context, app *v1alpha1.Application, run *attempt, syncErr error) {
	if run.recorded {
		return
	}
	opts := r.runOptions(app, run)
	var verr *source.VerificationError
	if errors.As(syncErr, &verr) {
		opts.Revision = verr.Revision
	}
	if err := engine.RecordFailure(ctx, opts, syncErr); err != nil {
		log.FromContext(ctx).Error(err, "recording sync history")
	}
}

// appEvents puts a sync's events on its Application and sends them to its
// receivers; a sync that reverts drift is also DriftHealed. A failure the
// status already holds (the same failure retried) is announced once.
type appEvents struct {
	recorder record.EventRecorder
	app      *v1alpha1.Application
	run      *attempt
}

func (e appEvents) Event(typ, reason, msg string) {
	if reason == engine.EventSyncFailed && msg == e.app.Status.LastError {
		return
	}
	e.recorder.Event(e.app, typ, reason, msg)
	ev, ok := notifyEvent(reason)
	if !ok || e.run == nil {
		return
	}
	revision := ""
	if e.run.artifact != nil {
		revision = e.run.artifact.Revision
	}
	e.run.notify.send(ev, revision, msg)
	if ev == v1alpha1.NotifySyncSucceeded && e.run.trigger.Type == engine.TriggerDrift {
		e.run.notify.send(v1alpha1.NotifyDriftHealed, revision, msg)
	}
}
