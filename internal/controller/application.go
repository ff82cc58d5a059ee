package controller

import (
	"context"
	"errors"
	"hash/fnv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/notify"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tenancy"
	"converge.dev/converge/internal/tracing"
)

// ApplicationReconciler converges Applications. Its steps are in
// reconcile.go, how a failure ends in outcome.go, what it remembers of
// each app in memory.go, its watches in setup.go and an app's deletion in
// finalize.go.
type ApplicationReconciler struct {
	Client client.Client
	Engine *engine.Manager
	// Config is the agent's own connection; Applications with a
	// serviceAccountName get an engine impersonating that account.
	Config *rest.Config
	// Builder builds apps' desired state (fetch, chart, inputs, render),
	// the one the web UI's previews use too.
	Builder *appspec.Builder
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
	// cache reads the manager's informers directly (the client bypasses
	// them for Secrets, which an app may own).
	cache  client.Reader
	memory memory
	// accounts holds one engine per impersonated ServiceAccount.
	accounts accounts
	// wake reconciles an app a push asked for in memory; elected is
	// closed once this replica may reconcile (see push.go).
	wake    chan event.GenericEvent
	elected <-chan struct{}
}

func (r *ApplicationReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
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
	// One trace per reconcile, the status write included (reconcile adds
	// its steps and attributes).
	ctx, span := tracing.Start(ctx, "reconcile", attribute.String("app.namespace", req.Namespace), attribute.String("app.name", req.Name))
	defer span.End()
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

	base := app.DeepCopy()
	before := &base.Status
	if r.Shards != nil {
		app.Status.Shard = r.Shards.ID
	}
	out := &outbox{}
	defer func() {
		if equality.Semantic.DeepEqual(before, &app.Status) || r.wrote(req.NamespacedName, &app.Status) {
			out.flush(true)
			return
		}
		var requeue bool
		err := traced(ctx, "status", func(ctx context.Context) (err error) {
			requeue, err = writeStatus(ctx, r.Client, app, base)
			return err
		})
		out.flush(!requeue && err == nil)
		switch {
		case requeue:
			result = ctrl.Result{Requeue: true}
		case err != nil:
			retErr = errors.Join(retErr, err)
		default:
			r.written(req.NamespacedName, &app.Status)
		}
	}()

	if app.Spec.Suspend {
		setReady(app, metav1.ConditionFalse, v1alpha1.ReasonSuspended, "syncing is suspended")
		apimeta.RemoveStatusCondition(&app.Status.Conditions, v1alpha1.ConditionReconciling)
		return ctrl.Result{}, nil
	}
	return r.reconcile(ctx, app, out)
}

func requeueAfter(health v1alpha1.HealthStatusCode, interval time.Duration) time.Duration {
	if health == v1alpha1.HealthProgressing || health == v1alpha1.HealthMissing {
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
