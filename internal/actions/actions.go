// Package actions carries out what people do to an Application through
// converge (request a sync, suspend, resume, roll back, pin, unpin, create,
// delete) with their own Kubernetes identity, and records each in the app's
// audit trail: an entry in its history record and an Event. The CLI and the
// web UI both act through it, so an action means the same from either.
package actions

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/source"
)

// Actor acts on Applications as the identity of its client.
type Actor struct {
	client client.Client
	// User is the Kubernetes user name the apiserver knows the client by
	// ("" when it would not say).
	User string
	// Records, when set, writes the action records (history entry and
	// Event) instead of the acting client: the agent's web UI records what
	// a viewer did with the viewer's own token, having learned who the
	// viewer is from the apiserver, where history records are the agent's
	// to write (the multi-tenant profile's admission policy).
	Records client.Client
	// Component names the tool in the Events it emits: "cli" or "ui"
	// (source converge-cli, reporting controller converge.dev/cli).
	Component string
}

// New asks the apiserver who c is (SelfSubjectReview) and returns an Actor
// for it.
func New(ctx context.Context, c client.Client, component string) *Actor {
	return &Actor{client: c, User: Whoami(ctx, c), Component: component}
}

// Whoami asks the apiserver who the client is (SelfSubjectReview); it
// returns "" when the server does not say.
func Whoami(ctx context.Context, c client.Client) string {
	r := &authenticationv1.SelfSubjectReview{}
	if err := c.Create(ctx, r); err != nil {
		return ""
	}
	return r.Status.UserInfo.Username
}

// Done is what an action did.
type Done struct {
	// App is the Application as patched.
	App *v1alpha1.Application
	// Request is the converge.dev/requested-at stamp of the sync asked
	// for; the agent echoes it in status.lastHandledRequest once it acted.
	Request string
	// Rollback is the rollback asked for, if any.
	Rollback *v1alpha1.RollbackRequest
	// Warning says what went wrong recording the action (the action itself
	// is done); empty when nothing did.
	Warning string
}

// Sync asks the agent to fetch and sync ns/name now.
func (a *Actor) Sync(ctx context.Context, ns, name string, only ...engine.ResourceSelector) (Done, error) {
	var stamp string
	detail := ""
	if len(only) > engine.MaxResourceSelectors {
		return Done{}, fmt.Errorf("%d resources: at most %d in one selective sync", len(only), engine.MaxResourceSelectors)
	}
	if len(only) > 0 {
		names := make([]string, len(only))
		for i, s := range only {
			names[i] = s.String()
		}
		detail = "only " + strings.Join(names, ", ")
	}
	d, err := a.patch(ctx, ns, name, "sync-request", detail, func(app *v1alpha1.Application) error {
		stamp = a.requestSync(app)
		delete(app.Annotations, v1alpha1.AnnotationSyncResources)
		if len(only) == 0 {
			return nil
		}
		sel := v1alpha1.SyncResources{At: stamp}
		for _, s := range only {
			sel.Resources = append(sel.Resources, s.String())
		}
		raw, err := json.Marshal(sel)
		if err != nil {
			return err
		}
		app.Annotations[v1alpha1.AnnotationSyncResources] = string(raw)
		return nil
	})
	d.Request = stamp
	return d, err
}

// Suspend stops all syncing of ns/name until resumed.
func (a *Actor) Suspend(ctx context.Context, ns, name string) (Done, error) {
	return a.patch(ctx, ns, name, "suspend", "", func(app *v1alpha1.Application) error {
		app.Spec.Suspend = true
		return nil
	})
}

// Resume clears the suspension of ns/name and asks for a sync.
func (a *Actor) Resume(ctx context.Context, ns, name string) (Done, error) {
	var stamp string
	d, err := a.patch(ctx, ns, name, "resume", "", func(app *v1alpha1.Application) error {
		app.Spec.Suspend = false
		stamp = a.requestSync(app)
		return nil
	})
	d.Request = stamp
	return d, err
}

// ErrNotPinned is Unpin's answer for an Application that is not pinned.
var ErrNotPinned = fmt.Errorf("not pinned")

// Unpin removes ns/name's pin, so it follows its branch again, and asks for
// a sync.
func (a *Actor) Unpin(ctx context.Context, ns, name string) (Done, error) {
	var stamp, old string
	d, err := a.patchDetail(ctx, ns, name, "unpin", func(app *v1alpha1.Application) (string, error) {
		if app.Spec.Pin == nil {
			return "", fmt.Errorf("Application %s/%s is %w", ns, name, ErrNotPinned)
		}
		old = app.Spec.Pin.Revision
		app.Spec.Pin = nil
		stamp = a.requestSync(app)
		return "was pinned to " + source.ShortRevision(old), nil
	})
	d.Request = stamp
	return d, err
}

// RollbackMode is how a rollback holds: a commit restoring the target in
// Git, or a pin of the Application to it.
type RollbackMode int

const (
	// RollbackGit commits the target's content to the branch.
	RollbackGit RollbackMode = iota
	// RollbackPin pins the Application to the target until unpinned.
	RollbackPin
)

// Rollback asks the agent to roll ns/name back to target (a history entry
// id, a revision in the history, a full commit SHA, or "" for the newest
// successful sync of another revision), as mode says.
func (a *Actor) Rollback(ctx context.Context, ns, name, target string, mode RollbackMode) (Done, error) {
	var req v1alpha1.RollbackRequest
	pin := mode == RollbackPin
	action, how := "rollback", "git-native"
	if pin {
		action, how = "pin", "pin"
	}
	d, err := a.patchDetail(ctx, ns, name, action, func(app *v1alpha1.Application) (string, error) {
		if app.Spec.Suspend {
			return "", fmt.Errorf("Application %s/%s is suspended: resume it first, or the rollback would wait for it", ns, name)
		}
		revision, err := ResolveTarget(ctx, a.client, app, target)
		if err != nil {
			return "", err
		}
		req = v1alpha1.RollbackRequest{ID: time.Now().UTC().Format(time.RFC3339Nano), Target: revision, By: a.User, Pin: pin}
		raw, err := json.Marshal(req)
		if err != nil {
			return "", err
		}
		if app.Annotations == nil {
			app.Annotations = map[string]string{}
		}
		app.Annotations[v1alpha1.AnnotationRollback] = string(raw)
		return fmt.Sprintf("to %s (%s)", source.ShortRevision(revision), how), nil
	})
	if err == nil {
		d.Rollback = &req
	}
	return d, err
}

// Delete sets ns/name's deletion policy and deletes it.
func (a *Actor) Delete(ctx context.Context, ns, name string, policy v1alpha1.DeletionPolicy) (Done, error) {
	d, err := a.patch(ctx, ns, name, "delete", "deletion policy "+string(policy), func(app *v1alpha1.Application) error {
		app.Spec.DeletionPolicy = policy
		return nil
	})
	if err != nil {
		return d, err
	}
	return d, a.client.Delete(ctx, d.App)
}

// Create creates app, its first sync requested by the actor, and records
// the creation with what (a summary of the source).
func (a *Actor) Create(ctx context.Context, app *v1alpha1.Application, what string) (Done, error) {
	stamp := a.requestSync(app)
	if err := a.client.Create(ctx, app); err != nil {
		return Done{}, err
	}
	d := Done{App: app, Request: stamp}
	if err := a.Record(ctx, app, "create", what); err != nil {
		d.Warning = err.Error()
	}
	return d, nil
}

var fullSHA = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// ResolveTarget turns a history entry id, a revision (or a prefix of one
// in the history), a full commit SHA, or "" (the newest successful sync
// of a revision other than the current one) into a full commit SHA.
func ResolveTarget(ctx context.Context, c client.Reader, app *v1alpha1.Application, target string) (string, error) {
	h, err := engine.LoadHistory(ctx, c, engine.App{Name: app.Name, Namespace: app.Namespace})
	if err != nil {
		return "", err
	}
	if target != "" {
		if e, ok := h.Find(target); ok && e.Revision != "" {
			return e.Revision, nil
		}
		if fullSHA.MatchString(target) {
			return target, nil
		}
		return "", fmt.Errorf("%q is neither a history entry id nor a revision in the history of %s/%s; give a full commit SHA", target, app.Namespace, app.Name)
	}
	current := app.Status.Sync.Revision
	for _, e := range h.Entries {
		if e.Result == engine.ResultSucceeded && e.Revision != "" && e.Revision != current {
			return e.Revision, nil
		}
	}
	return "", fmt.Errorf("the history of %s/%s has no successful sync of a revision other than the current one; name a revision", app.Namespace, app.Name)
}

func (a *Actor) component() string {
	if a.Component == "" {
		return "cli"
	}
	return a.Component
}

// patch reads ns/name, lets mutate change it, patches the difference and
// records action with detail.
func (a *Actor) patch(ctx context.Context, ns, name, action, detail string, mutate func(*v1alpha1.Application) error) (Done, error) {
	return a.patchDetail(ctx, ns, name, action, func(app *v1alpha1.Application) (string, error) {
		return detail, mutate(app)
	})
}

// patchDetail is patch whose mutation also says the action's detail.
func (a *Actor) patchDetail(ctx context.Context, ns, name, action string, mutate func(*v1alpha1.Application) (string, error)) (Done, error) {
	app := &v1alpha1.Application{}
	if err := a.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
		return Done{}, err
	}
	patch := client.MergeFrom(app.DeepCopy())
	detail, err := mutate(app)
	if err != nil {
		return Done{}, err
	}
	if err := a.client.Patch(ctx, app, patch); err != nil {
		return Done{}, err
	}
	d := Done{App: app}
	if err := a.Record(ctx, app, action, detail); err != nil {
		d.Warning = err.Error()
	}
	return d, nil
}

// requestSync stamps app with a sync request on the actor's behalf.
func (a *Actor) requestSync(app *v1alpha1.Application) string {
	if app.Annotations == nil {
		app.Annotations = map[string]string{}
	}
	stamp := time.Now().UTC().Format(time.RFC3339Nano)
	app.Annotations[v1alpha1.AnnotationRequestedAt] = stamp
	app.Annotations[v1alpha1.AnnotationRequestedBy] = a.User
	return stamp
}

// Record writes action in app's history record and as an Event on app. It
// returns what failed; the action itself is done either way.
func (a *Actor) Record(ctx context.Context, app *v1alpha1.Application, action, detail string) error {
	user := a.User
	if user == "" {
		user = "unknown"
	}
	limit := app.Spec.GetHistoryLimit()
	records := a.client
	if a.Records != nil {
		records = a.Records
	}
	var errs []error
	err := engine.RecordAction(ctx, records, engine.App{Name: app.Name, Namespace: app.Namespace},
		engine.ActionEntry{Time: time.Now().UTC(), User: user, Action: action, Detail: detail}, limit)
	if err != nil {
		errs = append(errs, fmt.Errorf("recording the %s action: %w", action, err))
	}
	msg := fmt.Sprintf("%s by %s", action, user)
	if detail != "" {
		msg += ": " + detail
	}
	ref := corev1.ObjectReference{
		APIVersion: v1alpha1.GroupVersion.String(), Kind: "Application",
		Namespace: app.Namespace, Name: app.Name, UID: app.UID, ResourceVersion: app.ResourceVersion,
	}
	if err := Event(ctx, records, a.component(), ref, corev1.EventTypeNormal, v1alpha1.ReasonAction, msg); err != nil {
		errs = append(errs, fmt.Errorf("emitting the %s event: %w", action, err))
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	default:
		return fmt.Errorf("%v; %v", errs[0], errs[1])
	}
}

// Event records a Kubernetes Event about ref through c, from component
// ("cli" or "ui").
func Event(ctx context.Context, c client.Client, component string, ref corev1.ObjectReference, typ, reason, msg string) error {
	host, _ := os.Hostname()
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: ref.Name + ".", Namespace: ref.Namespace},
		InvolvedObject: ref,
		Reason:         reason, Message: msg, Type: typ,
		Source:         corev1.EventSource{Component: "converge-" + component, Host: host},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "converge.dev/" + component, ReportingInstance: host,
	}
	return c.Create(ctx, ev)
}

// As returns an Actor acting through c as user, whom the caller has
// already learned (a web UI session asked at sign-in).
func As(c client.Client, user, component string) *Actor {
	return &Actor{client: c, User: user, Component: component}
}
