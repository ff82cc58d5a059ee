package controller

import (
	"encoding/json"
	"fmt"
	"time"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

// request is what an Application's annotations ask of the agent.
type request struct {
	// at is the unhandled converge.dev/requested-at stamp ("" if none).
	at      string
	trigger engine.Trigger
	// only makes the requested sync selective; invalid says why the
	// selection cannot be read.
	only    []engine.ResourceSelector
	invalid error
	// inMemory: a push handed over in memory (push.go), with no
	// annotation to acknowledge.
	inMemory bool
}

// pendingRequest reads a sync request the agent has not handled yet.
func pendingRequest(app *v1alpha1.Application) request {
	at := app.Annotations[v1alpha1.AnnotationRequestedAt]
	if at == "" || at == app.Status.LastHandledRequest {
		return request{}
	}
	t := engine.Trigger{Type: engine.TriggerManual, User: app.Annotations[v1alpha1.AnnotationRequestedBy]}
	if t.User == v1alpha1.RequestedByWebhook {
		t = engine.Trigger{Type: engine.TriggerWebhook}
	}
	q := request{at: at, trigger: t}
	q.only, q.invalid = requestedResources(app, at)
	return q
}

// requestedResources reads the selection of the request at, if it has one.
func requestedResources(app *v1alpha1.Application, at string) ([]engine.ResourceSelector, error) {
	raw, ok := app.Annotations[v1alpha1.AnnotationSyncResources]
	if !ok {
		return nil, nil
	}
	var sel v1alpha1.SyncResources
	if err := json.Unmarshal([]byte(raw), &sel); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", v1alpha1.AnnotationSyncResources, err)
	}
	if sel.At != at {
		return nil, nil // an earlier request's
	}
	if len(sel.Resources) > engine.MaxResourceSelectors {
		return nil, fmt.Errorf("annotation %s: %d resources, more than %d", v1alpha1.AnnotationSyncResources, len(sel.Resources), engine.MaxResourceSelectors)
	}
	out := make([]engine.ResourceSelector, 0, len(sel.Resources))
	for i, r := range sel.Resources {
		s, err := engine.ParseResourceSelector(r)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: resources[%d]: %w", v1alpha1.AnnotationSyncResources, i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// webhookStamp is when a webhook delivery asked for a sync: any ls-remote
// started after it answers it.
func (q request) webhookStamp() (time.Time, bool) {
	if q.at == "" || q.trigger.Type != engine.TriggerWebhook {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, q.at)
	return at, err == nil
}

// syncInputs is everything the decision to sync looks at.
type syncInputs struct {
	// revision is the one fetched; generation the Application's.
	revision   string
	generation int64
	// status is the Application's status as read.
	status *v1alpha1.ApplicationStatus
	// seen is what this agent last synced, newer than a cached status.
	seen syncedAt
	// trigger is set by a request or a rollback (forced).
	trigger engine.Trigger
	forced  bool
	// automated is the app's automated sync policy (nil: off).
	automated *v1alpha1.AutomatedSync
	// windowClosed, when set, says why a Tenant's sync window holds the
	// sync (after manual syncs were allowed for).
	windowClosed string
	// dependencies, when set, says which Applications this one waits
	// for (spec.dependsOn).
	dependencies string
}

// syncDecision is what a reconcile does with the fetched revision.
type syncDecision struct {
	// apply carries the plan out; otherwise the plan is only compared.
	apply bool
	// prune deletes what left Git (when comparing, it reports what a sync
	// would delete).
	prune       bool
	newRevision bool
	trigger     engine.Trigger
	// record asks for a history entry whatever the outcome.
	record bool
	// held says why an out-of-sync app is not applied; heldBack that it
	// is a sync window or a dependency (the revision then stays new until
	// the window opens or the dependency is ready).
	held     string
	heldBack bool
}

// decideSync decides whether to apply, why the sync runs, and whether it
// deserves a history entry. It makes no request.
func decideSync(in syncInputs) syncDecision {
	st := in.status
	upToDate := (in.revision == st.Sync.Revision && st.ObservedGeneration == in.generation && st.LastError == "") ||
		(in.revision == in.seen.revision && in.generation == in.seen.generation)
	d := syncDecision{newRevision: !upToDate, trigger: in.trigger, held: "automated sync is off"}
	auto := in.automated
	// Automated sync applies a new revision (or spec), retries a failed
	// one, and, with selfHeal, reverts drift; without selfHeal, drift is
	// only reported.
	d.apply = in.forced || (auto != nil && (d.newRevision || auto.SelfHeal))
	switch {
	case d.apply && in.windowClosed != "":
		d.apply, d.heldBack, d.held = false, true, in.windowClosed
	case d.apply && in.dependencies != "":
		// Even a person's request waits: the order is the point.
		d.apply, d.heldBack, d.held = false, true, in.dependencies
	}
	d.prune = !d.apply || (auto != nil && auto.Prune)
	if d.trigger.Type == "" {
		switch {
		case st.ObservedGeneration != in.generation:
			// Someone created or changed the Application: a person's
			// doing, though only a request annotation says who.
			d.trigger.Type = engine.TriggerManual
		case d.newRevision:
			d.trigger.Type = engine.TriggerInterval
		default:
			d.trigger.Type = engine.TriggerDrift
		}
	}
	// A new revision or a request deserves an entry. A webhook delivery
	// for a revision already synced is one of a flood or a redelivery:
	// like a no-op resync, not worth one. A sync a window or a dependency
	// holds is not a sync at all.
	d.record = !d.heldBack && ((in.forced && d.trigger.Type != engine.TriggerWebhook) || d.newRevision)
	return d
}
