package controller

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/source"
)

// attempt is one reconcile's sync as far as it got: when it began, why,
// and the artifact, once fetched.
type attempt struct {
	start    time.Time
	trigger  engine.Trigger
	artifact *source.Artifact
	// chart is the chart fetched, for a chart source.
	chart *charts.Chart
	// inputs are the Helm values and postBuild variables read from the
	// cluster.
	inputs appspec.Inputs
	// recorded says engine.Run already wrote whatever history entry the
	// sync deserved.
	recorded bool
	// notify sends the app's events to its receivers (nil: none yet).
	notify *notifier
	// target is where the app's objects go, once known.
	target *target
	// account is the ServiceAccount the app runs as ("": the agent's).
	account string
	// allowChart is the Tenant's rule for chart URLs (nil: any).
	allowChart func(rawURL string) error
	// queue is whose turn the app's renders wait for (see render.Options).
	queue string
}

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
	if app.Spec.HistoryLimit != nil {
		opts.HistoryLimit = int(*app.Spec.HistoryLimit)
	}
	if a := run.artifact; a != nil {
		commit := a.Commit
		opts.Revision, opts.Ref, opts.Commit, opts.Signer = a.Revision, a.RefName, &commit, a.Signer
	}
	return opts
}

// recordFailure writes the history entry of a sync that failed before
// engine.Run (which records its own). A failure to write is logged, not
// returned: the failure itself is in the status.
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
// receivers; a sync that reverts drift is also DriftHealed.
type appEvents struct {
	recorder record.EventRecorder
	app      *v1alpha1.Application
	run      *attempt
}

func (e appEvents) Event(typ, reason, msg string) {
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

// refused handles what retrying cannot mend: a revision whose signature is
// missing or untrusted, or an app its Tenant's rules refuse. Nothing is
// rendered or applied, the previous state keeps running, and the app is
// Stalled, with reason and message, until its spec, its Tenant or its
// revision changes.
func (r *ApplicationReconciler) refused(ctx context.Context, app *v1alpha1.Application, run *attempt, reason string, err error, interval time.Duration) (ctrl.Result, error) {
	syncTotal.WithLabelValues("failed").Inc()
	r.recordFailure(ctx, app, run, err)
	msg := redact.Error(err)
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
