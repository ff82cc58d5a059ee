package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/source"
)

// pendingRollback returns the rollback request the agent has not handled.
func pendingRollback(app *v1alpha1.Application) (v1alpha1.RollbackRequest, bool) {
	var rb v1alpha1.RollbackRequest
	raw := app.Annotations[v1alpha1.AnnotationRollback]
	if raw == "" {
		return rb, false
	}
	if err := json.Unmarshal([]byte(raw), &rb); err != nil || rb.ID == "" {
		// Handle a malformed request once, by reporting it.
		rb = v1alpha1.RollbackRequest{ID: raw}
	}
	if app.Status.Rollback != nil && app.Status.Rollback.Request == rb.ID {
		return rb, false
	}
	// An app with Git and a chart records "<commit>+sha256:<chart>": a
	// Git-native rollback restores the commit (the chart follows its
	// version range).
	rb.Target, _, _ = strings.Cut(rb.Target, "+")
	return rb, true
}

// rollback carries out a Git-native rollback: check that the target still
// renders, then write and push a commit restoring the app's path to it.
// The outcome goes to status.rollback and to an event.
func (r *ApplicationReconciler) rollback(ctx context.Context, app *v1alpha1.Application, rb v1alpha1.RollbackRequest, run *attempt) error {
	st := &v1alpha1.RollbackStatus{Request: rb.ID, Target: rb.Target}
	app.Status.Rollback = st
	fail := func(err error) error {
		st.Error = err.Error()
		r.Recorder.Event(app, corev1.EventTypeWarning, v1alpha1.ReasonRollbackFailed, "rollback to "+source.ShortRevision(rb.Target)+" refused: "+st.Error)
		return err
	}
	if len(rb.Target) != 40 && len(rb.Target) != 64 {
		return fail(fmt.Errorf("the request must name a full commit SHA, got %q", rb.Target))
	}
	branch := "main"
	if ref := app.Spec.Source.Ref; ref != nil {
		if !rb.Pin && (ref.Tag != "" || ref.Semver != "" || ref.Commit != "") {
			return fail(fmt.Errorf("a Git-native rollback writes a commit on the tracked branch, and this Application follows no branch; use --pin"))
		}
		if ref.Branch != "" {
			branch = ref.Branch
		}
	}
	if v := app.Spec.Source.Verify; v != nil {
		if !rb.Pin {
			return fail(fmt.Errorf("this Application accepts only signed revisions, and converge cannot sign the rollback commit; use --pin, or push a signed revert"))
		}
		if v.Mode == source.VerifyTag {
			return fail(fmt.Errorf("this Application verifies tag signatures, and a pin names a commit; set spec.source.ref.tag to the older tag instead"))
		}
	}
	if app.Spec.Pin != nil && !rb.Pin {
		return fail(fmt.Errorf("the Application is pinned to %s; unpin it first", source.ShortRevision(app.Spec.Pin.Revision)))
	}
	// The target, resolved and rendered as the sync after the rollback
	// will: its chart, values and variables as they are now.
	breq := r.buildRequest(run)
	breq.Source.Ref, breq.Source.MaxAge = source.Ref{Commit: rb.Target}, 0
	build, err := r.Builder.Resolve(ctx, breq)
	if err != nil {
		return fail(fmt.Errorf("fetching %s: %w", source.ShortRevision(rb.Target), err))
	}
	target, req := build.Artifact, run.src
	if _, err := r.render(ctx, run.target, build); err != nil {
		return fail(fmt.Errorf("the tree at %s no longer renders: %w", source.ShortRevision(rb.Target), err))
	}
	if rb.Pin {
		patch := client.MergeFrom(app.DeepCopy())
		app.Spec.Pin = &v1alpha1.Pin{Revision: rb.Target, Reason: "rollback by " + orUnknown(rb.By)}
		status := app.Status.DeepCopy()
		if err := r.Client.Patch(ctx, app, patch); err != nil {
			return fail(fmt.Errorf("pinning: %w", err))
		}
		app.Status = *status
		app.Status.Rollback = st
		st.Commit = rb.Target
		r.Recorder.Eventf(app, corev1.EventTypeNormal, v1alpha1.ReasonRolledBack, "pinned to %s, requested by %s", source.ShortRevision(rb.Target), orUnknown(rb.By))
		return nil
	}
	path := strings.Trim(app.Spec.Source.Path, "/")
	if path == "" {
		path = "the repository root"
	}
	res, err := r.Builder.Sources.Restore(ctx, source.RestoreRequest{
		URL: req.URL, Auth: req.Auth, Insecure: req.Insecure, Branch: branch, Path: app.Spec.Source.Path, Target: rb.Target,
		Author: "converge", AuthorEmail: "converge@" + app.Namespace + ".invalid",
		Message: func(parent string) string {
			msg := fmt.Sprintf("Roll back %s to %s\n\nRestores %s to its content at %s (%q),\nundoing the changes of %s..%s.\n\nApplication: %s/%s\n",
				path, source.ShortRevision(rb.Target), path, rb.Target, target.Commit.Subject, source.ShortRevision(rb.Target), source.ShortRevision(parent), app.Namespace, app.Name)
			if rb.By != "" {
				msg += "Requested-by: " + rb.By + "\n"
			}
			return msg
		},
	})
	if errors.Is(err, source.ErrNothingToRestore) {
		st.Commit = res.Commit
		r.Recorder.Eventf(app, corev1.EventTypeNormal, v1alpha1.ReasonRolledBack, "%s on %s already has the content of %s: nothing to commit", path, branch, source.ShortRevision(rb.Target))
		return nil
	}
	if err != nil {
		return fail(err)
	}
	st.Commit = res.Commit
	r.Recorder.Eventf(app, corev1.EventTypeNormal, v1alpha1.ReasonRolledBack, "pushed %s to %s restoring %s to %s (undoing %s..%s), requested by %s",
		source.ShortRevision(res.Commit), branch, path, source.ShortRevision(rb.Target), source.ShortRevision(rb.Target), source.ShortRevision(res.Parent), orUnknown(rb.By))
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// updatePin keeps status.pin and the Pinned condition in step with
// spec.pin. How far the branch moved on is checked once per interval (it
// costs a fetch), and at once when a webhook or a person asks (recheck).
func (r *ApplicationReconciler) updatePin(ctx context.Context, app *v1alpha1.Application, src source.Request, interval time.Duration, recheck bool) {
	pin := app.Spec.Pin
	if pin == nil {
		app.Status.Pin = nil
		apimeta.RemoveStatusCondition(&app.Status.Conditions, v1alpha1.ConditionPinned)
		return
	}
	branch := "main"
	if ref := app.Spec.Source.Ref; ref != nil {
		switch {
		case ref.Branch != "":
			branch = ref.Branch
		case ref.Tag != "" || ref.Semver != "" || ref.Commit != "":
			branch = ""
		}
	}
	key := types.NamespacedName{Namespace: app.Namespace, Name: app.Name}
	st := app.Status.Pin
	checked, ok := r.pinCheckedAt(key)
	fresh := !recheck && st != nil && st.Revision == pin.Revision && ok && checked.revision == pin.Revision && r.now().Sub(checked.at) < interval
	if !fresh {
		st = &v1alpha1.PinStatus{Revision: pin.Revision, Branch: branch, Behind: -1}
		if branch != "" {
			n, tip, err := r.Builder.Sources.CountBehind(ctx, src.URL, src.Auth, src.Insecure, branch, pin.Revision, 200)
			if err == nil {
				st.Behind, st.BranchRevision = int32(n), tip
			} else {
				log.FromContext(ctx).Error(err, "checking how far the branch is ahead of the pin")
			}
		}
		r.pinChecked(key, pinCheck{revision: pin.Revision, at: r.now()})
	}
	app.Status.Pin = st
	msg := "pinned to " + source.ShortRevision(pin.Revision)
	if pin.Reason != "" {
		msg += " (" + pin.Reason + ")"
	}
	switch {
	case st.Branch == "":
	case st.Behind == 0:
		msg += "; branch " + st.Branch + " has nothing newer"
	case st.Behind > 0:
		msg += fmt.Sprintf("; branch %s is %d commit(s) ahead, at %s", st.Branch, st.Behind, source.ShortRevision(st.BranchRevision))
	default:
		msg += fmt.Sprintf("; branch %s has moved on to %s", st.Branch, source.ShortRevision(st.BranchRevision))
	}
	msg += "; `converge rollback " + app.Name + " --unpin` resumes following it"
	setCondition(app, v1alpha1.ConditionPinned, metav1.ConditionTrue, v1alpha1.ReasonPinned, msg)
}
