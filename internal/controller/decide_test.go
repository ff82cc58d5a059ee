package controller

import (
	"testing"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

func TestDecideSync(t *testing.T) {
	synced := func() *v1alpha1.ApplicationStatus {
		st := &v1alpha1.ApplicationStatus{ObservedGeneration: 2}
		st.Sync.Revision = "aaa"
		return st
	}
	failing := synced()
	failing.LastError = "boom"
	auto := &v1alpha1.AutomatedSync{}
	heal := &v1alpha1.AutomatedSync{SelfHeal: true, Prune: true}
	manual := engine.Trigger{Type: engine.TriggerManual, User: "alice"}
	webhook := engine.Trigger{Type: engine.TriggerWebhook}
	for _, tc := range []struct {
		name string
		in   syncInputs
		want syncDecision
	}{
		{"new revision, automated",
			syncInputs{revision: "bbb", generation: 2, status: synced(), automated: auto},
			syncDecision{apply: true, newRevision: true, trigger: engine.Trigger{Type: engine.TriggerInterval}, record: true}},
		{"same revision, automated without self-heal: compare only",
			syncInputs{revision: "aaa", generation: 2, status: synced(), automated: auto},
			syncDecision{prune: true, trigger: engine.Trigger{Type: engine.TriggerDrift}}},
		{"same revision, self-heal: apply drift, no entry unless it changes something",
			syncInputs{revision: "aaa", generation: 2, status: synced(), automated: heal},
			syncDecision{apply: true, prune: true, trigger: engine.Trigger{Type: engine.TriggerDrift}}},
		{"spec changed: a person's doing",
			syncInputs{revision: "aaa", generation: 3, status: synced(), automated: auto},
			syncDecision{apply: true, newRevision: true, trigger: engine.Trigger{Type: engine.TriggerManual}, record: true}},
		{"last attempt failed: automated retries it",
			syncInputs{revision: "aaa", generation: 2, status: failing, automated: auto},
			syncDecision{apply: true, newRevision: true, trigger: engine.Trigger{Type: engine.TriggerInterval}, record: true}},
		{"the agent synced it moments ago (cached status is older)",
			syncInputs{revision: "bbb", generation: 2, status: synced(), seen: syncedAt{revision: "bbb", generation: 2}, automated: auto},
			syncDecision{prune: true, trigger: engine.Trigger{Type: engine.TriggerDrift}}},
		{"automated off: new revision only compared, and recorded",
			syncInputs{revision: "bbb", generation: 2, status: synced()},
			syncDecision{prune: true, newRevision: true, trigger: engine.Trigger{Type: engine.TriggerInterval}, record: true}},
		{"request with automated off: applied and recorded, prune as the policy says",
			syncInputs{revision: "aaa", generation: 2, status: synced(), trigger: manual, forced: true},
			syncDecision{apply: true, trigger: manual, record: true}},
		{"webhook for a synced revision: applied, not recorded",
			syncInputs{revision: "aaa", generation: 2, status: synced(), trigger: webhook, forced: true, automated: auto},
			syncDecision{apply: true, trigger: webhook}},
		{"webhook for a new revision: recorded",
			syncInputs{revision: "bbb", generation: 2, status: synced(), trigger: webhook, forced: true, automated: auto},
			syncDecision{apply: true, newRevision: true, trigger: webhook, record: true}},
		{"window closed: held, compared, not recorded",
			syncInputs{revision: "bbb", generation: 2, status: synced(), automated: heal, windowClosed: "deny window"},
			syncDecision{prune: true, newRevision: true, trigger: engine.Trigger{Type: engine.TriggerInterval}, held: "deny window", heldBack: true}},
		{"a dependency not ready: held, compared, not recorded",
			syncInputs{revision: "bbb", generation: 2, status: synced(), automated: auto, dependencies: "waiting for team/db (OutOfSync, Progressing)"},
			syncDecision{prune: true, newRevision: true, trigger: engine.Trigger{Type: engine.TriggerInterval}, held: "waiting for team/db (OutOfSync, Progressing)", heldBack: true}},
		{"a dependency not ready holds a person's request too",
			syncInputs{revision: "aaa", generation: 2, status: synced(), trigger: manual, forced: true, dependencies: "waiting for team/db (Synced, Degraded)"},
			syncDecision{prune: true, trigger: manual, held: "waiting for team/db (Synced, Degraded)", heldBack: true}},
		{"window closed, nothing to apply anyway",
			syncInputs{revision: "aaa", generation: 2, status: synced(), windowClosed: "deny window"},
			syncDecision{prune: true, trigger: engine.Trigger{Type: engine.TriggerDrift}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want.held == "" {
				tc.want.held = "automated sync is off"
			}
			if got := decideSync(tc.in); got != tc.want {
				t.Errorf("decideSync =\n  %+v\nwant\n  %+v", got, tc.want)
			}
		})
	}
}

func TestPendingRequest(t *testing.T) {
	app := &v1alpha1.Application{}
	app.Annotations = map[string]string{v1alpha1.AnnotationRequestedAt: "2026-11-26T10:00:00.5Z", v1alpha1.AnnotationRequestedBy: v1alpha1.RequestedByWebhook}
	q := pendingRequest(app)
	if q.at == "" || q.trigger.Type != engine.TriggerWebhook {
		t.Fatalf("pendingRequest = %+v", q)
	}
	if at, ok := q.webhookStamp(); !ok || at.Nanosecond() != 5e8 {
		t.Fatalf("webhookStamp = %v %v", at, ok)
	}
	app.Status.LastHandledRequest = q.at
	if q := pendingRequest(app); q.at != "" {
		t.Fatalf("a handled request is pending again: %+v", q)
	}
	app.Annotations[v1alpha1.AnnotationRequestedBy] = "alice"
	app.Annotations[v1alpha1.AnnotationRequestedAt] = "later"
	if q := pendingRequest(app); q.trigger != (engine.Trigger{Type: engine.TriggerManual, User: "alice"}) {
		t.Fatalf("pendingRequest = %+v", q)
	}
}
