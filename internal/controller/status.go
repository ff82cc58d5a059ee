package controller

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/source"
)

// record writes a successful reconcile's outcome into status and emits an
// event when something changed.
// held says why an out-of-sync app was not applied.
func (r *ApplicationReconciler) record(app *v1alpha1.Application, artifact *source.Artifact, cs *engine.ChangeSet, health []engine.ObjectHealth, applied bool, held string) {
	counts := cs.Counts()
	outOfSync := !applied && cs.HasChanges()
	switch {
	case outOfSync:
		syncTotal.WithLabelValues("outofsync").Inc()
	case cs.HasChanges():
		syncTotal.WithLabelValues("synced").Inc()
	default:
		syncTotal.WithLabelValues("unchanged").Inc()
	}
	prevRevision := app.Status.Sync.Revision
	// What happened in between, when this success ends a run of failures.
	// The agent's memory counts failures whose status could not be
	// written (the apiserver was away).
	recovered := ""
	if f := r.takeFailure(client.ObjectKeyFromObject(app)); f.attempts > 0 {
		recovered = fmt.Sprintf(" (after %d failed attempt(s); the last: %s)", f.attempts, f.last)
	}
	app.Status.ObservedGeneration = app.Generation
	app.Status.Attempts = 0
	app.Status.LastError = ""
	app.Status.Sync.Revision = artifact.Revision
	app.Status.Sync.Commit = commitInfo(artifact)
	app.Status.Sync.Status = v1alpha1.SyncStatusSynced
	if outOfSync {
		app.Status.Sync.Status = v1alpha1.SyncStatusOutOfSync
	}
	app.Status.Health = aggregateHealth(health)
	app.Status.Resources = resourceStatuses(cs, health, applied)
	if applied && cs.HasChanges() {
		now := metav1.NewTime(r.now())
		app.Status.LastSyncTime = &now
	} else if outOfSync && app.Status.Sync.Revision != prevRevision {
		r.Recorder.Eventf(app, corev1.EventTypeNormal, v1alpha1.ReasonOutOfSync, "cluster differs from %s: %s", source.ShortRevision(artifact.Revision), counts)
	}
	apimeta.RemoveStatusCondition(&app.Status.Conditions, v1alpha1.ConditionStalled)
	switch {
	case outOfSync:
		setReady(app, metav1.ConditionFalse, v1alpha1.ReasonOutOfSync, fmt.Sprintf("cluster differs from %s (%s); %s", source.ShortRevision(artifact.Revision), counts, held))
		apimeta.RemoveStatusCondition(&app.Status.Conditions, v1alpha1.ConditionReconciling)
	case app.Status.Health.Status == v1alpha1.HealthProgressing || app.Status.Health.Status == v1alpha1.HealthMissing:
		setReady(app, metav1.ConditionFalse, v1alpha1.ReasonProgressing, "synced "+source.ShortRevision(artifact.Revision)+recovered+"; waiting for health: "+app.Status.Health.Message)
		setCondition(app, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonProgressing, app.Status.Health.Message)
	case app.Status.Health.Status == v1alpha1.HealthDegraded:
		setReady(app, metav1.ConditionFalse, v1alpha1.ReasonHealthCheckFailed, app.Status.Health.Message)
		apimeta.RemoveStatusCondition(&app.Status.Conditions, v1alpha1.ConditionReconciling)
	default:
		setReady(app, metav1.ConditionTrue, v1alpha1.ReasonSynced, fmt.Sprintf("synced %s and healthy%s", source.ShortRevision(artifact.Revision), recovered))
		apimeta.RemoveStatusCondition(&app.Status.Conditions, v1alpha1.ConditionReconciling)
	}
}

// failed records a failure and decides the retry. The last synced state
// keeps running: nothing is pruned when a fetch or render fails.
func (r *ApplicationReconciler) failed(ctx context.Context, app *v1alpha1.Application, run *attempt, reason string, err error, interval time.Duration) (ctrl.Result, error) {
	syncTotal.WithLabelValues("failed").Inc()
	r.recordFailure(ctx, app, run, err)
	msg := redact.Error(err)
	changed := app.Status.LastError != msg
	app.Status.LastError = msg
	app.Status.Attempts++
	r.noteFailure(client.ObjectKeyFromObject(app), app.Status.Attempts, msg)
	app.Status.ObservedGeneration = app.Generation
	if app.Status.Sync.Status == "" {
		app.Status.Sync.Status = v1alpha1.SyncStatusUnknown
	}
	setReady(app, metav1.ConditionFalse, reason, msg)
	apimeta.RemoveStatusCondition(&app.Status.Conditions, v1alpha1.ConditionReconciling)
	if changed {
		r.Recorder.Event(app, corev1.EventTypeWarning, reason, msg)
		if !run.recorded {
			// Failed before the sync itself (which sends its own).
			rev := ""
			if run.artifact != nil {
				rev = run.artifact.Revision
			}
			run.notify.send(v1alpha1.NotifySyncFailed, rev, reason+": "+msg)
		}
	}
	retry := app.Spec.SyncPolicy.Retry
	limit := int32(0)
	if retry != nil {
		limit = retry.Limit
	}
	final := terminal(reason, err)
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

// terminalRetries is how often a terminal failure is retried before the
// app stalls: an invalid object may only wait for a CRD another app
// installs, a failing render for nothing at all.
const terminalRetries = 3

// terminal reports whether a failure repeats for as long as the revision
// and the Application stay as they are: a render that fails, or objects
// the apiserver finds invalid. A validation that failed on what another
// app may yet provide (a namespace, a CRD's kind) is transient, as are
// fetch and apply failures: they back off and retry.
func terminal(reason string, err error) bool {
	switch reason {
	case v1alpha1.ReasonRenderFailed:
		return true
	case v1alpha1.ReasonValidationFailed:
		return !dependsOnCluster(err)
	}
	return false
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

// failure is what the agent remembers of an app's failed attempts.
type failure struct {
	attempts int32
	last     string
}

// noteFailure remembers attempt number n of an app and its error; a count
// lower than one remembered (its status write was lost) continues it.
func (r *ApplicationReconciler) noteFailure(key types.NamespacedName, n int32, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures == nil {
		r.failures = map[types.NamespacedName]failure{}
	}
	if prev := r.failures[key].attempts; n <= prev {
		n = prev + 1
	}
	r.failures[key] = failure{attempts: n, last: msg}
}

// takeFailure returns and forgets what noteFailure remembered.
func (r *ApplicationReconciler) takeFailure(key types.NamespacedName) failure {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.failures[key]
	delete(r.failures, key)
	return f
}

// backoff is the delay before retry number attempt (1-based).
func backoff(p *v1alpha1.RetryPolicy, attempt int32) time.Duration {
	base, factor, maxDelay := 5*time.Second, 2.0, 3*time.Minute
	if p != nil && p.Backoff != nil {
		base = durationOr(p.Backoff.Duration, base)
		if p.Backoff.Factor != nil {
			factor = float64(*p.Backoff.Factor)
		}
		maxDelay = durationOr(p.Backoff.MaxDuration, maxDelay)
	}
	d := time.Duration(float64(base) * math.Pow(factor, float64(attempt-1)))
	if d > maxDelay || d <= 0 {
		d = maxDelay
	}
	return d
}

func setReady(app *v1alpha1.Application, status metav1.ConditionStatus, reason, msg string) {
	setCondition(app, v1alpha1.ConditionReady, status, reason, msg)
}

func setCondition(app *v1alpha1.Application, typ string, status metav1.ConditionStatus, reason, msg string) {
	msg = redact.Message(msg)
	apimeta.SetStatusCondition(&app.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: app.Generation,
	})
}

func aggregateHealth(hs []engine.ObjectHealth) v1alpha1.HealthStatus {
	worst := v1alpha1.HealthHealthy
	msg := ""
	rank := map[v1alpha1.HealthStatusCode]int{v1alpha1.HealthHealthy: 0, v1alpha1.HealthUnknown: 1, v1alpha1.HealthProgressing: 2, v1alpha1.HealthMissing: 3, v1alpha1.HealthDegraded: 4}
	for _, h := range hs {
		code := healthCode(h.Status)
		if rank[code] > rank[worst] {
			worst, msg = code, h.Ref+": "+h.Status
			if h.Message != "" {
				msg += ": " + h.Message
			}
		}
	}
	return v1alpha1.HealthStatus{Status: worst, Message: msg}
}

func healthCode(kstatus string) v1alpha1.HealthStatusCode {
	switch kstatus {
	case "Current":
		return v1alpha1.HealthHealthy
	case "InProgress", "Terminating":
		return v1alpha1.HealthProgressing
	case "Failed":
		return v1alpha1.HealthDegraded
	case "NotFound":
		return v1alpha1.HealthMissing
	}
	return v1alpha1.HealthUnknown
}

func resourceStatuses(cs *engine.ChangeSet, health []engine.ObjectHealth, applied bool) []v1alpha1.ResourceStatus {
	hs := map[string]engine.ObjectHealth{}
	for _, h := range health {
		hs[h.Ref] = h
	}
	out := make([]v1alpha1.ResourceStatus, 0, len(cs.Changes))
	for _, c := range cs.Changes {
		group, version := "", c.APIVersion
		if g, v, ok := strings.Cut(c.APIVersion, "/"); ok {
			group, version = g, v
		}
		rs := v1alpha1.ResourceStatus{Group: group, Version: version, Kind: c.Kind, Namespace: c.Namespace, Name: c.Name, Status: v1alpha1.SyncStatusSynced}
		switch c.Action {
		case engine.ActionCreated, engine.ActionConfigured, engine.ActionDeleted:
			// In a plan these are pending; after an apply they are done.
			rs.Status = v1alpha1.SyncStatusSynced
			if !applied {
				rs.Status = v1alpha1.SyncStatusOutOfSync
			}
		case engine.ActionFailed, engine.ActionSkipped:
			rs.Status, rs.Message = v1alpha1.SyncStatusOutOfSync, c.Reason
		}
		if h, ok := hs[c.Ref]; ok {
			rs.Health = healthCode(h.Status)
			if rs.Message == "" {
				rs.Message = h.Message
			}
		}
		out = append(out, rs)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Kind+out[i].Namespace+out[i].Name < out[j].Kind+out[j].Namespace+out[j].Name
	})
	return out
}
