package engine

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/source"
)

// Event reasons of a sync, the same in push and pull mode.
const (
	EventSyncStarted = "SyncStarted"
	EventSynced      = "Synced"
	EventSyncFailed  = "SyncFailed"
)

// Modes: who ran a sync.
const (
	ModePull = "pull" // the agent
	ModePush = "push" // the CLI
)

// Events receives what a sync announces: SyncStarted when it is about to
// change the cluster, then Synced or SyncFailed. Messages are already
// sanitized.
type Events interface {
	Event(eventType, reason, message string)
}

// RunOptions say what one sync is: what to plan and whether to carry it
// out, and what its history entry and events say about it.
type RunOptions struct {
	SyncOptions
	// Apply carries the plan out. Without it the run only compares: the
	// change set says what a sync would do (automated sync off, or held).
	Apply bool
	// Mode is ModePull or ModePush.
	Mode string
	// Cluster names the destination Cluster, for the history entry.
	Cluster string
	Trigger Trigger
	// Who, if set, names the user of Trigger, asked only when an entry is
	// written (push mode asks the apiserver).
	Who func() string
	// Ref, Commit and Signer describe PlanOptions.Revision.
	Ref    string
	Commit *source.CommitInfo
	Signer *source.Signer
	// Record asks for a history entry whatever the outcome: the caller
	// knows the run handles a new revision or a person's request. Without
	// it, a run is recorded when it fails, changes the cluster, or applies
	// a revision the record did not hold; a no-op resync is not.
	Record bool
	// History writes the app's history record; nil records nothing. It
	// is the caller's own client when the sync runs as another account.
	History      client.Client
	HistoryLimit int
	// Events, if set, receives the sync's events.
	Events Events
	// Started is when the sync began (fetching and rendering included);
	// now when zero.
	Started time.Time
	// Hooks says whether the sync runs the desired set's hooks.
	Hooks HookMode
}

// HookMode says whether a sync runs its hooks.
type HookMode int

const (
	// HooksOnChange runs them when the sync changes the cluster or
	// applies a revision the record did not hold (push mode: each
	// `converge sync` that does something).
	HooksOnChange HookMode = iota
	// HooksRun runs them: the caller knows this sync is of a new revision
	// or spec, or a person asked for it (the agent decides).
	HooksRun
	// HooksSkip never runs them: a resync or a drift correction.
	HooksSkip
)

// Result is what one sync did.
type Result struct {
	// Changes is the change set: what was done, or (without Apply, or
	// with DryRun) what a sync would do. Nil when planning failed.
	Changes *ChangeSet `json:"changes,omitempty"`
	// Health is each object's health after the sync (from the apply's
	// answers and the plan's listing; no request is made for it).
	Health []ObjectHealth `json:"health,omitempty"`
	// PreviousRevision is the revision the app's record held before;
	// Revision the one this sync was of.
	PreviousRevision string `json:"previousRevision,omitempty"`
	Revision         string `json:"revision,omitempty"`
	Counts           Counts `json:"counts"`
	// Applied says the plan was carried out (not a comparison or a
	// dry run).
	Applied bool `json:"applied"`
	// Recorded says a history entry was written; HistoryError why one
	// that was due could not be (the sync itself happened).
	Recorded     bool  `json:"recorded"`
	HistoryError error `json:"-"`
	// Kinds are the kinds the app's objects are of, desired or owned.
	Kinds   []schema.GroupVersionKind `json:"-"`
	DryRuns int                       `json:"dryRuns"`
	// firstSync says the app had no inventory: its history most likely
	// does not exist either.
	firstSync bool
	// Hooks are the hooks the sync ran, in order, with their outcomes.
	Hooks []HookResult `json:"hooks,omitempty"`
}

// Run is the one sync path, for the agent and the CLI alike: plan; when
// the plan changes the cluster, SyncStarted; apply and prune, which write
// the inventory; Synced or SyncFailed; and the history entry, when the
// sync is worth one. It returns the Result even when it fails, with as
// much as is known.
func (m *Manager) Run(ctx context.Context, objs []render.Object, opts RunOptions) (*Result, error) {
	if opts.Started.IsZero() {
		opts.Started = time.Now()
	}
	res := &Result{Revision: opts.Revision}
	plan, err := m.Plan(ctx, objs, opts.PlanOptions)
	if err != nil {
		finish(ctx, res, opts, err)
		return res, err
	}
	res.Changes, res.Health = &plan.ChangeSet, plan.Health()
	res.PreviousRevision, res.Kinds, res.DryRuns = plan.PreviousRevision(), plan.Kinds(), plan.DryRuns()
	res.firstSync = !plan.hadInventory
	if !opts.Apply || opts.DryRun {
		res.Counts = res.Changes.Counts()
		if !opts.DryRun {
			finish(ctx, res, opts, nil)
		}
		return res, nil
	}
	hooks := plan.Hooks() > 0 && (opts.Hooks == HooksRun || (opts.Hooks == HooksOnChange &&
		(plan.ChangeSet.HasChanges() || (opts.Revision != "" && opts.Revision != plan.PreviousRevision()))))
	started := plan.ChangeSet.HasChanges() || hooks
	if started {
		c := plan.ChangeSet.Counts()
		opts.event("Normal", EventSyncStarted, fmt.Sprintf("syncing %s (%s, %s): %d to create, %d to configure, %d to delete",
			shortRevision(opts.Revision), opts.Trigger, opts.Mode, c.Created, c.Configured, c.Deleted))
	}
	h := hookRun{m: m, plan: plan, opts: opts, res: res, enabled: hooks}
	err = h.run(ctx, PhasePreSync)
	if err == nil {
		var cs *ChangeSet
		cs, err = m.Apply(ctx, plan, opts.SyncOptions)
		res.Applied = true
		if cs != nil {
			res.Changes, res.Health = cs, cs.Health
		}
	}
	if err == nil {
		err = h.run(ctx, PhaseSync)
	}
	if err == nil && h.has(PhasePostSync) {
		// PostSync hooks run once the sync is healthy.
		if err = m.waitHealthy(ctx, opts.App, plan.objects, opts.timeout(), opts.Progress); err == nil {
			err = h.run(ctx, PhasePostSync)
		}
	}
	if err != nil {
		// SyncFail hooks report; their own failure is in the results
		// and does not replace the sync's error.
		_ = h.run(ctx, PhaseSyncFail)
	}
	if res.Applied {
		res.Counts = res.Changes.Counts()
	}
	switch {
	case err != nil && started:
		opts.event("Warning", EventSyncFailed, redact.Error(err))
	case err == nil && (res.Changes.HasChanges() || len(res.Hooks) > 0):
		opts.event("Normal", EventSynced, fmt.Sprintf("synced %s (%s, %s): %s%s", shortRevision(opts.Revision), opts.Trigger, opts.Mode, res.Counts, hookSummary(res.Hooks)))
	}
	finish(ctx, res, opts, err)
	return res, err
}

// hookRun runs the hooks of one sync, phase by phase, into its result.
type hookRun struct {
	m       *Manager
	plan    *Plan
	opts    RunOptions
	res     *Result
	enabled bool
}

func (h hookRun) when() occasion {
	if h.plan.installing() {
		return onInstall
	}
	return onUpgrade
}

func (h hookRun) has(phase HookPhase) bool {
	return h.enabled && len(hooksFor(h.plan.hooks, phase, h.when())) > 0
}

func (h hookRun) run(ctx context.Context, phase HookPhase) error {
	if !h.has(phase) {
		return nil
	}
	if phase == PhasePreSync {
		// PreSync hooks run before the sync applies anything, but may
		// live in a namespace it creates.
		if err := h.m.createHookNamespaces(ctx, h.plan, hooksFor(h.plan.hooks, phase, h.when())); err != nil {
			return err
		}
	}
	got, err := h.m.runHooks(ctx, h.opts.App, h.plan.hooks, phase, h.when(), h.opts.timeout(), h.opts.Progress)
	h.res.Hooks = append(h.res.Hooks, got...)
	return err
}

func (o RunOptions) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return 5 * time.Minute
}

func hookSummary(hooks []HookResult) string {
	if len(hooks) == 0 {
		return ""
	}
	return fmt.Sprintf(", %d hook(s) run", len(hooks))
}

// RecordFailure records a sync that failed before it could plan (the
// fetch, the render, a policy): its history entry and nothing else.
func RecordFailure(ctx context.Context, opts RunOptions, syncErr error) error {
	if opts.Started.IsZero() {
		opts.Started = time.Now()
	}
	res := &Result{Revision: opts.Revision}
	record(ctx, res, opts, syncErr)
	return res.HistoryError
}

// finish writes the history entry of a run that is worth one.
func finish(ctx context.Context, res *Result, opts RunOptions, syncErr error) {
	if opts.DryRun {
		return
	}
	worth := syncErr != nil || opts.Record || len(res.Hooks) > 0 ||
		(res.Applied && (res.Changes.HasChanges() || (res.Revision != "" && res.Revision != res.PreviousRevision)))
	if worth {
		record(ctx, res, opts, syncErr)
	}
}

func record(ctx context.Context, res *Result, opts RunOptions, syncErr error) {
	if opts.History == nil {
		return
	}
	cs := res.Changes
	if syncErr != nil && !res.Applied {
		cs = nil // it failed before applying (a PreSync hook): nothing changed
	}
	e := NewHistoryEntry(cs, syncErr, res.Applied || syncErr != nil)
	e.Mode, e.Trigger, e.Cluster = opts.Mode, opts.Trigger, opts.Cluster
	if opts.Who != nil && e.Trigger.User == "" {
		e.Trigger.User = opts.Who()
	}
	if e.Trigger.Type == "" {
		e.Trigger.Type = TriggerInterval
	}
	e.Revision, e.Ref, e.Signer = opts.Revision, opts.Ref, opts.Signer
	e.Hooks = res.Hooks
	if opts.Commit != nil {
		c := *opts.Commit
		c.Date = c.Date.UTC()
		e.Commit = &c
	}
	e.StartedAt, e.FinishedAt = opts.Started.UTC(), time.Now().UTC()
	if _, err := appendHistory(ctx, opts.History, opts.App, e, opts.HistoryLimit, res.firstSync); err != nil {
		res.HistoryError = err
		return
	}
	res.Recorded = true
}

func (o RunOptions) event(typ, reason, msg string) {
	if o.Events != nil {
		o.Events.Event(typ, reason, msg)
	}
}

func shortRevision(rev string) string {
	switch {
	case rev == "":
		return "(no revision)"
	}
	return source.ShortRevision(rev)
}
