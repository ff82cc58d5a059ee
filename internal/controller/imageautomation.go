package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/egress"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/images"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tenancy"
)

// Image update automation: an ImageUpdateAutomation's reconcile reads its
// branch through the shared source cache (as its Tenant allows, as its
// account), sets every marked field to what its policies chose, and, when
// that changed a file, makes one commit through the same Git code as a
// rollback, then asks the Applications that deploy the branch to sync it
// at once, recording the automation as the trigger. A run that changes
// nothing pushes nothing and writes nothing.

// ImageAutomationReconciler runs ImageUpdateAutomations.
type ImageAutomationReconciler struct {
	Client   client.Client
	Apps     *ApplicationReconciler
	Egress   *egress.Policy
	Recorder record.EventRecorder
}

// SetupWithManager registers the reconciler: automations, and their
// namespace's policies when a policy's choice changes.
func (r *ImageAutomationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.ImageUpdateAutomation{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.ImagePolicy{}, handler.EnqueueRequestsFromMapFunc(r.namespaceAutomations), builder.WithPredicates(latestChanged())).
		Named("imageupdateautomation").
		Complete(r)
}

// latestChanged passes a policy whose chosen tag changed.
func latestChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.(*v1alpha1.ImagePolicy), e.ObjectNew.(*v1alpha1.ImagePolicy)
			return !equality.Semantic.DeepEqual(o.Status.LatestRef, n.Status.LatestRef)
		},
	}
}

func (r *ImageAutomationReconciler) namespaceAutomations(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1alpha1.ImageUpdateAutomationList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, a := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&a)})
	}
	return out
}

// Reconcile runs the automation once.
func (r *ImageAutomationReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	auto := &v1alpha1.ImageUpdateAutomation{}
	if err := r.Client.Get(ctx, req.NamespacedName, auto); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if auto.Spec.Suspend {
		return reconcile.Result{}, nil
	}
	interval := imageInterval(auto.Spec.Interval)
	next := auto.Status.DeepCopy()
	next.ObservedGeneration = auto.Generation
	ready, err := r.run(ctx, auto, next)
	if err != nil {
		ready = metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonUpdateFailed, Message: failureMessage(err)}
		if tenancy.Refused(err) {
			ready.Reason = v1alpha1.ReasonPolicyViolation
		}
		if r.Recorder != nil {
			r.Recorder.Event(auto, corev1.EventTypeWarning, ReasonUpdateFailed, ready.Message)
		}
	}
	apimeta.SetStatusCondition(&next.Conditions, ready)
	if !equality.Semantic.DeepEqual(&auto.Status, next) {
		patch := client.MergeFrom(auto.DeepCopy())
		auto.Status = *next
		if err := r.Client.Status().Patch(ctx, auto, patch); err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{RequeueAfter: interval}, nil
}

// run updates the branch if the policies ask for it, filling status.
func (r *ImageAutomationReconciler) run(ctx context.Context, auto *v1alpha1.ImageUpdateAutomation, status *v1alpha1.ImageUpdateAutomationStatus) (_ metav1.Condition, err error) {
	var tenants v1alpha1.TenantList
	if err := r.Client.List(ctx, &tenants); err != nil {
		return metav1.Condition{}, fmt.Errorf("listing Tenants: %w", err)
	}
	ten, err := tenancy.ResolveRepo(auto.Namespace, "spec.repoURL", auto.Spec.RepoURL, tenants.Items, r.Apps.Tenancy)
	if err != nil {
		return metav1.Condition{}, &tenancy.PolicyError{Err: err}
	}
	eng, err := r.Apps.engineFor(auto.Namespace, ten.ServiceAccount)
	if err != nil {
		return metav1.Condition{}, err
	}
	secrets := r.Apps.secretsReader(auto.Namespace, eng, ten.ServiceAccount)
	defer func() {
		// A failure is told once, not at every interval it persists.
		prev := apimeta.FindStatusCondition(auto.Status.Conditions, v1alpha1.ConditionReady)
		if msg := failureMessage(err); err != nil && (prev == nil || prev.Reason != ReasonUpdateFailed || prev.Message != msg) {
			r.notify(ctx, auto, ten, secrets, v1alpha1.NotifyImageUpdateFailed, "", msg)
		}
	}()
	latest, policies, err := r.policies(ctx, auto)
	if err != nil {
		return metav1.Condition{}, err
	}
	branch := auto.Spec.Branch
	if branch == "" {
		branch = "main"
	}
	src := &v1alpha1.ApplicationSource{RepoURL: auto.Spec.RepoURL, Ref: &v1alpha1.GitRef{Branch: branch}, SecretRef: auto.Spec.SecretRef, Insecure: auto.Spec.Insecure}
	sr, err := appspec.SourceRequest(ctx, secrets, auto.Namespace, src)
	if err != nil {
		return metav1.Condition{}, fmt.Errorf("spec.secretRef: %w", err)
	}
	sr.MaxAge = imageInterval(auto.Spec.Interval) / 2
	var pushed *source.Restored
	var pushErr error
	var changes []images.Change
	var artifact *source.Artifact
	for attempt := 0; ; attempt++ {
		if artifact, err = r.Apps.Builder.Fetch(ctx, sr); err != nil {
			return metav1.Condition{}, err
		}
		files, err := images.ReadManifests(artifact.Dir, auto.Spec.Path)
		if err != nil {
			return metav1.Condition{}, err
		}
		var changed map[string][]byte
		if changed, changes, err = images.Update(files, latest); err != nil {
			return metav1.Condition{}, err
		}
		if len(changed) == 0 {
			return metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonUpToDate,
				Message: fmt.Sprintf("%s holds the latest tags of %d policies", branch, len(latest))}, nil
		}
		pushed, pushErr = r.push(ctx, auto, secrets, sr.Auth, branch, artifact.Revision, changed, changes, policies)
		if errors.Is(pushErr, source.ErrBranchMoved) && attempt < 2 {
			sr.MaxAge, sr.NotBefore = 0, time.Now()
			continue
		}
		if pushErr != nil && !errors.Is(pushErr, source.ErrUnchanged) {
			return metav1.Condition{}, pushErr
		}
		break
	}
	fresh := !errors.Is(pushErr, source.ErrUnchanged)
	now := metav1.Now()
	if fresh {
		status.LastPushCommit, status.LastPushTime = pushed.Commit, &now
	}
	target := branch
	if p := auto.Spec.Push; p != nil && p.Branch != branch {
		target = p.Branch
		if p.PullRequest != nil {
			if status.PullRequest, err = r.pullRequest(ctx, auto, ten, secrets, branch, changes, policies); err != nil {
				return metav1.Condition{}, err
			}
		}
	}
	if !fresh {
		return metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonPushed,
			Message: fmt.Sprintf("%s holds the latest tags, one commit on %s", target, branch)}, nil
	}
	detail := describe(auto, changes, policies)
	if r.Recorder != nil {
		r.Recorder.Eventf(auto, corev1.EventTypeNormal, ReasonPushed, "pushed %s to %s: %s", source.ShortRevision(pushed.Commit), target, detail)
	}
	r.notify(ctx, auto, ten, secrets, v1alpha1.NotifyImageUpdated, pushed.Commit, fmt.Sprintf("pushed to %s: %s", target, detail))
	if target == branch {
		r.markApplied(ctx, changes, policies, pushed.Commit, now)
		r.requestSyncs(ctx, auto.Spec.RepoURL, branch, engine.Trigger{Type: engine.TriggerImageAutomation, Detail: detail})
	}
	return metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonPushed,
		Message: fmt.Sprintf("pushed %s to %s", source.ShortRevision(pushed.Commit), target)}, nil
}

// policies are the namespace's policies the automation selects, with a
// chosen tag, keyed "namespace:name" as markers name them.
func (r *ImageAutomationReconciler) policies(ctx context.Context, auto *v1alpha1.ImageUpdateAutomation) (map[string]images.Latest, map[string]*v1alpha1.ImagePolicy, error) {
	sel := labels.Everything()
	if s := auto.Spec.PolicySelector; s != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(s); err != nil {
			return nil, nil, fmt.Errorf("spec.policySelector: %w", err)
		}
	}
	var list v1alpha1.ImagePolicyList
	if err := r.Client.List(ctx, &list, client.InNamespace(auto.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, nil, err
	}
	latest := map[string]images.Latest{}
	byKey := map[string]*v1alpha1.ImagePolicy{}
	for i := range list.Items {
		p := &list.Items[i]
		if l := p.Status.LatestRef; l != nil {
			key := p.Namespace + ":" + p.Name
			latest[key] = images.Latest{Name: l.Name, Tag: l.Tag, Digest: l.Digest}
			byKey[key] = p
		}
	}
	return latest, byKey, nil
}

// push commits changed on base and pushes it, signed when the automation
// has a signing key.
func (r *ImageAutomationReconciler) push(ctx context.Context, auto *v1alpha1.ImageUpdateAutomation, secrets client.Reader, auth *source.Auth, branch, base string,
	changed map[string][]byte, changes []images.Change, policies map[string]*v1alpha1.ImagePolicy) (*source.Restored, error) {
	msg, err := images.Message(auto.Spec.Commit.MessageTemplate, messageData(auto, changes, policies))
	if err != nil {
		return nil, err
	}
	author, email := auto.Spec.Commit.AuthorName, auto.Spec.Commit.AuthorEmail
	if author == "" {
		author = "converge"
	}
	if email == "" {
		email = "converge@localhost"
	}
	req := source.EditRequest{URL: auto.Spec.RepoURL, Auth: auth, Insecure: auto.Spec.Insecure, Branch: branch, Base: base, Files: changed,
		Message: msg, Author: author, AuthorEmail: email}
	if p := auto.Spec.Push; p != nil {
		req.Push = p.Branch
	}
	if k := auto.Spec.Commit.SigningKey; k != nil {
		var s corev1.Secret
		if err := secrets.Get(ctx, client.ObjectKey{Namespace: auto.Namespace, Name: k.Name}, &s); err != nil {
			return nil, fmt.Errorf("spec.commit.signingKey: reading Secret %s: %w", k.Name, err)
		}
		if len(s.Data["identity"]) == 0 {
			return nil, fmt.Errorf("spec.commit.signingKey: Secret %s has no identity (an SSH private key)", k.Name)
		}
		dir, err := os.MkdirTemp("", "converge-sign-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		key := filepath.Join(dir, "key")
		if err := os.WriteFile(key, s.Data["identity"], 0o600); err != nil {
			return nil, err
		}
		req.Sign = &source.Signing{Format: "ssh", Key: key}
	}
	return r.Apps.Builder.Sources.Edit(ctx, req)
}

func messageData(auto *v1alpha1.ImageUpdateAutomation, changes []images.Change, policies map[string]*v1alpha1.ImagePolicy) images.MessageData {
	byPolicy := map[string]*images.PolicyUpdate{}
	var order []string
	for _, c := range changes {
		u, ok := byPolicy[c.Policy]
		if !ok {
			// The tags as the files had them and have them now.
			u = &images.PolicyUpdate{Policy: c.Policy, OldTag: images.TagOf(c.Old), NewTag: images.TagOf(c.New)}
			if p := policies[c.Policy]; p != nil && p.Status.LatestRef != nil {
				u.Image, u.NewTag = p.Status.LatestRef.Name, p.Status.LatestRef.Tag
			}
			byPolicy[c.Policy] = u
			order = append(order, c.Policy)
		}
		if !slices.Contains(u.Files, c.File) {
			u.Files = append(u.Files, c.File)
		}
	}
	sort.Strings(order)
	data := images.MessageData{AutomationName: auto.Namespace + "/" + auto.Name}
	for _, p := range order {
		data.Updates = append(data.Updates, *byPolicy[p])
	}
	return data
}

// describe is the trigger's detail: the automation and each policy's old
// and new tags.
func describe(auto *v1alpha1.ImageUpdateAutomation, changes []images.Change, policies map[string]*v1alpha1.ImagePolicy) string {
	data := messageData(auto, changes, policies)
	parts := make([]string, 0, len(data.Updates))
	for _, u := range data.Updates {
		parts = append(parts, fmt.Sprintf("%s %s → %s", u.Policy, u.OldTag, u.NewTag))
	}
	return truncate(data.AutomationName+": "+strings.Join(parts, ", "), 512)
}

// markApplied records, in each changed policy's status, the commit that
// applied its tag.
func (r *ImageAutomationReconciler) markApplied(ctx context.Context, changes []images.Change, policies map[string]*v1alpha1.ImagePolicy, commit string, at metav1.Time) {
	done := map[string]bool{}
	for _, c := range changes {
		p := policies[c.Policy]
		if p == nil || done[c.Policy] {
			continue
		}
		done[c.Policy] = true
		patch := client.MergeFrom(p.DeepCopy())
		p.Status.AppliedAt, p.Status.AppliedCommit = &at, commit
		if err := r.Client.Status().Patch(ctx, p, patch); err != nil && !apierrors.IsNotFound(err) {
			ctrl.LoggerFrom(ctx).Error(err, "recording an applied tag", "policy", c.Policy)
		}
	}
}

// requestSyncs asks the Applications that deploy branch of repoURL to
// sync at once: in memory on this replica, else by the sync request
// annotation (recorded as a webhook's).
func (r *ImageAutomationReconciler) requestSyncs(ctx context.Context, repoURL, branch string, trigger engine.Trigger) {
	var apps v1alpha1.ApplicationList
	if err := r.Client.List(ctx, &apps); err != nil {
		return
	}
	urls := []string{source.NormalizeURL(repoURL)}
	now := time.Now()
	for i := range apps.Items {
		a := &apps.Items[i]
		if !appspec.Follows(&a.Spec.Source, urls, "refs/heads/"+branch) {
			continue
		}
		if r.Apps.RequestSync(client.ObjectKeyFromObject(a), now, trigger) {
			continue
		}
		patch := client.MergeFrom(a.DeepCopy())
		if a.Annotations == nil {
			a.Annotations = map[string]string{}
		}
		a.Annotations[v1alpha1.AnnotationRequestedAt] = now.UTC().Format(time.RFC3339Nano)
		a.Annotations[v1alpha1.AnnotationRequestedBy] = v1alpha1.RequestedByWebhook
		if err := r.Client.Patch(ctx, a, patch); err != nil && !apierrors.IsNotFound(err) {
			ctrl.LoggerFrom(ctx).Error(err, "requesting a sync of an image update", "app", a.Namespace+"/"+a.Name)
		}
	}
}

// pullRequest keeps the automation's pull request open: its forge API is
// reached only where the Tenant's notifyHosts allow, through the egress
// policy, with the token its Secret holds.
func (r *ImageAutomationReconciler) pullRequest(ctx context.Context, auto *v1alpha1.ImageUpdateAutomation, ten tenancy.Tenancy, secrets client.Reader, base string, changes []images.Change, policies map[string]*v1alpha1.ImagePolicy) (string, error) {
	pr := auto.Spec.Push.PullRequest
	api := pr.URL
	if api == "" && pr.Provider == "github" {
		api = "https://api.github.com"
	}
	if err := ten.AllowNotify(api); err != nil {
		return "", fmt.Errorf("spec.push.pullRequest.url: %w", err)
	}
	var s corev1.Secret
	if err := secrets.Get(ctx, client.ObjectKey{Namespace: auto.Namespace, Name: pr.SecretRef.Name}, &s); err != nil {
		return "", fmt.Errorf("spec.push.pullRequest.secretRef: reading Secret %s: %w", pr.SecretRef.Name, err)
	}
	policy := r.Egress
	if policy == nil {
		policy = egress.Open()
	}
	data := messageData(auto, changes, policies)
	title := "Update images"
	for _, u := range data.Updates {
		title += " " + u.Policy + " " + u.NewTag
	}
	hc := &http.Client{Transport: policy.Transport(), Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	url, opened, err := images.EnsurePullRequest(ctx, hc, images.PullRequest{Provider: pr.Provider, API: api, Repository: pr.Repository, Token: string(s.Data["token"]),
		Head: auto.Spec.Push.Branch, Base: base, Title: truncate(title, 256), Body: "Opened by ImageUpdateAutomation " + data.AutomationName + "; updated at every new tag."})
	if err != nil {
		return "", err
	}
	if opened && r.Recorder != nil {
		r.Recorder.Eventf(auto, corev1.EventTypeNormal, "PullRequestOpened", "opened %s", url)
	}
	return url, nil
}

// failureMessage is how a failed run is reported: redacted and bounded.
func failureMessage(err error) string {
	if err == nil {
		return ""
	}
	return truncate(redact.Message(err.Error()), maxHealthMessage)
}

// notify sends the automation's event to the Alerts of its namespace that
// list it, as an app's events are sent: its Notifiers' Secrets read as the
// Tenant's account, their URLs checked against its notifyHosts. An Alert's
// names and label selector choose automations by theirs.
func (r *ImageAutomationReconciler) notify(ctx context.Context, auto *v1alpha1.ImageUpdateAutomation, ten tenancy.Tenancy, secrets client.Reader, ev v1alpha1.NotifyEvent, revision, msg string) {
	if r.Apps.Notifier == nil {
		return
	}
	as := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Namespace: auto.Namespace, Name: auto.Name, Labels: auto.Labels},
		Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: auto.Spec.RepoURL}}}
	(&notifier{ctx: ctx, n: r.Apps.Notifier, app: as, secrets: secrets, allow: ten.AllowNotify, alerts: r.Client}).send(ev, revision, msg)
}
