package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tenancy"
)

// outcomeKind is how a failed reconcile ends.
type outcomeKind int

const (
	// outcomeRetry backs off and tries again.
	outcomeRetry outcomeKind = iota
	// outcomeTerminal will fail again for as long as the revision and
	// the Application stay as they are: a few retries, then a stall.
	outcomeTerminal
	// outcomeRefused cannot be mended by retrying (a rule, a signature):
	// Stalled until the spec, the Tenant or the revision changes.
	outcomeRefused
	// outcomeUnavailable is a destination Cluster that cannot be used:
	// no failed sync, only a status; its recovery wakes the app.
	outcomeUnavailable
	// outcomeBusy is the tenant's share of the render slots in use: try
	// again in a second, write nothing.
	outcomeBusy
)

// outcome is what a failed reconcile means: its kind and the reason its
// status and event carry.
type outcome struct {
	kind   outcomeKind
	reason string
}

// stepError is a failure of one step of the reconcile, which gives it a
// reason unless classify finds a more specific one in the error.
type stepError struct {
	reason string
	refuse bool
	err    error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// failAs fails a step with reason (retried).
func failAs(reason string, err error) error { return &stepError{reason: reason, err: err} }

// refuseAs refuses with reason: retrying cannot mend it.
func refuseAs(reason string, err error) error {
	return &stepError{reason: reason, refuse: true, err: err}
}

// classify says what err means for the app: the one place that reads
// failures by their type. More specific errors win over the step's reason.
func classify(err error) outcome {
	var (
		cerr *ClusterError
		verr *source.VerificationError
		serr *stepError
		herr *engine.HookError
		vale *engine.ValidationError
		caps *capabilitiesError
		ferr *appspec.FetchError
	)
	switch {
	case errors.Is(err, render.ErrBusy):
		return outcome{outcomeBusy, ""}
	case errors.As(err, &cerr):
		return outcome{outcomeUnavailable, cerr.Reason}
	case tenancy.Refused(err), errors.Is(err, engine.ErrPolicy):
		return outcome{outcomeRefused, v1alpha1.ReasonPolicyViolation}
	case errors.As(err, &verr):
		return outcome{outcomeRefused, v1alpha1.ReasonVerificationFailed}
	case errors.As(err, &serr) && serr.refuse:
		return outcome{outcomeRefused, serr.reason}
	case errors.As(err, &herr):
		return outcome{outcomeRetry, v1alpha1.ReasonHookFailed}
	case errors.As(err, &vale), errors.Is(err, engine.ErrUnknownKind):
		// A validation that failed on what another app may yet provide
		// (a namespace, a CRD's kind) is transient.
		if dependsOnCluster(err) {
			return outcome{outcomeRetry, v1alpha1.ReasonValidationFailed}
		}
		return outcome{outcomeTerminal, v1alpha1.ReasonValidationFailed}
	case errors.Is(err, engine.ErrEmptyRender):
		return outcome{outcomeTerminal, v1alpha1.ReasonRenderFailed}
	case errors.As(err, &caps):
		return outcome{outcomeRetry, v1alpha1.ReasonApplyFailed}
	case charts.Transient(err), errors.As(err, &ferr):
		return outcome{outcomeRetry, v1alpha1.ReasonFetchFailed}
	case errors.As(err, &serr):
		if serr.reason == v1alpha1.ReasonRenderFailed {
			return outcome{outcomeTerminal, serr.reason}
		}
		return outcome{outcomeRetry, serr.reason}
	}
	return outcome{outcomeRetry, v1alpha1.ReasonApplyFailed}
}

// dependsOnCluster reports whether err (any of a ValidationError's) is
// about something missing from the cluster rather than the object itself.
func dependsOnCluster(err error) bool {
	var verr *engine.ValidationError
	if errors.As(err, &verr) {
		for _, e := range verr.Errors {
			if dependsOnCluster(e) {
				return true
			}
		}
		return false
	}
	return errors.Is(err, engine.ErrUnknownKind) || apierrors.IsNotFound(err) || apimeta.IsNoMatchError(err)
}

// settle writes the outcome of a reconcile that failed with err, as
// classify reads it, and decides when to look again. The last synced
// state keeps running: nothing is pruned when a step fails.
func (r *ApplicationReconciler) settle(ctx context.Context, app *v1alpha1.Application, run *attempt, err error, interval time.Duration) (ctrl.Result, error) {
	o := classify(err)
	if o.kind != outcomeBusy {
		reconcileErrors.WithLabelValues(o.reason).Inc()
	}
	switch o.kind {
	case outcomeBusy:
		return ctrl.Result{RequeueAfter: time.Second}, nil
	case outcomeUnavailable:
		return r.unavailable(ctx, app, err, interval)
	case outcomeRefused:
		return r.refused(ctx, app, run, o.reason, err, interval)
	}
	return r.failed(ctx, app, run, o, err, interval)
}

// terminalRetries is how often a terminal failure is retried before the
// app stalls: an invalid object may only wait for a CRD another app
// installs, a failing render for nothing at all.
const terminalRetries = 3

// failed records a failure and decides the retry. The last synced state
// keeps running: nothing is pruned when a fetch or render fails.
func (r *ApplicationReconciler) failed(ctx context.Context, app *v1alpha1.Application, run *attempt, o outcome, err error, interval time.Duration) (ctrl.Result, error) {
	reason := o.reason
	syncTotal.WithLabelValues("failed").Inc()
	r.recordFailure(ctx, app, run, err)
	msg := redact.Error(err)
	app.Status.LastError = msg
	app.Status.Attempts++
	r.noteFailure(client.ObjectKeyFromObject(app), app.Status.Attempts, msg)
	app.Status.ObservedGeneration = app.Generation
	if app.Status.Sync.Status == "" {
		app.Status.Sync.Status = v1alpha1.SyncStatusUnknown
	}
	setReady(app, metav1.ConditionFalse, reason, msg)
	apimeta.RemoveStatusCondition(&app.Status.Conditions, v1alpha1.ConditionReconciling)
	retry := app.Spec.SyncPolicy.Retry
	limit := int32(0)
	if retry != nil {
		limit = retry.Limit
	}
	final := o.kind == outcomeTerminal
	if final && (limit == 0 || limit > terminalRetries) {
		limit = terminalRetries
	}
	if final && run.artifact != nil {
		// Stalled from the first failure (kstatus: it will not resolve
		// without a change), so `converge wait` and other tools stop
		// waiting at once; the few retries below cost nothing if it
		// does not, and clear it if it does.
		setCondition(app, v1alpha1.ConditionStalled, metav1.ConditionTrue, reason,
			fmt.Sprintf("%s cannot be synced as it is: %s", source.ShortRevision(run.artifact.Revision), msg))
	}
	if limit > 0 && app.Status.Attempts > limit {
		if final && run.artifact != nil {
			// Retrying this revision would fail the same way: stall
			// until a new revision, a spec change or a request.
			r.stall(client.ObjectKeyFromObject(app), run.artifact.Revision, app.Generation)
			setCondition(app, v1alpha1.ConditionStalled, metav1.ConditionTrue, reason,
				fmt.Sprintf("%s failed %d times; waiting for a new revision, a change to the Application or a sync request: %s", source.ShortRevision(run.artifact.Revision), app.Status.Attempts, msg))
			return ctrl.Result{RequeueAfter: interval}, nil
		}
		setCondition(app, v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonRetryLimitReached,
			fmt.Sprintf("gave up after %d attempts: %s", limit, msg))
		return ctrl.Result{RequeueAfter: interval}, nil
	}
	return ctrl.Result{RequeueAfter: backoff(retry, app.Status.Attempts)}, nil
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

// unavailable reports that app's destination cannot be used (no such
// Cluster, bad credentials, no answer): Ready=False with the Cluster's
// reason, and nothing else. It is no failed sync: no attempt is counted,
// no history entry written, nothing is fetched; the Cluster's recovery
// (its Ready condition) wakes the app.
func (r *ApplicationReconciler) unavailable(ctx context.Context, app *v1alpha1.Application, err error, interval time.Duration) (ctrl.Result, error) {
	var cerr *ClusterError
	if !errors.As(err, &cerr) {
		return ctrl.Result{}, err
	}
	// The next reconcile must plan and write a status again, even if
	// nothing changed meanwhile.
	r.setIdle(client.ObjectKeyFromObject(app), nil)
	msg := cerr.Error()
	if app.Status.LastError != msg {
		r.Recorder.Event(app, corev1.EventTypeWarning, cerr.Reason, msg)
	}
	app.Status.LastError = msg
	app.Status.ObservedGeneration = app.Generation
	if app.Status.Sync.Status == "" {
		app.Status.Sync.Status = v1alpha1.SyncStatusUnknown
	}
	setReady(app, metav1.ConditionFalse, cerr.Reason, msg)
	apimeta.RemoveStatusCondition(&app.Status.Conditions, v1alpha1.ConditionReconciling)
	log.FromContext(ctx).V(1).Info("destination unavailable", "cluster", cerr.Cluster, "reason", cerr.Reason)
	return ctrl.Result{RequeueAfter: min(interval, 30*time.Second)}, nil
}
