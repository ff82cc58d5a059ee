package controller

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	crsource "sigs.k8s.io/controller-runtime/pkg/source"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/notify"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tenancy"
)

// ApplicationReconciler converges Applications.
type ApplicationReconciler struct {
	Client client.Client
	Engine *engine.Manager
	// Config is the agent's own connection; Applications with a
	// serviceAccountName get an engine impersonating that account.
	Config  *rest.Config
	Sources *source.Cache
	// Charts fetches charts from Helm repositories and OCI registries.
	Charts *charts.Cache
	// Secrets reads credentials Secrets uncached, so the agent never holds
	// every Secret of the cluster in memory.
	Secrets client.Reader
	// SecretCache, if set, answers reads of unchanged Secrets from memory.
	SecretCache *SecretCache
	Recorder    record.EventRecorder
	// Concurrency is how many Applications reconcile at once (default 8).
	Concurrency int
	// Tenancy are the agent-wide rules: whether a Tenant must govern
	// every app, and the account apps without one run as.
	Tenancy tenancy.Options
	// ReadRoots confine render workers (see render.Options.ReadRoots).
	ReadRoots []string
	// IgnoreDifferences apply to every app, before its own (the agent's
	// --ignore-differences-file).
	IgnoreDifferences []engine.IgnoreRule
	// Notifier, if set, delivers apps' events to the receivers they name.
	Notifier *notify.Notifier
	// Shards, if set, spreads Applications over the agent's replicas:
	// this one reconciles those it owns.
	Shards *Shards
	// Clusters, if set, connects to the destination Clusters apps name;
	// without it, an app naming one fails.
	Clusters *Clusters
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	watches *driftWatches
	renders *renderCache
	// cache reads the manager's informers directly (the client bypasses
	// them for Secrets, which an app may own).
	cache client.Reader

	// lastSynced remembers, per Application, the revision and generation of
	// its last successful reconcile. The cached Application a drift event
	// brings may predate our own last status update; this does not.
	mu         sync.Mutex
	lastSynced map[types.NamespacedName]syncedAt
	// lastStatus is the status last written per Application: a reconcile
	// working from a cached copy older than that write must not write the
	// same status again.
	lastStatus map[types.NamespacedName]writtenStatus
	// pinChecked remembers when each pinned app's branch was last
	// compared with its pin.
	pinChecked map[types.NamespacedName]pinCheck
	// stalled holds, per Application, the revision and generation that
	// failed terminally (see terminal): not tried again until one changes.
	stalled map[types.NamespacedName]syncedAt
	// failures holds, per Application, its failed attempts since its
	// last success, whether or not their status could be written.
	failures map[types.NamespacedName]failure
	// idle holds, per Application, what its last quiet plan started
	// from (see idle.go).
	idle map[types.NamespacedName]idleState
	// impersonating holds one engine per impersonated ServiceAccount.
	impersonating map[types.NamespacedName]*engine.Manager
	// owned are the apps this replica reconciles (sharded agents).
	owned map[types.NamespacedName]bool
}

// own counts app as this replica's (converge_shard_applications).
func (r *ApplicationReconciler) own(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owned == nil {
		r.owned = map[types.NamespacedName]bool{}
	}
	r.owned[key] = true
	shardApplications.Set(float64(len(r.owned)))
}

type writtenStatus struct {
	status *v1alpha1.ApplicationStatus
	at     time.Time
}

type syncedAt struct {
	revision   string
	generation int64
}

func (r *ApplicationReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// SetupWithManager registers the reconciler and its watches.
func (r *ApplicationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.renders = newRenderCache(64)
	r.cache = mgr.GetCache()
	if r.Concurrency <= 0 {
		r.Concurrency = 8
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.Application{}, dependsOnIndex, func(o client.Object) []string {
		return dependencyKeys(o.(*v1alpha1.Application))
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.Application{}, clusterIndex, func(o client.Object) []string {
		if c := o.(*v1alpha1.Application).Spec.Destination.Cluster; c != "" {
			return []string{c}
		}
		return nil
	}); err != nil {
		return err
	}
	opts := controller.Options{MaxConcurrentReconciles: r.Concurrency}
	bld := ctrl.NewControllerManagedBy(mgr)
	if r.Shards != nil {
		// Every replica reconciles its share, leader or not; a change
		// of members looks at every app again.
		opts.NeedLeaderElection = ptr.To(false)
		moved := make(chan event.GenericEvent, 1)
		r.Shards.Moved = moved
		bld = bld.WatchesRawSource(crsource.Channel(moved, handler.EnqueueRequestsFromMapFunc(r.ownedApps)))
		if err := mgr.Add(r.Shards); err != nil {
			return err
		}
	}
	c, err := bld.
		// Status updates do not trigger reconciles; spec, annotation
		// (converge.dev/requested-at) and deletion changes do.
		For(&v1alpha1.Application{}, builder.WithPredicates(specOrRequestChanged())).
		// Any change to an Application wakes those that depend on it.
		Watches(&v1alpha1.Application{}, r.dependents()).
		Watches(&v1alpha1.Tenant{}, r.appsOfTenant()).
		// A Cluster that appears, changes or becomes reachable (or not)
		// wakes the apps that go to it.
		Watches(&v1alpha1.Cluster{}, r.appsOfCluster(), builder.WithPredicates(clusterChanged())).
		WithOptions(opts).
		Build(r)
	if err != nil {
		return err
	}
	r.watches = newDriftWatches(mgr.GetCache(), c)
	if r.Clusters != nil {
		return mgr.Add(&clustersRunnable{clusters: r.Clusters, ctrl: c, leader: r.Shards == nil})
	}
	return nil
}

// Reconcile is the one reconcile shell: get, finalizer and deletion,
// suspend, then fetch, render, plan/apply/prune, health, and one status
// update and requeue decision at the end.
func (r *ApplicationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	if r.Shards != nil {
		if owns, later := r.Shards.Owns(req.NamespacedName); !owns {
			if later {
				return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
			}
			// Another replica's: what this one knew of it goes stale.
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		r.own(req.NamespacedName)
	}
	start := r.now()
	defer func() { reconcileSeconds.Observe(r.now().Sub(start).Seconds()) }()
	app := &v1alpha1.Application{}
	if err := r.Client.Get(ctx, req.NamespacedName, app); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	engineApp := engine.App{Name: app.Name, Namespace: app.Namespace}
	if r.staleCopy(req.NamespacedName, app) && app.DeletionTimestamp.IsZero() {
		return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}

	if !app.DeletionTimestamp.IsZero() {
		// Deletion runs in dependency order: the apps that depend on this
		// one and are going too go first (their deletion wakes this one).
		if waiting := r.dependentsBeingDeleted(ctx, app); len(waiting) > 0 {
			log.FromContext(ctx).V(1).Info("deletion waits for dependents", "dependents", waiting)
			return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
		}
		return ctrl.Result{}, r.finalize(ctx, app, engineApp)
	}
	if !controllerutil.ContainsFinalizer(app, v1alpha1.ApplicationFinalizer) {
		patch := client.MergeFrom(app.DeepCopy())
		controllerutil.AddFinalizer(app, v1alpha1.ApplicationFinalizer)
		if err := r.Client.Patch(ctx, app, patch); err != nil {
			return ctrl.Result{}, err
		}
	}

	before := app.Status.DeepCopy()
	if r.Shards != nil {
		app.Status.Shard = r.Shards.ID
	}
	defer func() {
		if equality.Semantic.DeepEqual(before, &app.Status) || r.wrote(req.NamespacedName, &app.Status) {
			return
		}
		if err := r.Client.Status().Update(ctx, app); err != nil {
			if apierrors.IsConflict(err) {
				// Our copy was stale; look again at once.
				result = ctrl.Result{Requeue: true}
				return
			}
			retErr = errors.Join(retErr, err)
			return
		}
		r.mu.Lock()
		if r.lastStatus == nil {
			r.lastStatus = map[types.NamespacedName]writtenStatus{}
		}
		r.lastStatus[req.NamespacedName] = writtenStatus{status: app.Status.DeepCopy(), at: r.now()}
		r.mu.Unlock()
	}()

	if app.Spec.Suspend {
		setReady(app, metav1.ConditionFalse, v1alpha1.ReasonSuspended, "syncing is suspended")
		apimeta.RemoveStatusCondition(&app.Status.Conditions, v1alpha1.ConditionReconciling)
		return ctrl.Result{}, nil
	}
	return r.reconcile(ctx, app)
}

// reconcile runs the steps for a live, unsuspended app: what governs it,
// its source (and a pending rollback), the fetch, the render, the decision
// to sync, the sync, and the outcome in app's status.
func (r *ApplicationReconciler) reconcile(ctx context.Context, app *v1alpha1.Application) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(app)
	interval := durationOr(app.Spec.SyncPolicy.Interval, 3*time.Minute)
	req := pendingRequest(app)
	forced := req.at != ""
	if forced {
		// This reconcile handles the request, whatever its outcome: a
		// waiting `converge sync --wait` then sees the result or the error.
		app.Status.LastHandledRequest = req.at
	}
	run := &attempt{start: r.now(), trigger: req.trigger}
	// What governs the app: its Tenant's rules and the account everything
	// below runs as, its Secrets' reads included.
	ten, err := r.tenancy(ctx, app)
	if err != nil {
		return r.refused(ctx, app, run, v1alpha1.ReasonPolicyViolation, err, interval)
	}
	run.account, run.allowChart, run.queue = ten.ServiceAccount, ten.AllowChart(), ten.Queue()
	// The Applications it depends on: a cycle is refused; readiness is
	// weighed in the decision below.
	dependencies, err := dependencyWait(app, r.cachedApp(ctx), "")
	if err != nil {
		return r.refused(ctx, app, run, v1alpha1.ReasonDependencyCycle, err, interval)
	}
	// local acts in the agent's own cluster as the app's account: it
	// reads the app's Secrets and values and keeps its records there.
	local, err := r.engineFor(app, ten.ServiceAccount)
	if err != nil {
		return r.failed(ctx, app, run, v1alpha1.ReasonApplyFailed, err, interval)
	}
	// Where the objects go: here, or a destination Cluster, which must
	// be reachable before anything is fetched for it.
	tgt, err := r.target(ctx, app, local, ten.ServiceAccount)
	if err != nil {
		return r.unavailable(ctx, app, err, interval)
	}
	run.target = tgt
	eng := tgt.engine
	secrets := r.secretsReader(app, local, ten.ServiceAccount)
	run.notify = &notifier{ctx: ctx, n: r.Notifier, app: app, secrets: secrets, allow: ten.AllowNotify}
	// The source, its credentials and trusted keys: read once, used by the
	// rollback, the fetch and the pin check alike.
	src, err := appspec.SourceRequest(ctx, secrets, app)
	if err != nil {
		return r.failed(ctx, app, run, v1alpha1.ReasonFetchFailed, err, interval)
	}
	gitSource := app.Spec.Source.RepoURL != ""
	// A Git-native rollback writes its commit first; the sync below then
	// fetches and applies it at once.
	if rb, ok := pendingRollback(app); ok && gitSource {
		if err := r.rollback(ctx, app, rb, src, run); err == nil {
			forced, run.trigger = true, engine.Trigger{Type: engine.TriggerRollback, User: rb.By}
		}
	}

	// Fetch. A recent answer for the same repository and ref is reused, so
	// drift reconciles and 100 apps on one repository cost no Git request.
	src.MaxAge = interval
	if forced {
		src.MaxAge = 0
		// A webhook delivery, stamped by an agent's own clock, is
		// answered by any ls-remote that started after it: a flood of
		// deliveries for one push costs one Git request, not one each.
		if at, ok := req.webhookStamp(); ok && run.trigger.Type == engine.TriggerWebhook {
			src.NotBefore = at
		}
	}
	var artifact *source.Artifact
	if gitSource {
		artifact, err = r.fetch(ctx, app, src)
		if err != nil {
			gitFetches.WithLabelValues("failed").Inc()
			var verr *source.VerificationError
			if errors.As(err, &verr) {
				return r.refused(ctx, app, run, v1alpha1.ReasonVerificationFailed, verr, interval)
			}
			return r.failed(ctx, app, run, v1alpha1.ReasonFetchFailed, err, interval)
		}
		gitFetches.WithLabelValues("ok").Inc()
	}
	if artifact, err = r.chartAndValues(ctx, app, local, secrets, artifact, src.MaxAge, run); err != nil {
		if tenancy.Refused(err) {
			return r.refused(ctx, app, run, v1alpha1.ReasonPolicyViolation, err, interval)
		}
		return r.failed(ctx, app, run, v1alpha1.ReasonFetchFailed, err, interval)
	}
	run.artifact = artifact
	interval = nextPoll(app, artifact.CheckedAt, interval, r.now())
	if gitSource {
		r.updatePin(ctx, app, src, interval, forced)
	}
	if !forced && r.stalledOn(key, artifact.Revision, app.Generation) {
		// A terminal failure of this very revision and spec: trying again
		// would fail again. A new commit, a spec change or a request ends
		// the stall.
		return ctrl.Result{RequeueAfter: interval}, nil
	}
	// Nothing changed since a plan that found nothing to do: stop here.
	var fingerprint uint64
	if last, ok := r.idleState(key); ok && !forced && last.same(artifact.Revision, app.Generation, ten.Version) {
		// Watches made anew (another cluster's, after an outage) take
		// up the kinds again; a no-op for watches already running.
		if err := tgt.watches.ensure(last.kinds); err != nil {
			log.FromContext(ctx).Error(err, "watching owned objects")
		}
		fp, err := r.fingerprint(ctx, app, tgt, last.kinds)
		if err != nil {
			log.FromContext(ctx).Error(err, "reading owned objects from the cache")
		}
		if err == nil && fp == last.fingerprint {
			syncTotal.WithLabelValues("idle").Inc()
			return ctrl.Result{RequeueAfter: r.requeueAfter(app, interval)}, nil
		}
		fingerprint = fp
	} else if !ok && !forced {
		// Never seen here since this replica started (a restart, a
		// shard taking over): its record may show nothing changed.
		if idle, ok := r.idleFromRecord(ctx, app, tgt, tgt.records(local), artifact.Revision); ok {
			idle.tenant = ten.Version
			r.setIdle(key, idle)
			r.remember(key, syncedAt{revision: artifact.Revision, generation: app.Generation})
			syncTotal.WithLabelValues("idle").Inc()
			return ctrl.Result{RequeueAfter: r.requeueAfter(app, interval)}, nil
		}
	}
	objs, err := r.render(ctx, app, artifact, run)
	if err != nil {
		return r.renderFailed(ctx, app, run, err, interval)
	}

	if dependencies == "" && sameRevisionDeps(app) {
		// Now that the revision is known: do the dependencies have it?
		dependencies, _ = dependencyWait(app, r.cachedApp(ctx), artifact.Revision)
	}
	in := syncInputs{
		revision: artifact.Revision, generation: app.Generation, status: &app.Status,
		seen: r.seen(key), trigger: run.trigger, forced: forced, automated: app.Spec.SyncPolicy.Automated,
		dependencies: dependencies,
	}
	if len(ten.Windows) > 0 {
		manual := run.trigger.Type == engine.TriggerManual || run.trigger.Type == engine.TriggerRollback
		open, why, err := syncWindowVerdict(ten.Windows, r.now(), manual)
		if err != nil {
			return r.refused(ctx, app, run, v1alpha1.ReasonPolicyViolation, fmt.Errorf("Tenant %s: %w", ten.Tenant, err), interval)
		}
		if !open {
			in.windowClosed = fmt.Sprintf("Tenant %s: %s; the sync waits", ten.Tenant, why)
		}
	}
	ignore, err := appspec.IgnoreRules(app, r.IgnoreDifferences)
	if err != nil {
		return r.refused(ctx, app, run, v1alpha1.ReasonValidationFailed, err, interval)
	}
	d := decideSync(in)
	run.trigger = d.trigger
	opts := r.runOptions(app, run)
	opts.PlanOptions = engine.PlanOptions{
		App:               engine.App{Name: app.Name, Namespace: app.Namespace},
		DefaultNamespace:  appspec.Destination(app),
		Prune:             d.prune,
		Revision:          artifact.Revision,
		Policy:            ten.Policy,
		Adopt:             ten.Adopt,
		CreateNamespace:   appspec.Namespace(app),
		Records:           tgt.records(local),
		IgnoreDifferences: ignore,
	}
	opts.Apply, opts.Record = d.apply, d.record
	// Hooks run once per new revision or spec, a retry of a failed sync
	// or a person's request; never to correct drift.
	opts.Hooks = engine.HooksSkip
	if d.apply && d.record {
		opts.Hooks = engine.HooksRun
	}
	opts.Timeout = durationOr(app.Spec.SyncPolicy.Timeout, 5*time.Minute)
	res, err := eng.Run(ctx, objs, opts)
	run.recorded = true // Run wrote the entry the sync deserved
	r.setIdle(key, nil)
	if res.HistoryError != nil {
		log.FromContext(ctx).Error(res.HistoryError, "recording sync history")
	}
	if err != nil {
		if errors.Is(err, engine.ErrPolicy) {
			return r.refused(ctx, app, run, v1alpha1.ReasonPolicyViolation, err, interval)
		}
		if tgt.cluster != "" && unreachable(err) {
			return r.unavailable(ctx, app, &ClusterError{Cluster: tgt.cluster, Reason: v1alpha1.ReasonClusterUnreachable, Err: err}, interval)
		}
		reason := v1alpha1.ReasonApplyFailed
		var verr *engine.ValidationError
		var herr *engine.HookError
		switch {
		case errors.As(err, &herr):
			reason = v1alpha1.ReasonHookFailed
		case errors.As(err, &verr), errors.Is(err, engine.ErrUnknownKind):
			reason = v1alpha1.ReasonValidationFailed
		case errors.Is(err, engine.ErrEmptyRender):
			reason = v1alpha1.ReasonRenderFailed
			err = fmt.Errorf("%s renders no objects; refusing to apply an empty desired set", orDot(app.Spec.Source.Path))
		}
		if res.Changes != nil {
			app.Status.Resources = resourceStatuses(res.Changes, nil, false)
		}
		return r.failed(ctx, app, run, reason, err, interval)
	}
	if err := tgt.watches.ensure(res.Kinds); err != nil {
		log.FromContext(ctx).Error(err, "watching owned objects")
	}
	log.FromContext(ctx).V(1).Info("reconciled", "revision", artifact.Revision, "applied", res.Applied, "changes", res.Counts.String())
	prevRev, prevCommit, prevHealth := app.Status.Sync.Revision, app.Status.Sync.Commit, app.Status.Health.Status
	r.record(app, artifact, res.Changes, res.Health, res.Applied, d.held)
	if h := app.Status.Health; h.Status == v1alpha1.HealthDegraded && prevHealth != v1alpha1.HealthDegraded {
		run.notify.send(v1alpha1.NotifyHealthDegraded, artifact.Revision, h.Message)
	}
	app.Status.Sync.Chart = nil
	if ch := run.chart; ch != nil {
		app.Status.Sync.Chart = &v1alpha1.ChartStatus{Name: ch.Name, Version: ch.Version, Digest: ch.Digest}
	}
	if d.heldBack && res.Changes.HasChanges() {
		// Held by a sync window or a dependency: the status keeps the
		// revision last synced, so the held one is still new when the
		// window opens or the dependency is ready (which wakes this app
		// at once); look again within a minute.
		app.Status.Sync.Revision, app.Status.Sync.Commit = prevRev, prevCommit
		return ctrl.Result{RequeueAfter: min(interval, time.Minute)}, nil
	}
	r.remember(key, syncedAt{revision: artifact.Revision, generation: app.Generation})
	idle := &idleState{revision: artifact.Revision, generation: app.Generation, tenant: ten.Version, kinds: res.Kinds}
	if !res.Applied || !res.Changes.HasChanges() {
		// Wrote nothing: the fingerprint taken before stands for what
		// was planned. After writes, the next reconcile takes one.
		idle.fingerprint = fingerprint
	}
	r.setIdle(key, idle)
	return ctrl.Result{RequeueAfter: r.requeueAfter(app, interval)}, nil
}

// ownedApps is every Application this replica owns, after a change of
// shard members (the others' reconciles would end at once anyway).
func (r *ApplicationReconciler) ownedApps(ctx context.Context, _ client.Object) []reconcile.Request {
	var apps v1alpha1.ApplicationList
	if err := r.cache.List(ctx, &apps); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range apps.Items {
		key := client.ObjectKeyFromObject(&apps.Items[i])
		if owns, later := r.Shards.Owns(key); owns || later {
			reqs = append(reqs, reconcile.Request{NamespacedName: key})
		} else {
			r.forget(key)
		}
	}
	return reqs
}

// clustersRunnable gives Clusters the manager's lifetime and the
// controller to feed, on the leader or, sharded, on every replica.
type clustersRunnable struct {
	clusters *Clusters
	ctrl     controller.Controller
	leader   bool
}

func (c *clustersRunnable) NeedLeaderElection() bool { return c.leader }

func (c *clustersRunnable) Start(ctx context.Context) error {
	c.clusters.start(ctx, c.ctrl)
	<-ctx.Done()
	return nil
}

// stall remembers a terminal failure of revision at generation.
func (r *ApplicationReconciler) stall(key types.NamespacedName, revision string, generation int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stalled == nil {
		r.stalled = map[types.NamespacedName]syncedAt{}
	}
	r.stalled[key] = syncedAt{revision: revision, generation: generation}
}

// stalledOn reports whether revision at generation failed terminally.
func (r *ApplicationReconciler) stalledOn(key types.NamespacedName, revision string, generation int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.stalled[key]
	return ok && s.revision == revision && s.generation == generation
}

func (r *ApplicationReconciler) seen(key types.NamespacedName) syncedAt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastSynced[key]
}

func (r *ApplicationReconciler) remember(key types.NamespacedName, s syncedAt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastSynced == nil {
		r.lastSynced = map[types.NamespacedName]syncedAt{}
	}
	r.lastSynced[key] = s
	delete(r.stalled, key)
}

func (r *ApplicationReconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.lastSynced, key)
	delete(r.lastStatus, key)
	delete(r.pinChecked, key)
	delete(r.stalled, key)
	delete(r.idle, key)
	delete(r.failures, key)
	if r.owned[key] {
		delete(r.owned, key)
		shardApplications.Set(float64(len(r.owned)))
	}
	r.Clusters.release(key)
}

// wrote reports whether status is exactly what was last written.
func (r *ApplicationReconciler) wrote(key types.NamespacedName, status *v1alpha1.ApplicationStatus) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	last, ok := r.lastStatus[key]
	return ok && equality.Semantic.DeepEqual(last.status, status)
}

// staleCopy reports whether app, read from the cache, predates a status
// this agent wrote moments ago: acting on it would redo work and write a
// status that conflicts. The informer catches up within milliseconds; after
// a few seconds a difference means someone else wrote, and the copy is used.
func (r *ApplicationReconciler) staleCopy(key types.NamespacedName, app *v1alpha1.Application) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	last, ok := r.lastStatus[key]
	return ok && r.now().Sub(last.at) < 3*time.Second && !equality.Semantic.DeepEqual(last.status, &app.Status)
}

func (r *ApplicationReconciler) requeueAfter(app *v1alpha1.Application, interval time.Duration) time.Duration {
	if app.Status.Health.Status == v1alpha1.HealthProgressing || app.Status.Health.Status == v1alpha1.HealthMissing {
		if interval > 5*time.Second {
			return 5 * time.Second
		}
	}
	return interval
}

// nextPoll is how long until app next asks its repository: one interval
// after the answer it used was asked for (an answer another app on the
// same repository got a while ago counts from then), plus a jitter of up
// to a tenth of the interval, the same for the app every time. So a push
// is seen within 1.1 intervals, and apps on one repository spread over a
// tenth of it, the first asking the server for them all.
func nextPoll(app *v1alpha1.Application, checked time.Time, interval time.Duration, now time.Time) time.Duration {
	h := fnv.New32a()
	h.Write([]byte(app.Namespace + "/" + app.Name))
	var jitter time.Duration
	if tenth := interval / 10; tenth > 0 {
		jitter = time.Duration(h.Sum32()) % tenth
	}
	if checked.IsZero() {
		return interval + jitter
	}
	next := checked.Add(interval + jitter).Sub(now)
	if next < time.Second {
		next = time.Second
	}
	return min(next, interval+jitter)
}

// chartAndValues adds to git (nil without a Git source) what else app's
// source holds: its chart, fetched (answers younger than maxAge reused),
// and its values from ConfigMaps and Secrets, read as the app's account. A
// change to the values is a new revision ("<revision>+values:<digest>").
func (r *ApplicationReconciler) chartAndValues(ctx context.Context, app *v1alpha1.Application, eng *engine.Manager, secrets client.Reader,
	git *source.Artifact, maxAge time.Duration, run *attempt) (*source.Artifact, error) {
	artifact := git
	if creq, ok, err := appspec.ChartRequest(ctx, secrets, app); ok {
		if err != nil {
			return nil, err
		}
		creq.MaxAge, creq.Allow = maxAge, run.allowChart
		if artifact, err = r.fetchChart(ctx, creq, artifact, run); err != nil {
			return nil, err
		}
	}
	in, err := appspec.Read(ctx, eng.Client(), app)
	if err != nil {
		return nil, err
	}
	a := *artifact
	a.Revision = in.Revision(a.Revision)
	run.inputs = in
	return &a, nil
}

// fetchChart fetches the chart of req and makes it part of the source:
// the revision becomes the Git revision and the chart's digest
// ("<commit>+sha256:..."), or the chart's digest alone without Git, so a
// new chart version is a new revision like a new commit.
func (r *ApplicationReconciler) fetchChart(ctx context.Context, req charts.Request, git *source.Artifact, run *attempt) (*source.Artifact, error) {
	if r.Charts == nil {
		return nil, errors.New("this agent fetches no charts")
	}
	ch, err := r.Charts.Fetch(ctx, req)
	if err != nil {
		return nil, err
	}
	run.chart = ch
	if git == nil {
		return &source.Artifact{URL: ch.URL, RefName: ch.Name + "@" + ch.Version, Revision: ch.Digest, Dir: r.Charts.EmptyDir(),
			Commit: source.CommitInfo{Subject: "chart " + ch.Name + " " + ch.Version}, CheckedAt: r.now()}, nil
	}
	a := *git
	a.Revision = git.Revision + "+" + ch.Digest
	return &a, nil
}

// fetch fetches what app follows (its pin, if pinned) from src.
func (r *ApplicationReconciler) fetch(ctx context.Context, app *v1alpha1.Application, src source.Request) (*source.Artifact, error) {
	req := src
	if app.Spec.Pin != nil {
		req.Ref = source.Ref{Commit: app.Spec.Pin.Revision}
	}
	return r.Sources.Fetch(ctx, req)
}

func (r *ApplicationReconciler) render(ctx context.Context, app *v1alpha1.Application, a *source.Artifact, run *attempt) ([]render.Object, error) {
	opts, err := appspec.RenderOptions(app, a.Dir)
	if err != nil {
		return nil, err
	}
	// Renders share a worker process only within a namespace and the
	// account its apps run as: what one tenant's render holds (values
	// from its Secrets) is never in a process another's render reaches.
	opts.Isolation = app.Namespace + "/"
	if run != nil {
		opts.Isolation += run.account
		opts.Queue = run.queue
	}
	opts.ReadRoots = r.ReadRoots
	if run != nil && run.chart != nil {
		opts.Chart = run.chart.Path
	}
	if run != nil {
		run.inputs.Apply(&opts)
	}
	// Charts see the cluster they go to (cached: no request per render).
	eng := r.Engine
	if run != nil && run.target != nil {
		eng = run.target.engine
	}
	caps, err := eng.Capabilities(ctx)
	if err != nil {
		return nil, &capabilitiesError{err}
	}
	opts.Helm.KubeVersion, opts.Helm.APIVersions = caps.KubeVersion, caps.APIVersions
	// Chart dependencies from repositories are fetched into the chart
	// cache, answered from a recent index within the app's interval.
	maxAge := durationOr(app.Spec.SyncPolicy.Interval, 3*time.Minute)
	var allow func(string) error
	if run != nil {
		allow = run.allowChart
	}
	return r.renders.render(ctx, a.Revision, opts, func(ctx context.Context, opts render.Options) (*render.Result, error) {
		if r.Charts == nil {
			return render.Render(ctx, opts)
		}
		return r.Charts.Render(ctx, opts, maxAge, allow)
	})
}

// renderFailed settles a render that failed, by what failed: the
// tenant's share of the render slots (retried soon, no status), the
// cluster (ApplyFailed), a refused or unreachable dependency repository
// (PolicyViolation, FetchFailed), or the source itself (RenderFailed).
func (r *ApplicationReconciler) renderFailed(ctx context.Context, app *v1alpha1.Application, run *attempt, err error, interval time.Duration) (ctrl.Result, error) {
	var cerr *capabilitiesError
	switch {
	case errors.Is(err, render.ErrBusy):
		return ctrl.Result{RequeueAfter: time.Second}, nil
	case errors.As(err, &cerr):
		return r.failed(ctx, app, run, v1alpha1.ReasonApplyFailed, err, interval)
	case tenancy.Refused(err):
		return r.refused(ctx, app, run, v1alpha1.ReasonPolicyViolation, err, interval)
	case charts.Transient(err):
		return r.failed(ctx, app, run, v1alpha1.ReasonFetchFailed, err, interval)
	}
	return r.failed(ctx, app, run, v1alpha1.ReasonRenderFailed, err, interval)
}

// capabilitiesError is a failure to describe the cluster to a chart.
type capabilitiesError struct{ err error }

func (e *capabilitiesError) Error() string { return e.err.Error() }
func (e *capabilitiesError) Unwrap() error { return e.err }

// finalize prunes the app's objects (unless the policy is Orphan) and lets
// the Application go.
func (r *ApplicationReconciler) finalize(ctx context.Context, app *v1alpha1.Application, engineApp engine.App) error {
	if !controllerutil.ContainsFinalizer(app, v1alpha1.ApplicationFinalizer) {
		return nil
	}
	if app.Spec.DeletionPolicy != v1alpha1.DeletionPolicyOrphan {
		ten, err := r.tenancy(ctx, app)
		if err != nil {
			// Pruning with the agent's own rights is what tenancy rules
			// out: leave the objects, say so, and let the app go.
			r.Recorder.Event(app, corev1.EventTypeWarning, v1alpha1.ReasonPruneFailed, "objects left in place: "+err.Error())
			patch := client.MergeFrom(app.DeepCopy())
			controllerutil.RemoveFinalizer(app, v1alpha1.ApplicationFinalizer)
			return r.Client.Patch(ctx, app, patch)
		}
		local, err := r.engineFor(app, ten.ServiceAccount)
		if err != nil {
			return err
		}
		tgt, err := r.target(ctx, app, local, ten.ServiceAccount)
		var cerr *ClusterError
		if errors.As(err, &cerr) && cerr.Reason == v1alpha1.ReasonClusterNotFound {
			// Nowhere to prune: say so and let the app go.
			r.Recorder.Event(app, corev1.EventTypeWarning, v1alpha1.ReasonPruneFailed, "objects left in place: "+cerr.Error())
			patch := client.MergeFrom(app.DeepCopy())
			controllerutil.RemoveFinalizer(app, v1alpha1.ApplicationFinalizer)
			return r.Client.Patch(ctx, app, patch)
		}
		if err != nil {
			r.Recorder.Event(app, corev1.EventTypeWarning, v1alpha1.ReasonPruneFailed, redact.Error(err))
			return err
		}
		eng := tgt.engine
		opts := engine.DeleteOptions{
			DefaultNamespace: appspec.Destination(app),
			Policy:           ten.Policy,
			Timeout:          durationOr(app.Spec.SyncPolicy.Timeout, 5*time.Minute),
			Records:          tgt.records(local),
			History:          r.Engine.Client(),
			Mode:             engine.ModePull,
		}
		if app.Spec.HistoryLimit != nil {
			opts.HistoryLimit = int(*app.Spec.HistoryLimit)
		}
		// PreDelete and PostDelete hooks come from the source as it is
		// now; one that cannot be rendered does not hold the deletion.
		if objs, err := r.deletionObjects(ctx, app, local, tgt, ten.ServiceAccount); errors.Is(err, render.ErrBusy) {
			return err // the tenant's renders are busy: the hooks wait, they are not skipped
		} else if err != nil {
			r.Recorder.Event(app, corev1.EventTypeWarning, "DeleteHooksSkipped", "PreDelete and PostDelete hooks not run: "+redact.Error(err))
		} else {
			opts.Objects = objs
		}
		_, hooks, err := eng.Delete(ctx, engineApp, opts)
		for _, h := range hooks {
			typ := corev1.EventTypeNormal
			if h.Status != engine.HookSucceeded {
				typ = corev1.EventTypeWarning
			}
			r.Recorder.Event(app, typ, "Hook", fmt.Sprintf("%s hook %s: %s (%s)", h.Phase, h.Ref, h.Status, h.Message))
		}
		if err != nil {
			r.Recorder.Event(app, corev1.EventTypeWarning, v1alpha1.ReasonPruneFailed, redact.Error(err))
			return err
		}
	}
	patch := client.MergeFrom(app.DeepCopy())
	controllerutil.RemoveFinalizer(app, v1alpha1.ApplicationFinalizer)
	return r.Client.Patch(ctx, app, patch)
}

// secretsReader reads app's Secrets (credentials, trusted keys, values)
// as the account it runs as: its ServiceAccount's through eng, else the
// agent's.
func (r *ApplicationReconciler) secretsReader(app *v1alpha1.Application, eng *engine.Manager, serviceAccount string) client.Reader {
	if serviceAccount != "" {
		return r.SecretCache.Reader(app.Namespace+"/"+serviceAccount, eng.Client())
	}
	return r.SecretCache.Reader("", r.Secrets)
}

// deletionObjects fetches and renders app's source for its deletion hooks,
// as a sync would (recent Git and chart answers are reused).
func (r *ApplicationReconciler) deletionObjects(ctx context.Context, app *v1alpha1.Application, local *engine.Manager, tgt *target, serviceAccount string) ([]render.Object, error) {
	secrets := r.secretsReader(app, local, serviceAccount)
	maxAge := durationOr(app.Spec.SyncPolicy.Interval, 3*time.Minute)
	run := &attempt{target: tgt, account: serviceAccount}
	var artifact *source.Artifact
	if app.Spec.Source.RepoURL != "" {
		src, err := appspec.SourceRequest(ctx, secrets, app)
		if err != nil {
			return nil, err
		}
		src.MaxAge = maxAge
		if artifact, err = r.fetch(ctx, app, src); err != nil {
			return nil, err
		}
	}
	artifact, err := r.chartAndValues(ctx, app, local, secrets, artifact, maxAge, run)
	if err != nil {
		return nil, err
	}
	return r.render(ctx, app, artifact, run)
}

func specOrRequestChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld, e.ObjectNew
		return o.GetGeneration() != n.GetGeneration() ||
			o.GetAnnotations()[v1alpha1.AnnotationRequestedAt] != n.GetAnnotations()[v1alpha1.AnnotationRequestedAt] ||
			o.GetAnnotations()[v1alpha1.AnnotationRollback] != n.GetAnnotations()[v1alpha1.AnnotationRollback] ||
			!n.GetDeletionTimestamp().IsZero()
	}}
}

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil || d.Duration <= 0 {
		return def
	}
	return d.Duration
}

// engineFor returns the engine that acts for app: the agent's own when sa
// is empty, or one impersonating ServiceAccount sa in app's namespace
// (made once per account).
func (r *ApplicationReconciler) engineFor(app *v1alpha1.Application, sa string) (*engine.Manager, error) {
	if sa == "" {
		return r.Engine, nil
	}
	if r.Config == nil {
		return nil, fmt.Errorf("ServiceAccount %s: this agent cannot impersonate (no configuration)", sa)
	}
	key := types.NamespacedName{Namespace: app.Namespace, Name: sa}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.impersonating[key]; ok {
		return m, nil
	}
	cfg := rest.CopyConfig(r.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + app.Namespace + ":" + sa}
	m, err := engine.New(cfg, engine.DefaultOptions())
	if err != nil {
		return nil, fmt.Errorf("impersonating ServiceAccount %s/%s: %w", app.Namespace, sa, err)
	}
	if r.impersonating == nil {
		r.impersonating = map[types.NamespacedName]*engine.Manager{}
	}
	r.impersonating[key] = m
	return m, nil
}

func commitInfo(a *source.Artifact) *v1alpha1.CommitInfo {
	c := &v1alpha1.CommitInfo{Author: a.Commit.Author, Subject: a.Commit.Subject}
	if !a.Commit.Date.IsZero() {
		d := metav1.NewTime(a.Commit.Date)
		c.Date = &d
	}
	if a.Signer != nil {
		c.Signer = a.Signer.Type + ":" + a.Signer.Fingerprint
	}
	return c
}

func orDot(path string) string {
	if path == "" {
		return "."
	}
	return path
}
