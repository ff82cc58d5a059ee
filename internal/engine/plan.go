package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/render"
)

// PlanOptions say what to plan.
type PlanOptions struct {
	App App
	// DefaultNamespace is given to namespaced objects that have none.
	DefaultNamespace string
	// Prune plans the deletion of owned objects that are no longer desired.
	Prune bool
	// AppDeleted says the app itself is being deleted: objects marked to
	// outlive it (Delete=false) are kept too, not only those marked to
	// outlive a prune.
	AppDeleted bool
	// IgnoreDifferences are the fields left to the live objects (see
	// IgnoreRule); each rule compiled.
	IgnoreDifferences []IgnoreRule
	// AllowEmpty accepts an empty desired set, which then prunes (or, with
	// Prune off, reports) everything the app owns.
	AllowEmpty bool
	// Revision is recorded with the inventory, when known.
	Revision string
	// Progress, if set, receives messages for people.
	Progress func(string)
	// Adopt says when an existing object that no app owns may be taken
	// over. An object owned by another app is never taken.
	Adopt AdoptPolicy
	// Policy, when set, admits or refuses each desired object before
	// anything is asked of the cluster (see Policy).
	Policy *Policy
	// CreateNamespace, when set, adds the namespace it names to the
	// desired set if it does not exist (or exists because this app created
	// it): the app then owns it, with these labels and annotations. A
	// namespace that exists and is not the app's is left alone.
	CreateNamespace *NamespaceSpec
	// Only, when set, makes the sync selective (Argo CD's): only the
	// objects it selects are applied or pruned, the rest are left as the
	// cluster has them ("not selected"), no hook runs, and the record
	// keeps the revision it had.
	Only []ResourceSelector
	// Records, if set, is where the app's inventory is kept: the
	// Application's own cluster when its objects go to another. Nil: the
	// cluster the Manager acts on.
	Records client.Client
	// NoDiffs leaves every Change's Diff empty, for callers that show
	// none (the agent): rendering one is a YAML encoding of the live and
	// the desired object, a tenth of the agent's CPU on a cold fleet.
	NoDiffs bool
}

// diff is the unified diff from live to want, unless o.NoDiffs.
func (o PlanOptions) diff(ref string, live, want *unstructured.Unstructured) (string, error) {
	if o.NoDiffs {
		return "", nil
	}
	return unifiedDiff(ref, live, want)
}

// NamespaceSpec is a namespace an app creates and owns.
type NamespaceSpec struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// AdoptPolicy says when a sync may take over an existing object that
// carries no app's ownership.
type AdoptPolicy string

const (
	// AdoptAlways takes such objects over: migrations from kubectl, Helm,
	// Argo CD or Flux just work. The default for a single team.
	AdoptAlways AdoptPolicy = ""
	// AdoptAnnotated takes over only objects whose manifest is annotated
	// converge.dev/adopt: "true". The default under a tenant policy.
	AdoptAnnotated AdoptPolicy = "Annotated"
	// AdoptNever refuses every existing object.
	AdoptNever AdoptPolicy = "Never"
)

// Plan is what a sync would do. Its ChangeSet is the diff; Manager.Apply
// carries it out.
type Plan struct {
	ChangeSet ChangeSet

	opts         PlanOptions
	objects      []*desired
	hooks        []*hook
	inventory    *Inventory
	hadInventory bool
	live         liveSet
	// deferred objects can be checked only after the first stage is
	// applied: custom resources of new CRDs, objects in new namespaces.
	deferred []*desired
	prune    []*unstructured.Unstructured
	// pruneChanges are the deletions (and skipped deletions) planned.
	pruneChanges []Change
	dryRuns      int
}

// PreviousRevision is the revision the app's record holds: the one its
// last sync applied ("" when unknown).
func (p *Plan) PreviousRevision() string { return p.inventory.Revision }

// Hooks is how many hooks the desired set holds. They are not planned:
// they run during a sync (see RunOptions.Hooks).
func (p *Plan) Hooks() int { return len(p.hooks) }

// removesItself reports whether u is a Job that the TTL controller deletes
// once it has finished.
func removesItself(u *unstructured.Unstructured) bool {
	if u.GetKind() != "Job" || u.GroupVersionKind().Group != "batch" {
		return false
	}
	_, found, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "ttlSecondsAfterFinished")
	return found
}

// installing says the app owns nothing yet: the sync is its first, and
// Helm's install hooks (not its upgrade hooks) run.
func (p *Plan) installing() bool { return len(p.inventory.Entries) == 0 }

// DryRuns is how many server-side dry-runs the plan made.
func (p *Plan) DryRuns() int { return p.dryRuns }

// Plan decides, for each object of objs, whether a sync would create,
// configure or leave it, and which owned objects it would delete.
//
// An object whose desired state hashes as it did at its last apply, and
// whose live copy still holds every field of it, costs no request beyond the
// one list per kind. Everything else is decided by a server-side dry-run,
// which also validates it; if any dry-run fails the plan fails with a
// ValidationError naming each object, its file and the field.
func (m *Manager) Plan(ctx context.Context, objs []render.Object, opts PlanOptions) (*Plan, error) {
	objs, hooks, err := m.splitHooks(opts.App, opts.DefaultNamespace, opts.Policy, objs)
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 && !opts.AllowEmpty {
		return nil, ErrEmptyRender
	}
	inv, had, err := m.loadInventory(ctx, opts.Records, opts.App)
	if err != nil {
		return nil, err
	}
	if opts.CreateNamespace != nil {
		if objs, err = m.withNamespace(ctx, opts.App, *opts.CreateNamespace, inv, objs); err != nil {
			return nil, err
		}
	}
	objects, err := m.prepare(opts.App, opts.DefaultNamespace, opts.Policy, objs)
	if err != nil {
		return nil, err
	}
	p := &Plan{opts: opts, objects: objects, hooks: hooks, inventory: inv, hadInventory: had}

	kinds := map[schema.GroupVersionKind]map[string]bool{}
	addKind := func(gvk schema.GroupVersionKind, ns string) {
		if kinds[gvk] == nil {
			kinds[gvk] = map[string]bool{}
		}
		if ns != "" {
			kinds[gvk][ns] = true
		}
	}
	for _, d := range objects {
		if !d.pendingCRD {
			addKind(d.gvk, d.obj.GetNamespace())
		}
	}
	for _, e := range inv.Entries {
		addKind(e.gvk(), e.Namespace)
	}
	// Without an inventory the app owns nothing on record: nothing to
	// prune, no last apply to compare with. Each desired object's dry-run
	// says whether it exists (and whose it is), so nothing is listed.
	p.live = liveSet{}
	if had {
		if p.live, err = m.listOwned(ctx, opts.App, kinds); err != nil {
			return nil, err
		}
	}
	missingNS, err := m.missingNamespaces(ctx, objects, p.live)
	if err != nil {
		return nil, err
	}

	var check []*desired
	for _, d := range objects {
		d.live = p.live[d.key]
		if err := d.respectIgnored(opts.IgnoreDifferences); err != nil {
			return nil, err
		}
		entry, known := inv.Entries[d.key]
		switch {
		case d.pendingCRD || (d.namespaced && missingNS[d.obj.GetNamespace()]):
			p.deferred = append(p.deferred, d)
			d.action = ActionCreated
		case d.mode == applyIfAbsent && d.live != nil:
			d.action, d.reason = ActionUnchanged, fluxSSA+": IfNotPresent"
		case known && d.live == nil && entry.Hash == d.hash && removesItself(d.obj):
			// A Job that deletes itself when finished, applied as it
			// is now: gone is done, not drift. A change to it runs it
			// again.
			d.action, d.reason, d.finished = ActionUnchanged, "finished and removed by its ttlSecondsAfterFinished", true
		case known && d.live != nil && entry.Hash == d.hash &&
			(entry.ResourceVersion == d.live.GetResourceVersion() || contains(d.live.Object, d.obj.Object)):
			d.action = ActionUnchanged
		default:
			check = append(check, d)
		}
	}
	p.dryRuns += len(check)
	if err := m.dryRunAll(ctx, opts, check); err != nil {
		return nil, err
	}
	for _, d := range p.objects {
		// A selective sync compares everything and changes only what
		// it selects.
		if !selected(opts.Only, d.obj) && (d.action == ActionCreated || d.action == ActionConfigured) {
			d.reason = fmt.Sprintf("%s (would be %s)", reasonNotSelected, d.action)
			d.action = ActionSkipped
		}
	}
	if err := m.planPrune(ctx, p); err != nil {
		return nil, err
	}
	p.ChangeSet = *result(p.objects, p.pruneChanges, nil, nil)
	return p, nil
}

// respectIgnored gives d the live values at the fields rules leave to the
// live object (see IgnoreRule), once its live object is known.
func (d *desired) respectIgnored(rules []IgnoreRule) error {
	if d.live == nil || len(rules) == 0 {
		return nil
	}
	// The rules that apply are part of what was applied: adding or
	// removing one makes the object worth a dry-run again.
	var matched []string
	for i := range rules {
		if rules[i].matches(d.obj) {
			matched = append(matched, rules[i].digest())
		}
	}
	if len(matched) > 0 {
		d.hash = digestStrings(append([]string{d.hash}, matched...))
	}
	obj, err := respectIgnored(d.obj, d.live, rules)
	if err != nil {
		return objectErrorf(d.obj, d.source, "ignoreDifferences: %w", err)
	}
	if obj != nil {
		d.obj = obj
	}
	return nil
}

// dryRunAll dry-runs objs concurrently and classifies each. Every failure
// is collected, so one run reports all invalid objects.
func (m *Manager) dryRunAll(ctx context.Context, opts PlanOptions, objs []*desired) error {
	failures := m.forEach(ctx, objs, func(ctx context.Context, d *desired) error { return m.dryRun(ctx, d, opts) })
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(failures) > 0 {
		return &ValidationError{Errors: failures}
	}
	return nil
}

// mayAdopt decides whether the existing object live, not found among the
// app's own, may become d's: never when another app owns it, and for an
// object nobody owns, as opts.Adopt says.
func mayAdopt(live *unstructured.Unstructured, d *desired, opts PlanOptions) error {
	owner := live.GetAnnotations()[AnnotationOwner]
	if owner == "" && live.GetLabels()[LabelApp] != "" {
		owner = live.GetLabels()[LabelApp]
	}
	if owner != "" && owner != opts.App.String() {
		return objectErrorf(d.obj, d.source, "%w: it belongs to app %s; an object is synced by one app only", ErrNotOwned, owner)
	}
	switch opts.Adopt {
	case AdoptAlways:
		return nil
	case AdoptAnnotated:
		if d.obj.GetAnnotations()[AnnotationAdopt] == "true" {
			return nil
		}
		return objectErrorf(d.obj, d.source, "%w: it exists and no app owns it; annotate the manifest %s: \"true\" to take it over", ErrNotOwned, AnnotationAdopt)
	}
	return objectErrorf(d.obj, d.source, "%w: it exists and no app owns it; adoption is off", ErrNotOwned)
}

// dryRun asks the server what applying d would produce and sets d's action
// and diff from the answer.
func (m *Manager) dryRun(ctx context.Context, d *desired, opts PlanOptions) error {
	result := d.obj.DeepCopy()
	// An object a peer (converge's legacy manager, Argo CD, Flux) applied
	// is dry-run as that peer: the answer then shows what the apply, once
	// the fields are handed over (takeOver), will really do.
	manager := handoverDryRunManager(d.live, d.manager)
	err := m.serverSideApply(ctx, result, manager, d.lenient, true)
	if err != nil {
		if isImmutable(err) {
			if d.force {
				d.replace, d.action, d.reason = true, ActionConfigured, "replaced: an immutable field changed"
				d.diff, err = opts.diff(render.Ref(d.obj), d.live, d.obj)
				return err
			}
			return objectErrorf(d.obj, d.source, "%w; annotate it %s: \"true\" to let converge delete and recreate it",
				apiError(err, d.obj), AnnotationForce)
		}
		return objectError(d.obj, d.source, apiError(err, d.obj))
	}
	d.dryRun = result
	if d.live == nil && result.GetResourceVersion() != "" && d.mode == applyIfAbsent {
		// It exists, and this object is only ever created.
		d.action, d.reason = ActionUnchanged, fluxSSA+": IfNotPresent"
		return nil
	}
	if d.live == nil && result.GetResourceVersion() != "" {
		// The object exists but is not labelled as ours: adopt it, if
		// nobody else owns it and the policy allows.
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(d.gvk)
		if err := m.client.Get(ctx, client.ObjectKeyFromObject(d.obj), live); err != nil {
			return objectErrorf(d.obj, d.source, "reading live object: %w", err)
		}
		if err := mayAdopt(live, d, opts); err != nil {
			return err
		}
		d.live = live
		// Fields left to the live object: dry-run again with its values.
		before := d.obj
		if err := d.respectIgnored(opts.IgnoreDifferences); err != nil {
			return err
		}
		if d.obj != before {
			return m.dryRun(ctx, d, opts)
		}
	}
	_, from, err := handover(d.live, d.manager)
	if err != nil {
		return objectErrorf(d.obj, d.source, "reading its field managers: %w", err)
	}
	switch {
	case d.live == nil:
		d.action = ActionCreated
	case equalNormalized(d.live, result) && len(from) == 0:
		d.action = ActionUnchanged
		return nil
	case equalNormalized(d.live, result):
		// Nothing changes but who owns the fields: applied once, so that
		// what later leaves Git is removed.
		d.action, d.reason = ActionConfigured, handoverReason(from)
		return nil
	default:
		d.action = ActionConfigured
		if len(from) > 0 {
			d.reason = handoverReason(from)
		}
	}
	var err2 error
	d.diff, err2 = opts.diff(render.Ref(d.obj), d.live, result)
	return err2
}

// forEach runs fn on every object, at most Concurrency at a time, and
// returns every error, sorted so that reports are stable.
func (m *Manager) forEach(ctx context.Context, objs []*desired, fn func(context.Context, *desired) error) []error {
	var mu sync.Mutex
	var errs []error
	g := new(errgroup.Group)
	g.SetLimit(m.opts.Concurrency)
	for _, d := range objs {
		g.Go(func() error {
			if err := fn(ctx, d); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errs
}

// withNamespace adds the namespace ns to objs when the app may own it: it
// is already the app's (in its inventory), or it does not exist. The
// Namespace is applied first (CRDs, namespaces and cluster RBAC lead).
func (m *Manager) withNamespace(ctx context.Context, app App, ns NamespaceSpec, inv *Inventory, objs []render.Object) ([]render.Object, error) {
	for _, o := range objs {
		if o.GetKind() == "Namespace" && o.GroupVersionKind().Group == "" && o.GetName() == ns.Name {
			return objs, nil // the source has it: that one wins
		}
	}
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Namespace")
	u.SetName(ns.Name)
	if _, ours := inv.Entries[render.KeyOf(u)]; !ours {
		err := m.client.Get(ctx, client.ObjectKey{Name: ns.Name}, u.DeepCopy())
		switch {
		case err == nil:
			return objs, nil // it exists and is not the app's: leave it be
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("reading namespace %s: %w", ns.Name, err)
		}
	}
	if len(ns.Labels) > 0 {
		u.SetLabels(maps.Clone(ns.Labels))
	}
	if len(ns.Annotations) > 0 {
		u.SetAnnotations(maps.Clone(ns.Annotations))
	}
	return append(objs[:len(objs):len(objs)], render.Object{Unstructured: u, Source: "createNamespace"}), nil
}

// missingNamespaces returns the namespaces that desired objects live in, are
// themselves in the desired set, and do not exist yet.
func (m *Manager) missingNamespaces(ctx context.Context, objects []*desired, live liveSet) (map[string]bool, error) {
	missing := map[string]bool{}
	for _, d := range objects {
		if d.gvk.Group != "" || d.gvk.Kind != "Namespace" || live[d.key] != nil {
			continue
		}
		ns := &unstructured.Unstructured{}
		ns.SetGroupVersionKind(d.gvk)
		err := m.client.Get(ctx, client.ObjectKey{Name: d.obj.GetName()}, ns)
		switch {
		case apierrors.IsNotFound(err):
			missing[d.obj.GetName()] = true
		case err != nil:
			return nil, fmt.Errorf("reading Namespace/%s: %w", d.obj.GetName(), err)
		}
	}
	return missing, nil
}

// planPrune finds owned objects that are no longer desired.
func (m *Manager) planPrune(ctx context.Context, p *Plan) error {
	want := make(map[render.Key]bool, len(p.objects))
	for _, d := range p.objects {
		want[d.key] = true
	}
	keys := make([]render.Key, 0)
	for k := range p.inventory.Entries {
		if !want[k] {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, k := range keys {
		e := p.inventory.Entries[k]
		live := p.live[k]
		c := Change{Ref: refOf(e), APIVersion: e.gvk().GroupVersion().String(), Kind: e.Kind, Namespace: e.Namespace, Name: e.Name}
		switch {
		case live == nil:
			// Gone already, or no longer carries this app's ownership
			// labels: either way it is not ours to delete.
			continue
		case !selected(p.opts.Only, live):
			continue // a selective sync leaves it, and the record keeps it
		case keep(live.GetAnnotations(), p.opts.AppDeleted) != "":
			c.Kept = keep(live.GetAnnotations(), p.opts.AppDeleted)
			c.Action, c.Reason = ActionSkipped, "kept: "+c.Kept
		case !p.opts.Prune:
			c.Action, c.Reason = ActionSkipped, "no longer in the source; prune is off"
		default:
			c.Action = ActionDeleted
			p.prune = append(p.prune, live)
			var err error
			if c.Diff, err = p.opts.diff(c.Ref, live, nil); err != nil {
				return err
			}
		}
		p.pruneChanges = append(p.pruneChanges, c)
	}
	return nil
}

func refOf(e Entry) string {
	if e.Namespace != "" {
		return e.Kind + "/" + e.Namespace + "/" + e.Name
	}
	return e.Kind + "/" + e.Name
}

// isImmutable recognises the apiserver's refusals to change a field that
// cannot change after creation.
func isImmutable(err error) bool {
	if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "field is immutable") || strings.Contains(msg, "updates to statefulset spec for fields other than")
}

// apiMessage is the apiserver's message for err, which names the field.
func apiMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return status.Status().Message
	}
	return err.Error()
}
