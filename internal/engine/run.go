package engine

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tracing"
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

// Run is the one sync path, for the agent and the CLI alike: plan; decide
// (decideRun) whether hooks run, whether the sync is announced and whether
// it is recorded; SyncStarted; hooks, apply and prune, which write the
// inventory; one outcome event (Synced or SyncFailed); and the history
// entry. It returns the Result even when it fails, with as much as is
// known.
func (m *Manager) Run(ctx context.Context, objs []render.Object, opts RunOptions) (*Result, error) {
	if opts.Started.IsZero() {
		opts.Started = time.Now()
	}
	res := &Result{Revision: opts.Revision}
	pctx, span := tracing.Start(ctx, "plan", attribute.Int("objects", len(objs)))
	plan, err := m.Plan(pctx, objs, opts.PlanOptions)
	if plan != nil {
		span.SetAttributes(attribute.Int("dryRuns", plan.DryRuns()), attribute.Bool("changes", plan.ChangeSet.HasChanges()))
	}
	tracing.End(span, err, redact.Error(err))
	if err != nil {
		return res, conclude(ctx, res, opts, runDecision{record: true}, err)
	}
	res.Changes, res.Health = &plan.ChangeSet, plan.Health()
	res.PreviousRevision, res.Kinds, res.DryRuns = plan.PreviousRevision(), plan.Kinds(), plan.DryRuns()
	res.firstSync = !plan.hadInventory
	d := decideRun(runFacts{
		apply: opts.Apply && !opts.DryRun, dryRun: opts.DryRun, record: opts.Record, hookMode: opts.Hooks, selective: len(opts.Only) > 0,
		changes: plan.ChangeSet.HasChanges(), hooks: plan.Hooks(),
		revision: opts.Revision, previous: plan.PreviousRevision(),
	})
	if !d.apply {
		res.Counts = res.Changes.Counts()
		return res, conclude(ctx, res, opts, d, nil)
	}
	if d.announce {
		c := plan.ChangeSet.Counts()
		opts.event("Normal", EventSyncStarted, fmt.Sprintf("syncing %s (%s, %s): %d to create, %d to configure, %d to delete",
			shortRevision(opts.Revision), opts.Trigger, opts.Mode, c.Created, c.Configured, c.Deleted))
	}
	actx, span := tracing.Start(ctx, "apply", attribute.Bool("hooks", d.hooks))
	err = m.carryOut(actx, plan, opts, hookRun{m: m, plan: plan, opts: opts, res: res, enabled: d.hooks})
	tracing.End(span, err, redact.Error(err))
	res.Counts = res.Changes.Counts()
	return res, conclude(ctx, res, opts, d, err)
}

// carryOut runs the PreSync hooks, applies and prunes, then runs the Sync
// and (once healthy) PostSync hooks; SyncFail hooks when any of it fails.
func (m *Manager) carryOut(ctx context.Context, plan *Plan, opts RunOptions, h hookRun) error {
	err := h.run(ctx, PhasePreSync)
	if err == nil {
		var cs *ChangeSet
		cs, err = m.Apply(ctx, plan, opts.SyncOptions)
		h.res.Applied = true
		if cs != nil {
			h.res.Changes, h.res.Health = cs, cs.Health
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
	return err
}

// runFacts are what Run's decision depends on: what was asked, and what
// the plan found.
type runFacts struct {
	apply, dryRun, record bool
	hookMode              HookMode
	// selective: only some objects are synced (PlanOptions.Only).
	selective          bool
	changes            bool // the plan changes the cluster
	hooks              int  // hooks in the desired set
	revision, previous string
}

// runDecision is what Run does with a plan.
type runDecision struct {
	// apply carries the plan out; without it the run only compares.
	apply bool
	// hooks run the desired set's hooks, phase by phase.
	hooks bool
	// announce sends SyncStarted: the sync is about to change the
	// cluster or run hooks.
	announce bool
	// record writes a history entry even if the sync succeeds (a
	// failure always has one, a dry run never).
	record bool
}

// decideRun is Run's one decision: whether the plan is carried out,
// whether hooks run, whether the sync is announced and recorded. A no-op
// resync is neither announced nor recorded; a sync that changes the
// cluster, applies a revision the record did not hold, runs hooks or was
// asked to be recorded is both recorded and (if it does anything)
// announced.
func decideRun(f runFacts) runDecision {
	if f.dryRun {
		return runDecision{}
	}
	if !f.apply {
		return runDecision{record: f.record}
	}
	newRevision := f.revision != "" && f.revision != f.previous
	// A selective sync runs no hook (as in Argo CD) and is always a
	// person's request, so always recorded.
	hooks := !f.selective && f.hooks > 0 && (f.hookMode == HooksRun || (f.hookMode == HooksOnChange && (f.changes || newRevision)))
	return runDecision{
		apply:    true,
		hooks:    hooks,
		announce: f.changes || hooks,
		record:   f.record || f.selective || f.changes || newRevision || hooks,
	}
}

// conclude sends the run's one outcome event and writes its history entry
// when the decision or a failure calls for one. It returns err.
func conclude(ctx context.Context, res *Result, opts RunOptions, d runDecision, err error) error {
	if opts.DryRun {
		return err
	}
	switch {
	case err != nil:
		opts.event("Warning", EventSyncFailed, redact.Error(err))
	case res.Applied && (res.Changes.HasChanges() || len(res.Hooks) > 0):
		opts.event("Normal", EventSynced, fmt.Sprintf("synced %s (%s, %s): %s%s", shortRevision(opts.Revision), opts.Trigger, opts.Mode, res.Counts, hookSummary(res.Hooks)))
	}
	if err != nil || d.record {
		record(ctx, res, opts, err)
	}
	return err
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
	ctx, span := tracing.Start(ctx, "hooks", attribute.String("phase", string(phase)))
	got, err := h.m.runHooks(ctx, h.opts.App, h.plan.hooks, phase, h.when(), h.opts.timeout(), h.opts.Progress)
	tracing.End(span, err, redact.Error(err))
	h.res.Hooks = append(h.res.Hooks, got...)
	return err
}

func (o RunOptions) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return 5 * time.Minute
}

// hookSummary names the hooks a sync or deletion ran, each as
// HookResult.String says, or counts them when there are many.
func hookSummary(hooks []HookResult) string {
	if len(hooks) == 0 {
		return ""
	}
	if len(hooks) > 5 {
		failed := 0
		for _, h := range hooks {
			if h.Status != HookSucceeded {
				failed++
			}
		}
		return fmt.Sprintf("; %d hooks run, %d failed", len(hooks), failed)
	}
	names := make([]string, len(hooks))
	for i, h := range hooks {
		names[i] = h.String()
	}
	return "; hooks: " + strings.Join(names, ", ")
}

// RecordFailure concludes a sync that failed before it could plan (the
// fetch, the render, a policy) as Run concludes a failed one: SyncFailed,
// and its history entry. It returns the error writing the entry met.
func RecordFailure(ctx context.Context, opts RunOptions, syncErr error) error {
	if opts.Started.IsZero() {
		opts.Started = time.Now()
	}
	res := &Result{Revision: opts.Revision}
	_ = conclude(ctx, res, opts, runDecision{record: true}, syncErr)
	return res.HistoryError
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
	state := recordMayExist
	if res.firstSync {
		state = recordLikelyNew
	}
	if _, err := appendHistory(ctx, opts.History, opts.App, e, opts.HistoryLimit, state); err != nil {
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
