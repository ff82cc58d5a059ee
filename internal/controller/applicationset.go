package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
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
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/generate"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/tenancy"
)

// ApplicationSetReconciler makes, updates and deletes the Applications
// ApplicationSets generate. It reads Git through the Applications' source
// cache (a recent answer is reused: one fetch per repository per
// interval) and a Tenant's rules bound a set as they bound its apps: its
// repositories must be allowed, and its credentials are read as the
// Tenant's ServiceAccount.
type ApplicationSetReconciler struct {
	Client client.Client
	// Apps lends its sources, tenancy and Secret readers.
	Apps     *ApplicationReconciler
	Recorder record.EventRecorder

	mu sync.Mutex
	// handled is, per set, the last webhook request answered with a
	// fresh fetch.
	handled map[types.NamespacedName]string
}

// requestChanged passes a change of converge.dev/requested-at (a webhook
// delivery for a repository a Git generator reads).
func requestChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetAnnotations()[v1alpha1.AnnotationRequestedAt] != e.ObjectNew.GetAnnotations()[v1alpha1.AnnotationRequestedAt]
	}}
}

// fresh reports whether set carries a request not answered yet, and
// counts it answered.
func (r *ApplicationSetReconciler) fresh(set *v1alpha1.ApplicationSet) bool {
	at := set.Annotations[v1alpha1.AnnotationRequestedAt]
	if at == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	key := client.ObjectKeyFromObject(set)
	if r.handled[key] == at {
		return false
	}
	if r.handled == nil {
		r.handled = map[types.NamespacedName]string{}
	}
	r.handled[key] = at
	return true
}

// fieldManagerSet writes generated Applications.
const fieldManagerSet = "converge.dev/application-set"

// annotationGenerated holds the hash of what the set last wrote to an
// Application: an unchanged template and parameters cost no request.
const annotationGenerated = "converge.dev/generated"

// annotationRolloutStep is the rollout step a generated app is in.
const annotationRolloutStep = "converge.dev/rollout-step"

// SetupWithManager registers the reconciler: sets, the Applications they
// own (as their readiness changes: rollouts move on) and Clusters.
func (r *ApplicationSetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.ApplicationSet{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, requestChanged()))).
		Owns(&v1alpha1.Application{}, builder.WithPredicates(readinessChanged())).
		Watches(&v1alpha1.Cluster{}, handler.EnqueueRequestsFromMapFunc(r.setsWithClusterGenerators)).
		Named("applicationset").
		Complete(r)
}

// readinessChanged passes an Application's creation, deletion and changes
// of its spec, sync, health, revision or Ready condition.
func readinessChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*v1alpha1.Application), e.ObjectNew.(*v1alpha1.Application)
		return o.Generation != n.Generation || o.Status.Sync.Status != n.Status.Sync.Status ||
			o.Status.Health.Status != n.Status.Health.Status || o.Status.Sync.Revision != n.Status.Sync.Revision ||
			notReady(o) != notReady(n) || !n.DeletionTimestamp.IsZero()
	}}
}

func (r *ApplicationSetReconciler) setsWithClusterGenerators(ctx context.Context, _ client.Object) []reconcile.Request {
	var sets v1alpha1.ApplicationSetList
	if err := r.Client.List(ctx, &sets); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, s := range sets.Items {
		for _, n := range generate.Leaves(s.Spec.Generators) {
			if n.Clusters != nil {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&s)})
				break
			}
		}
	}
	return reqs
}

// Reconcile generates the set's Applications and brings the owned ones in
// line, as far as its policy allows, then reports.
func (r *ApplicationSetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	set := &v1alpha1.ApplicationSet{}
	if err := r.Client.Get(ctx, req.NamespacedName, set); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !set.DeletionTimestamp.IsZero() {
		// Its Applications go with it (owner references); each prunes
		// its objects on the way.
		return ctrl.Result{}, nil
	}
	interval := set.Spec.GetInterval()
	before := set.Status.DeepCopy()
	defer func() {
		set.Status.ObservedGeneration = set.Generation
		if equality.Semantic.DeepEqual(before, &set.Status) {
			return
		}
		requeue, err := writeStatus(ctx, r.Client, set, nil)
		if requeue {
			result = ctrl.Result{Requeue: true}
		}
		retErr = errors.Join(retErr, err)
	}()

	var owned v1alpha1.ApplicationList
	if err := r.Client.List(ctx, &owned, client.InNamespace(set.Namespace), client.MatchingLabels{v1alpha1.LabelApplicationSet: set.Name}); err != nil {
		return ctrl.Result{}, err
	}
	ownedByName := map[string]*v1alpha1.Application{}
	for i := range owned.Items {
		if metav1.IsControlledBy(&owned.Items[i], set) {
			ownedByName[owned.Items[i].Name] = &owned.Items[i]
		}
	}

	maxAge := interval
	if r.fresh(set) {
		maxAge = 0 // a push: ask the server now
	}
	desired, err := r.generate(ctx, set, maxAge)
	if err != nil {
		var reason = v1alpha1.ReasonGeneratorFailed
		var terr *templateError
		var lerr *generate.LimitError
		switch {
		case errors.As(err, &lerr):
			reason = v1alpha1.ReasonLimitExceeded
		case errors.As(err, &terr):
			reason = v1alpha1.ReasonTemplateFailed
		}
		r.setReady(set, metav1.ConditionFalse, reason, redact.Error(err)+fmt.Sprintf("; the %d Applications it owns are kept as they are", len(ownedByName)))
		r.report(set, ownedByName)
		return ctrl.Result{RequeueAfter: min(interval, time.Minute)}, nil
	}
	if len(desired) == 0 && len(ownedByName) > 0 {
		// A Git outage or an emptied path must not delete everything.
		r.setReady(set, metav1.ConditionFalse, v1alpha1.ReasonEmptyGenerator,
			fmt.Sprintf("the generators produced no Applications; the %d it owns are kept (a set that generates nothing never deletes)", len(ownedByName)))
		r.report(set, ownedByName)
		return ctrl.Result{RequeueAfter: interval}, nil
	}

	current, conflicts, deleted, err := r.bringInLine(ctx, set, desired, ownedByName)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.report(set, current)
	if len(conflicts) > 0 {
		sort.Strings(conflicts)
		r.setReady(set, metav1.ConditionFalse, v1alpha1.ReasonApplicationConflict, strings.Join(conflicts, "; "))
		return ctrl.Result{RequeueAfter: interval}, nil
	}
	msg := fmt.Sprintf("%d Applications generated", len(desired))
	if deleted > 0 {
		msg += fmt.Sprintf(", %d deleted", deleted)
	}
	r.setReady(set, metav1.ConditionTrue, v1alpha1.ReasonGenerated, msg)
	return ctrl.Result{RequeueAfter: interval}, nil
}

// bringInLine writes the desired Applications and, as the set's policy
// allows, deletes the owned ones no longer generated. It returns the
// Applications the set now has, the conflicts with Applications it does
// not own, and how many it deleted.
func (r *ApplicationSetReconciler) bringInLine(ctx context.Context, set *v1alpha1.ApplicationSet, desired []*v1alpha1.Application,
	ownedByName map[string]*v1alpha1.Application) (map[string]*v1alpha1.Application, []string, int, error) {
	var conflicts []string
	current := map[string]*v1alpha1.Application{}
	for _, app := range desired {
		live, err := r.apply(ctx, set, app, ownedByName[app.Name])
		if err != nil {
			var cerr *conflictError
			if errors.As(err, &cerr) {
				conflicts = append(conflicts, cerr.Error())
				continue
			}
			return nil, nil, 0, err
		}
		current[app.Name] = live
	}
	deleted := 0
	for name, app := range ownedByName {
		if _, ok := current[name]; ok {
			continue
		}
		if set.Spec.Policy != "" && set.Spec.Policy != "sync" {
			current[name] = app // kept: the policy deletes nothing
			continue
		}
		if err := r.Client.Delete(ctx, app, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return nil, nil, 0, err
		}
		r.Recorder.Eventf(set, corev1.EventTypeNormal, "Deleted", "Application %s is no longer generated", name)
		deleted++
	}
	return current, conflicts, deleted, nil
}

type templateError struct{ err error }

func (e *templateError) Error() string { return e.err.Error() }
func (e *templateError) Unwrap() error { return e.err }

type conflictError struct{ name, owner string }

func (e *conflictError) Error() string {
	if e.owner == "" {
		return fmt.Sprintf("Application %s exists and is not this set's: left alone", e.name)
	}
	return fmt.Sprintf("Application %s belongs to ApplicationSet %s: left alone", e.name, e.owner)
}

// generate fetches what the generators read, runs them, fills the
// template once per parameter set and wires the rollout's steps.
func (r *ApplicationSetReconciler) generate(ctx context.Context, set *v1alpha1.ApplicationSet, interval time.Duration) ([]*v1alpha1.Application, error) {
	src := generate.Sources{Checkouts: map[string]string{}}
	var gits []*v1alpha1.GitGenerator
	needClusters := false
	for _, n := range generate.Leaves(set.Spec.Generators) {
		if n.Git != nil {
			gits = append(gits, n.Git)
		}
		needClusters = needClusters || n.Clusters != nil
	}
	for _, g := range gits {
		key := generate.GitKey(g)
		if _, ok := src.Checkouts[key]; ok {
			continue
		}
		dir, err := r.checkout(ctx, set, g, interval)
		if err != nil {
			return nil, err
		}
		src.Checkouts[key] = dir
	}
	if needClusters {
		clusters, err := r.clusters(ctx, set.Namespace)
		if err != nil {
			return nil, err
		}
		src.Clusters = clusters
	}
	budget := &generate.Budget{}
	sets, err := generate.Run(set.Spec.Generators, src, budget)
	if err != nil {
		return nil, err
	}
	apps := make([]*v1alpha1.Application, 0, len(sets))
	byName := map[string]generate.Params{}
	for _, p := range sets {
		app, err := generate.Fill(set.Spec.Template, p, set.Namespace, budget)
		if err != nil {
			return nil, &templateError{err}
		}
		if prev, ok := byName[app.Name]; ok {
			return nil, &templateError{fmt.Errorf("template: two parameter sets make Application %s (%v and %v); its name must tell them apart", app.Name, prev, p)}
		}
		byName[app.Name] = p
		apps = append(apps, app)
	}
	if err := rolloutSteps(set.Spec.Strategy, apps); err != nil {
		return nil, &templateError{err}
	}
	return apps, nil
}

// clusters are the Clusters a set in namespace may generate for: those its
// Tenant allows (every one when no Tenant governs the namespace).
func (r *ApplicationSetReconciler) clusters(ctx context.Context, namespace string) ([]v1alpha1.Cluster, error) {
	ten, err := r.Apps.governorOf(ctx, namespace)
	if err != nil {
		return nil, err
	}
	var list v1alpha1.ClusterList
	if err := r.Client.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing Clusters: %w", err)
	}
	if ten == nil {
		return list.Items, nil
	}
	allowed := list.Items[:0]
	for _, c := range list.Items {
		if engine.MatchName(ten.Spec.Clusters, c.Name) {
			allowed = append(allowed, c)
		}
	}
	return allowed, nil
}

// checkout fetches a Git generator's repository as the set's Tenant
// allows, through the shared source cache.
func (r *ApplicationSetReconciler) checkout(ctx context.Context, set *v1alpha1.ApplicationSet, g *v1alpha1.GitGenerator, interval time.Duration) (string, error) {
	// The generator's repository is governed as an Application's would be.
	if g.Verify == nil && templateVerifies(set) {
		return "", fmt.Errorf("git %s: verify: the template's Applications require signed commits (spec.source.verify), so the Git generators that make them must verify too", redact.URL(g.RepoURL))
	}
	field := "git " + redact.URL(g.RepoURL)
	var tenants v1alpha1.TenantList
	if err := r.Client.List(ctx, &tenants); err != nil {
		return "", fmt.Errorf("listing Tenants: %w", err)
	}
	ten, err := tenancy.ResolveRepo(set.Namespace, "repoURL", g.RepoURL, tenants.Items, r.Apps.Tenancy)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	local, err := r.Apps.engineFor(set.Namespace, ten.ServiceAccount)
	if err != nil {
		return "", err
	}
	src := &v1alpha1.ApplicationSource{RepoURL: g.RepoURL, Ref: g.Ref, SecretRef: g.SecretRef, Verify: g.Verify}
	sr, err := appspec.SourceRequest(ctx, r.Apps.secretsReader(set.Namespace, local, ten.ServiceAccount), set.Namespace, src)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	sr.MaxAge = interval
	a, err := r.Apps.Builder.Fetch(ctx, sr)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return a.Dir, nil
}

// templateVerifies says whether set's template asks its Applications to
// verify their sources' signatures.
func templateVerifies(set *v1alpha1.ApplicationSet) bool {
	var spec struct {
		Source struct {
			Verify json.RawMessage `json:"verify"`
		} `json:"source"`
	}
	if json.Unmarshal(set.Spec.Template.Spec.Raw, &spec) != nil {
		return false
	}
	return len(spec.Source.Verify) > 0 && string(spec.Source.Verify) != "null"
}

// maxDependsOn is the most Applications one may depend on (the CRD's
// spec.dependsOn limit).
const maxDependsOn = 64

// rolloutSteps puts each app in the first step whose selector matches its
// labels (apps no step selects come last) and makes it depend, at the same
// revision, on every app of the nearest earlier step that has apps.
func rolloutSteps(strategy *v1alpha1.RolloutStrategy, apps []*v1alpha1.Application) error {
	if strategy == nil {
		return nil
	}
	sels := make([]labels.Selector, len(strategy.Steps))
	for i, s := range strategy.Steps {
		sel, err := metav1.LabelSelectorAsSelector(&s.Selector)
		if err != nil {
			return fmt.Errorf("strategy.steps[%d].selector: %w", i, err)
		}
		sels[i] = sel
	}
	steps := make([][]*v1alpha1.Application, len(sels)+1)
	for _, app := range apps {
		step := len(sels)
		for i, sel := range sels {
			if sel.Matches(labels.Set(app.Labels)) {
				step = i
				break
			}
		}
		steps[step] = append(steps[step], app)
		if app.Annotations == nil {
			app.Annotations = map[string]string{}
		}
		app.Annotations[annotationRolloutStep] = strconv.Itoa(step + 1)
	}
	var prev []*v1alpha1.Application
	prevStep := 0
	for i, step := range steps {
		if len(step) == 0 {
			continue
		}
		// Each app names every app of the step before: that step's size
		// bounds the fan-out (and is the Application's dependsOn limit).
		if len(prev) > maxDependsOn {
			return &generate.LimitError{Where: fmt.Sprintf("strategy.steps[%d]", prevStep), Bound: "Applications in a step that a later step waits for (dependsOn per Application)", Limit: maxDependsOn, Have: len(prev)}
		}
		prevStep = i
		for _, app := range step {
			for _, p := range prev {
				app.Spec.DependsOn = append(app.Spec.DependsOn, v1alpha1.ApplicationReference{Name: p.Name, SameRevision: true})
			}
		}
		prev = step
	}
	return nil
}

// apply makes app as generated: created when missing, updated (unless the
// policy is create-only) when the set's last write differs. An
// Application of the same name that is not this set's is never touched.
func (r *ApplicationSetReconciler) apply(ctx context.Context, set *v1alpha1.ApplicationSet, app *v1alpha1.Application, live *v1alpha1.Application) (*v1alpha1.Application, error) {
	if live == nil {
		existing := &v1alpha1.Application{}
		err := r.Client.Get(ctx, client.ObjectKeyFromObject(app), existing)
		if err == nil {
			return nil, &conflictError{name: app.Name, owner: existing.Labels[v1alpha1.LabelApplicationSet]}
		}
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
	}
	if app.Labels == nil {
		app.Labels = map[string]string{}
	}
	app.Labels[v1alpha1.LabelApplicationSet] = set.Name
	app.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(set, v1alpha1.GroupVersion.WithKind("ApplicationSet"))}
	sum, err := hashOf(app)
	if err != nil {
		return nil, err
	}
	if live != nil && (live.Annotations[annotationGenerated] == sum || set.Spec.Policy == "create-only") {
		return live, nil
	}
	if app.Annotations == nil {
		app.Annotations = map[string]string{}
	}
	app.Annotations[annotationGenerated] = sum
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(app)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: obj}
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fieldManagerSet), client.ForceOwnership); err != nil {
		return nil, fmt.Errorf("writing Application %s: %w", app.Name, err)
	}
	verb := "Updated"
	if live == nil {
		verb = "Created"
		live = app
	}
	r.Recorder.Eventf(set, corev1.EventTypeNormal, verb, "Application %s", app.Name)
	return live, nil
}

func hashOf(app *v1alpha1.Application) (string, error) {
	raw, err := json.Marshal(struct {
		Labels      map[string]string
		Annotations map[string]string
		Spec        v1alpha1.ApplicationSpec
	}{app.Labels, app.Annotations, app.Spec})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:12]), nil
}

// report writes the set's Applications and the rollout's progress.
func (r *ApplicationSetReconciler) report(set *v1alpha1.ApplicationSet, apps map[string]*v1alpha1.Application) {
	names := make([]string, 0, len(apps))
	for n := range apps {
		names = append(names, n)
	}
	sort.Strings(names)
	set.Status.Applications, set.Status.ApplicationCount = names, int32(len(names))
	set.Status.Steps = nil
	if set.Spec.Strategy == nil {
		apimeta.RemoveStatusCondition(&set.Status.Conditions, conditionRolledOut)
		return
	}
	steps := make([]v1alpha1.RolloutStepStatus, len(set.Spec.Strategy.Steps)+1)
	for i, s := range set.Spec.Strategy.Steps {
		steps[i].Selector = metav1.FormatLabelSelector(&s.Selector)
	}
	steps[len(steps)-1].Selector = "(no step's selector)"
	waiting := make([][]string, len(steps))
	for _, n := range names {
		app := apps[n]
		i, err := strconv.Atoi(app.Annotations[annotationRolloutStep])
		if err != nil || i < 1 || i > len(steps) {
			continue
		}
		st := &steps[i-1]
		st.Applications++
		if why := notReady(app); why == "" {
			st.Ready++
		} else {
			waiting[i-1] = append(waiting[i-1], n+" ("+why+")")
		}
	}
	for i := range steps {
		if w := waiting[i]; len(w) > 0 {
			if len(w) > 5 {
				w = append(w[:5], fmt.Sprintf("and %d more", len(waiting[i])-5))
			}
			steps[i].Waiting = strings.Join(w, ", ")
		}
	}
	if steps[len(steps)-1].Applications == 0 {
		steps = steps[:len(steps)-1]
	}
	set.Status.Steps = steps
	// The first step not done holds every later one.
	cond := metav1.Condition{Type: conditionRolledOut, Status: metav1.ConditionTrue, Reason: "Complete",
		Message: "every step's Applications are Synced and Healthy", ObservedGeneration: set.Generation}
	for i, st := range steps {
		if st.Waiting != "" {
			cond.Status, cond.Reason = metav1.ConditionFalse, "StepWaiting"
			cond.Message = fmt.Sprintf("step %d of %d (%s): waiting for %s", i+1, len(steps), st.Selector, st.Waiting)
			if i+1 < len(steps) {
				cond.Message += "; later steps wait for it"
			}
			break
		}
	}
	apimeta.SetStatusCondition(&set.Status.Conditions, cond)
}

// conditionRolledOut is True once every step of a set's rollout is
// Synced and Healthy; False names the first step not done and its apps.
const conditionRolledOut = "RolledOut"

func (r *ApplicationSetReconciler) setReady(set *v1alpha1.ApplicationSet, status metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&set.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: status,
		Reason: reason, Message: msg, ObservedGeneration: set.Generation})
}
