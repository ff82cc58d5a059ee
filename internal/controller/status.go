package controller

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/source"
)

// record writes a successful reconcile's outcome into status and emits an
// event when something changed.
// held says why an out-of-sync app was not applied.
func (r *ApplicationReconciler) record(app *v1alpha1.Application, artifact *source.Artifact, cs *engine.ChangeSet, health []engine.ObjectHealth, applied bool, held string) {
	counts := cs.Counts()
	// A selective sync that left a change out leaves the app OutOfSync.
	outOfSync := (!applied && cs.HasChanges()) || cs.HasUnselected()
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
	app.Status.Health = aggregateHealth(selfRef(app), health)
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

// moved records that a Synced and Healthy app is at artifact's revision,
// from chart (if any), with nothing to sync: its objects, their health
// and its last sync time stay.
func moved(app *v1alpha1.Application, artifact *source.Artifact, chart *charts.Chart) {
	app.Status.Sync.Revision = artifact.Revision
	app.Status.Sync.Commit = commitInfo(artifact)
	app.Status.Sync.Chart = chartStatus(chart)
	setReady(app, metav1.ConditionTrue, v1alpha1.ReasonSynced, fmt.Sprintf("synced %s and healthy", source.ShortRevision(artifact.Revision)))
}

// chartStatus is what the status says of chart (nil: none).
func chartStatus(ch *charts.Chart) *v1alpha1.ChartStatus {
	if ch == nil {
		return nil
	}
	return &v1alpha1.ChartStatus{Name: ch.Name, Version: ch.Version, Digest: ch.Digest}
}

// writeStatus writes obj's status: the one conflict policy of every
// reconciler. A conflict means the copy reconciled was stale; the status is
// derived from the world, so nothing is lost by reconciling again at once
// (requeue) and recomputing it. Any other error is returned.
//
// With base, obj as it was read, only what changed is sent (a merge patch
// that still fails on a stale copy): an app's status lists every object it
// owns, so a request that changes one condition of an app of 1,000 objects
// stays small. Without base, the whole status is sent.
func writeStatus(ctx context.Context, c client.Client, obj, base client.Object) (requeue bool, err error) {
	if base != nil {
		err = c.Status().Patch(ctx, obj, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	} else {
		err = c.Status().Update(ctx, obj)
	}
	if apierrors.IsConflict(err) {
		return true, nil
	}
	return false, err
}

// backoff is the delay before retry number attempt (1-based).
func backoff(p *v1alpha1.RetryPolicy, attempt int32) time.Duration {
	var b *v1alpha1.Backoff
	if p != nil {
		b = p.Backoff
	}
	return b.Delay(attempt)
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

// aggregateHealth is the app's health: its worst object's, with why. An
// app that syncs its own Application object (a bootstrapped agent's)
// leaves that one out: its health is this very verdict, and counting it
// would keep a Progressing app Progressing forever, each message quoting
// the last.
func aggregateHealth(self string, hs []engine.ObjectHealth) v1alpha1.HealthStatus {
	worst, msg := engine.HealthHealthy, ""
	for _, h := range hs {
		if h.Ref == self {
			continue
		}
		if h.Health().Worse(worst) {
			worst, msg = h.Health(), h.Ref+": "+h.Status
			if h.Message != "" {
				msg += ": " + h.Message
			}
		}
	}
	return v1alpha1.HealthStatus{Status: v1alpha1.HealthStatusCode(worst), Message: truncate(msg, maxHealthMessage)}
}

// maxHealthMessage bounds an app's health message: a child Application's
// message quotes its worst object's, and two apps that sync each other's
// Application would otherwise grow theirs at every reconcile.
const maxHealthMessage = 1024

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// selfRef is how the engine names app among its objects.
func selfRef(app *v1alpha1.Application) string {
	return "Application/" + app.Namespace + "/" + app.Name
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
			rs.Health = v1alpha1.HealthStatusCode(h.Health())
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
