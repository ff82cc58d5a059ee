package controller

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/render"
)

// finalize prunes the app's objects (unless the policy is Orphan) and lets
// the Application go.
func (r *ApplicationReconciler) finalize(ctx context.Context, app *v1alpha1.Application, engineApp engine.App) error {
	if !controllerutil.ContainsFinalizer(app, v1alpha1.ApplicationFinalizer) {
		return nil
	}
	if app.Spec.DeletionPolicy != v1alpha1.DeletionPolicyOrphan {
		if err := r.prune(ctx, app, engineApp); err != nil {
			return err
		}
	}
	return r.letGo(ctx, app)
}

// letGo removes the finalizer: the Application goes.
func (r *ApplicationReconciler) letGo(ctx context.Context, app *v1alpha1.Application) error {
	patch := client.MergeFrom(app.DeepCopy())
	controllerutil.RemoveFinalizer(app, v1alpha1.ApplicationFinalizer)
	return r.Client.Patch(ctx, app, patch)
}

// prune deletes what app owns, running its deletion hooks, as the account
// it runs as. Where pruning is impossible for good (tenancy rules refuse
// the app, its Cluster is gone), the objects are left, the event says so,
// and prune succeeds: the app must be able to go.
func (r *ApplicationReconciler) prune(ctx context.Context, app *v1alpha1.Application, engineApp engine.App) error {
	run := &attempt{app: app, interval: app.Spec.SyncPolicy.GetInterval()}
	var err error
	if run.ten, err = r.tenancy(ctx, app); err != nil {
		// Pruning with the agent's own rights is what tenancy rules
		// out.
		r.Recorder.Event(app, corev1.EventTypeWarning, v1alpha1.ReasonPruneFailed, "objects left in place: "+err.Error())
		return nil
	}
	if run.local, err = r.engineFor(app.Namespace, run.ten.ServiceAccount); err != nil {
		return err
	}
	run.target, err = r.target(ctx, app, run.local, run.ten.ServiceAccount)
	var cerr *ClusterError
	if errors.As(err, &cerr) && cerr.Reason == v1alpha1.ReasonClusterNotFound {
		r.Recorder.Event(app, corev1.EventTypeWarning, v1alpha1.ReasonPruneFailed, "objects left in place: "+cerr.Error())
		return nil
	}
	if err != nil {
		r.Recorder.Event(app, corev1.EventTypeWarning, v1alpha1.ReasonPruneFailed, redact.Error(err))
		return err
	}
	opts := engine.DeleteOptions{
		DefaultNamespace: appspec.Destination(app),
		Policy:           run.ten.Policy,
		Timeout:          app.Spec.SyncPolicy.GetTimeout(),
		Records:          run.target.records(run.local),
		History:          r.Engine.Client(),
		Mode:             engine.ModePull,
		HistoryLimit:     app.Spec.GetHistoryLimit(),
		NoDiffs:          true,
	}
	// PreDelete and PostDelete hooks come from the source as it is now;
	// one that cannot be rendered does not hold the deletion.
	if objs, err := r.deletionObjects(ctx, run); errors.Is(err, render.ErrBusy) {
		return err // the tenant's renders are busy: the hooks wait, they are not skipped
	} else if err != nil {
		r.Recorder.Event(app, corev1.EventTypeWarning, "DeleteHooksSkipped", "PreDelete and PostDelete hooks not run: "+redact.Error(err))
	} else {
		opts.Objects = objs
	}
	// The deletion's outcome event (Deleted or PruneFailed) and history
	// entry come from the engine, as a sync's do.
	opts.Events = appEvents{recorder: r.Recorder, app: app}
	_, err = run.target.engine.Delete(ctx, engineApp, opts)
	return err
}

// deletionObjects resolves and renders run's app for its deletion hooks,
// as a sync would (recent Git and chart answers are reused).
func (r *ApplicationReconciler) deletionObjects(ctx context.Context, run *attempt) ([]render.Object, error) {
	run.secrets = r.secretsReader(run.app.Namespace, run.local, run.ten.ServiceAccount)
	if run.app.Spec.Source.RepoURL != "" {
		var err error
		if run.src, err = appspec.SourceRequest(ctx, run.secrets, run.app.Namespace, &run.app.Spec.Source); err != nil {
			return nil, err
		}
	}
	build, err := r.Builder.Resolve(ctx, r.buildRequest(run))
	if err != nil {
		return nil, err
	}
	return r.render(ctx, run.target, build)
}
