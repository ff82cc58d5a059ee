package controller

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tenancy"
	"converge.dev/converge/internal/tracing"
)

// attempt is one reconcile of one app: what its steps have learnt so far.
type attempt struct {
	app   *v1alpha1.Application
	key   types.NamespacedName
	start time.Time
	// trigger says why the sync runs; request is a pending sync request,
	// and forced says one (or a rollback) asks for this reconcile.
	trigger engine.Trigger
	request request
	forced  bool
	// interval is how long until the app looks at its source again.
	interval time.Duration

	// From govern: what governs the app, what it waits for, the engine
	// acting as its account here (its Secrets, values and records), where
	// its objects go, its Secrets' reader, its receivers and the request
	// that fetches its Git source.
	ten          tenancy.Tenancy
	dependencies string
	local        *engine.Manager
	target       *target
	secrets      client.Reader
	notify       *notifier
	// outbox holds notifications until the status is written.
	outbox *outbox
	src    source.Request

	// From source: the app resolved at its revision.
	build    *appspec.Build
	artifact *source.Artifact

	// fingerprint is of the owned objects before a plan, render the
	// digest of what the plan is made from and hooks whether it has any
	// (see idle.go).
	fingerprint uint64
	render      [sha256.Size]byte
	hooks       bool
	// recorded says engine.Run already wrote whatever history entry the
	// sync deserved.
	recorded bool
}

// reconcile runs the steps for a live, unsuspended app: govern, source,
// quiet (nothing to do), render, decide, sync, observe. A step that fails
// ends it; settle writes the outcome.
func (r *ApplicationReconciler) reconcile(ctx context.Context, app *v1alpha1.Application, out *outbox) (ctrl.Result, error) {
	run := &attempt{app: app, key: client.ObjectKeyFromObject(app), start: r.now(), request: pendingRequest(app),
		interval: app.Spec.SyncPolicy.GetInterval(), outbox: out}
	if q, ok := r.takePush(run.key); ok && run.request.at == "" {
		run.request = q
	}
	run.trigger, run.forced = run.request.trigger, run.request.at != ""
	if run.forced && !run.request.inMemory {
		// This reconcile handles the request, whatever its outcome: a
		// waiting `converge sync --wait` then sees the result or the error.
		app.Status.LastHandledRequest = run.request.at
	}
	span := trace.SpanFromContext(ctx) // Reconcile's
	span.SetAttributes(attribute.String("trigger", string(run.trigger.Type)))
	if err := traced(ctx, "govern", func(ctx context.Context) error { return r.govern(ctx, run) }); err != nil {
		return r.settle(ctx, app, run, err, run.interval)
	}
	if err := traced(ctx, "source", func(ctx context.Context) error { return r.source(ctx, run) }); err != nil {
		return r.settle(ctx, app, run, err, run.interval)
	}
	span.SetAttributes(attribute.String("revision", run.artifact.Revision))
	if result, quiet := r.quiet(ctx, run); quiet {
		span.SetAttributes(attribute.Bool("idle", true))
		return result, nil
	}
	var objs []render.Object
	err := traced(ctx, "render", func(ctx context.Context) (err error) {
		if objs, err = r.render(ctx, run.target, run.build); err != nil {
			return err
		}
		if run.render, run.hooks, err = renderDigest(objs); err != nil {
			return failAs(v1alpha1.ReasonRenderFailed, err)
		}
		return nil
	})
	if err != nil {
		return r.settle(ctx, app, run, err, run.interval)
	}
	if result, same := r.unchanged(ctx, run); same {
		span.SetAttributes(attribute.Bool("unchanged", true))
		return result, nil
	}
	d, opts, err := r.decide(ctx, run)
	if err != nil {
		return r.settle(ctx, app, run, err, run.interval)
	}
	res, err := run.target.engine.Run(ctx, objs, opts)
	countSync(res, r.now().Sub(run.start), err)
	run.recorded = true // Run wrote the entry the sync deserved
	r.setIdle(run.key, nil)
	if res != nil && res.HistoryError != nil {
		log.FromContext(ctx).Error(res.HistoryError, "recording sync history")
	}
	if err != nil {
		return r.syncFailed(ctx, run, res, err)
	}
	return r.observe(ctx, run, d, res), nil
}

// traced runs step in a span of its name.
func traced(ctx context.Context, name string, step func(context.Context) error) error {
	ctx, span := tracing.Start(ctx, name)
	err := step(ctx)
	tracing.End(span, err, redact.Error(err))
	return err
}

// govern decides what governs the app (its Tenant's rules and the account
// everything below runs as, its Secrets' reads included), checks its
// dependencies for a cycle, and finds where its objects go: here, or a
// destination Cluster, which must be reachable before anything is fetched
// for it.
func (r *ApplicationReconciler) govern(ctx context.Context, run *attempt) error {
	app := run.app
	ten, err := r.tenancy(ctx, app)
	if err != nil {
		return refuseAs(v1alpha1.ReasonPolicyViolation, err)
	}
	run.ten = ten
	// Readiness of the dependencies is weighed in decide.
	if run.dependencies, err = dependencyWait(app, r.cachedApp(ctx), ""); err != nil {
		return refuseAs(v1alpha1.ReasonDependencyCycle, err)
	}
	if run.local, err = r.engineFor(app.Namespace, ten.ServiceAccount); err != nil {
		return failAs(v1alpha1.ReasonApplyFailed, err)
	}
	if run.target, err = r.target(ctx, app, run.local, ten.ServiceAccount); err != nil {
		return failAs(v1alpha1.ReasonApplyFailed, err)
	}
	run.secrets = r.secretsReader(app.Namespace, run.local, ten.ServiceAccount)
	templates, err := notifyTemplates(app)
	if err != nil {
		return refuseAs(v1alpha1.ReasonValidationFailed, err)
	}
	run.notify = &notifier{ctx: ctx, n: r.Notifier, app: app, secrets: run.secrets, allow: ten.AllowNotify, templates: templates, alerts: r.Client, outbox: run.outbox}
	// The source, its credentials and trusted keys: read once, used by the
	// rollback, the fetch and the pin check alike.
	if run.src, err = appspec.SourceRequest(ctx, run.secrets, app.Namespace, &app.Spec.Source); err != nil {
		return failAs(v1alpha1.ReasonFetchFailed, err)
	}
	return nil
}

// source carries out a pending Git-native rollback (its commit is then
// fetched and applied at once), resolves the app at its revision, and
// keeps the pin's status.
func (r *ApplicationReconciler) source(ctx context.Context, run *attempt) error {
	app := run.app
	git := app.Spec.Source.RepoURL != ""
	if rb, ok := pendingRollback(app); ok && git {
		if err := r.rollback(ctx, app, rb, run); err == nil {
			run.forced, run.trigger = true, engine.Trigger{Type: engine.TriggerRollback, User: rb.By}
		}
	}
	build, err := r.Builder.Resolve(ctx, r.buildRequest(run))
	if err != nil {
		return failAs(v1alpha1.ReasonFetchFailed, err)
	}
	run.build, run.artifact = build, build.Artifact
	run.interval = nextPoll(app, build.Artifact.CheckedAt, run.interval, r.now())
	if git {
		r.updatePin(ctx, app, run.src, run.interval, run.forced)
	}
	return nil
}

// buildRequest is what resolves run's app: the ref it follows (its pin,
// if pinned), as the app's account. A recent answer for the same
// repository and ref is reused, so drift reconciles and 100 apps on one
// repository cost no Git request; a request asks again.
func (r *ApplicationReconciler) buildRequest(run *attempt) appspec.Request {
	app := run.app
	src := run.src
	src.MaxAge = run.interval
	if run.forced {
		src.MaxAge = 0
		// A webhook delivery, stamped by an agent's own clock, is
		// answered by any ls-remote that started after it: a flood of
		// deliveries for one push costs one Git request, not one each.
		if at, ok := run.request.webhookStamp(); ok && run.trigger.Type == engine.TriggerWebhook {
			src.NotBefore = at
		}
	}
	if app.Spec.Pin != nil {
		src.Ref = source.Ref{Commit: app.Spec.Pin.Revision}
	}
	return appspec.Request{App: app, Source: src, Secrets: run.secrets, Inputs: run.local.Client(), Tenancy: run.ten,
		// Renders share a worker process only within a namespace and
		// the account its apps run as: what one tenant's render holds
		// (values from its Secrets) is never in a process another's
		// render reaches.
		Isolation: app.Namespace + "/" + run.ten.ServiceAccount,
		MaxAge:    src.MaxAge}
}

// quiet reports whether there is nothing to do: this revision and spec
// failed terminally (trying again would fail again; a new commit, a spec
// change or a request ends the stall), or nothing changed since a plan
// that found nothing to do.
func (r *ApplicationReconciler) quiet(ctx context.Context, run *attempt) (ctrl.Result, bool) {
	app, rev := run.app, run.artifact.Revision
	if run.forced {
		return ctrl.Result{}, false
	}
	if r.stalledOn(run.key, rev, app.Generation) {
		return ctrl.Result{RequeueAfter: run.interval}, true
	}
	idle := ctrl.Result{RequeueAfter: requeueAfter(app.Status.Health.Status, run.interval)}
	last, ok := r.idleState(run.key)
	if !ok {
		// Never seen here since this replica started (a restart, a
		// shard taking over): its record may show nothing changed.
		s, ok := r.idleFromRecord(ctx, app, run.target, run.target.records(run.local), rev)
		if !ok {
			return ctrl.Result{}, false
		}
		s.tenant = run.ten.Version
		r.setIdle(run.key, s)
		r.remember(run.key, syncedAt{revision: rev, generation: app.Generation})
		syncTotal.WithLabelValues("idle").Inc()
		return idle, true
	}
	if !last.same(rev, app.Generation, run.ten.Version) {
		return ctrl.Result{}, false
	}
	// Watches made anew (another cluster's, after an outage) take up the
	// kinds again; a no-op for watches already running.
	if err := run.target.watches.ensure(last.kinds); err != nil {
		log.FromContext(ctx).Error(err, "watching owned objects")
	}
	fp, err := r.fingerprint(ctx, app, run.target, last.kinds)
	if err != nil {
		log.FromContext(ctx).Error(err, "reading owned objects from the cache")
		return ctrl.Result{}, false
	}
	if fp == last.fingerprint {
		syncTotal.WithLabelValues("idle").Inc()
		return idle, true
	}
	run.fingerprint = fp
	return ctrl.Result{}, false
}

// render renders build for the cluster tgt goes to.
func (r *ApplicationReconciler) render(ctx context.Context, tgt *target, build *appspec.Build) ([]render.Object, error) {
	caps, err := tgt.engine.Capabilities(ctx)
	if err != nil {
		return nil, &capabilitiesError{err}
	}
	res, err := r.Builder.Render(ctx, build, caps)
	if err != nil {
		return nil, failAs(v1alpha1.ReasonRenderFailed, err)
	}
	return res.Objects, nil
}

// capabilitiesError is a failure to describe the cluster to a chart.
type capabilitiesError struct{ err error }

func (e *capabilitiesError) Error() string { return e.err.Error() }
func (e *capabilitiesError) Unwrap() error { return e.err }

// decide weighs what holds the sync (dependencies, the Tenant's sync
// windows) and decides what the sync does: apply, prune, record, hooks.
func (r *ApplicationReconciler) decide(ctx context.Context, run *attempt) (syncDecision, engine.RunOptions, error) {
	app, rev := run.app, run.artifact.Revision
	if run.dependencies == "" && sameRevisionDeps(app) {
		// Now that the revision is known: do the dependencies have it?
		run.dependencies, _ = dependencyWait(app, r.cachedApp(ctx), rev)
	}
	in := syncInputs{
		revision: rev, generation: app.Generation, status: &app.Status,
		seen: r.seen(run.key), trigger: run.trigger, forced: run.forced, automated: app.Spec.SyncPolicy.Automated,
		dependencies: run.dependencies,
	}
	if ten := run.ten; len(ten.Windows) > 0 {
		manual := run.trigger.Type == engine.TriggerManual || run.trigger.Type == engine.TriggerRollback
		open, why, err := syncWindowVerdict(ten.Windows, r.now(), manual)
		if err != nil {
			return syncDecision{}, engine.RunOptions{}, refuseAs(v1alpha1.ReasonPolicyViolation, fmt.Errorf("Tenant %s: %w", ten.Tenant, err))
		}
		if !open {
			in.windowClosed = fmt.Sprintf("Tenant %s: %s; the sync waits", ten.Tenant, why)
		}
	}
	ignore, err := appspec.IgnoreRules(app, r.IgnoreDifferences)
	if err != nil {
		return syncDecision{}, engine.RunOptions{}, refuseAs(v1alpha1.ReasonValidationFailed, err)
	}
	d := decideSync(in)
	run.trigger = d.trigger
	opts := r.runOptions(app, run)
	opts.PlanOptions = engine.PlanOptions{
		App:               engine.App{Name: app.Name, Namespace: app.Namespace},
		DefaultNamespace:  appspec.Destination(app),
		Prune:             d.prune,
		Revision:          rev,
		Policy:            run.ten.Policy,
		Adopt:             run.ten.Adopt,
		CreateNamespace:   appspec.Namespace(app),
		Records:           run.target.records(run.local),
		IgnoreDifferences: ignore,
		// Nobody reads a diff here: the UI's come from previews.
		NoDiffs: true,
	}
	if run.forced {
		if run.request.invalid != nil {
			return syncDecision{}, engine.RunOptions{}, refuseAs(v1alpha1.ReasonValidationFailed, run.request.invalid)
		}
		opts.Only = run.request.only
	}
	opts.Apply, opts.Record = d.apply, d.record
	// Hooks run once per new revision or spec, a retry of a failed sync
	// or a person's request; never to correct drift.
	opts.Hooks = engine.HooksSkip
	if d.apply && d.record {
		opts.Hooks = engine.HooksRun
	}
	opts.Timeout = app.Spec.SyncPolicy.GetTimeout()
	opts.PruneLast = app.Spec.SyncPolicy.PruneLast
	return d, opts, nil
}

// syncFailed settles a sync that failed: what it changed goes into the
// status, and the error is read as the step's.
func (r *ApplicationReconciler) syncFailed(ctx context.Context, run *attempt, res *engine.Result, err error) (ctrl.Result, error) {
	app := run.app
	switch {
	case errors.Is(err, engine.ErrPolicy):
	case run.target.cluster != "" && unreachable(err):
		err = &ClusterError{Cluster: run.target.cluster, Reason: v1alpha1.ReasonClusterUnreachable, Err: err}
	case errors.Is(err, engine.ErrEmptyRender):
		err = failAs(v1alpha1.ReasonRenderFailed, fmt.Errorf("%s renders no objects; refusing to apply an empty desired set", orDot(app.Spec.Source.Path)))
	default:
		err = failAs(v1alpha1.ReasonApplyFailed, err)
	}
	if res != nil && res.Changes != nil {
		app.Status.Resources = resourceStatuses(res.Changes, nil, false)
	}
	return r.settle(ctx, app, run, err, run.interval)
}

// observe writes a sync's outcome into the status and remembers what it
// planned from, so that the next reconcile may find nothing to do.
func (r *ApplicationReconciler) observe(ctx context.Context, run *attempt, d syncDecision, res *engine.Result) ctrl.Result {
	app, artifact := run.app, run.artifact
	if err := run.target.watches.ensure(res.Kinds); err != nil {
		log.FromContext(ctx).Error(err, "watching owned objects")
	}
	log.FromContext(ctx).V(1).Info("reconciled", "revision", artifact.Revision, "applied", res.Applied, "changes", res.Counts.String())
	prevRev, prevCommit, prevHealth := app.Status.Sync.Revision, app.Status.Sync.Commit, app.Status.Health.Status
	r.record(app, artifact, res.Changes, res.Health, res.Applied, d.held)
	if h := app.Status.Health; h.Status == v1alpha1.HealthDegraded && prevHealth != v1alpha1.HealthDegraded {
		run.notify.send(v1alpha1.NotifyHealthDegraded, artifact.Revision, h.Message)
	}
	app.Status.Sync.Chart = chartStatus(run.build.Chart)
	if d.heldBack && res.Changes.HasChanges() {
		// Held by a sync window or a dependency: the status keeps the
		// revision last synced, so the held one is still new when the
		// window opens or the dependency is ready (which wakes this app
		// at once); look again within a minute.
		app.Status.Sync.Revision, app.Status.Sync.Commit = prevRev, prevCommit
		return ctrl.Result{RequeueAfter: min(run.interval, time.Minute)}
	}
	r.remember(run.key, syncedAt{revision: artifact.Revision, generation: app.Generation})
	idle := &idleState{revision: artifact.Revision, generation: app.Generation, tenant: run.ten.Version, kinds: res.Kinds, render: run.render}
	switch inv := res.Changes.Inventory; {
	case !res.Applied || !res.Changes.HasChanges():
		// Wrote nothing: the fingerprint taken before stands for what
		// was planned.
		idle.fingerprint = run.fingerprint
	case inv != nil && len(run.request.only) == 0:
		// Wrote: its objects and inventory at the versions the writes
		// returned, as the watches show them once the writes' events
		// arrive. Anything else (an event still on its way, someone
		// else's write) differs, and costs one more plan. A selective
		// sync is planned again, so that what it left out is weighed.
		idle.fingerprint = versionsHash(res.Kinds, inv.Versions(), inv.ResourceVersion)
	}
	r.setIdle(run.key, idle)
	return ctrl.Result{RequeueAfter: requeueAfter(app.Status.Health.Status, run.interval)}
}
