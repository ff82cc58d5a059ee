package engine

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/poll"
	"converge.dev/converge/internal/render"
)

// SyncOptions say what a sync does beyond planning.
type SyncOptions struct {
	PlanOptions
	// DryRun plans (with server-side dry-runs) and writes nothing.
	DryRun bool
	// Wait waits, after applying, until every object is healthy.
	Wait bool
	// Timeout bounds the waits: for CRDs to be Established, for each wave
	// to be healthy before the next, and for health at the end.
	Timeout time.Duration
	// PruneLast prunes only once everything applied is healthy (Argo
	// CD's PruneLast=true); an object to prune that carries the option
	// itself asks for the same.
	PruneLast bool
}

// Sync plans objs and carries the plan out: see Plan and Apply.
func (m *Manager) Sync(ctx context.Context, objs []render.Object, opts SyncOptions) (*ChangeSet, error) {
	plan, err := m.Plan(ctx, objs, opts.PlanOptions)
	if err != nil {
		return nil, err
	}
	if opts.DryRun {
		return &plan.ChangeSet, nil
	}
	return m.Apply(ctx, plan, opts)
}

// Apply carries out a plan:
//
//  1. the first stage (CRDs, namespaces, cluster RBAC and policy), then a
//     wait until new CRDs are Established;
//  2. the dry-run of objects that could not be checked before (custom
//     resources of new CRDs, objects in new namespaces); if one fails, the
//     objects the first stage created are deleted again and nothing else is
//     written;
//  3. the remaining objects, wave by wave (converge.dev/sync-wave, lowest
//     first; when there are several waves, each must be healthy before the
//     next starts), kind by kind within a wave;
//  4. pruning, namespaces last;
//  5. the inventory, written only if it changed.
//
// Unchanged objects are not written. Whatever happens, the inventory records
// every object that was applied, so nothing created is ever lost track of.
//
// Apply does not change the plan: what it did is in the change set it
// returns, with each object's health right after its write (Health).
func (m *Manager) Apply(ctx context.Context, p *Plan, opts SyncOptions) (cs *ChangeSet, err error) {
	applied := &appliedSet{rv: map[render.Key]string{}}
	// The objects that could be checked only now are checked on copies;
	// their dry-run diffs stand in the result for the plan's.
	objects := p.objects
	var deferred []*desired
	if len(p.deferred) > 0 {
		copies := make(map[*desired]*desired, len(p.deferred))
		for _, d := range p.deferred {
			c := *d
			copies[d] = &c
			deferred = append(deferred, &c)
		}
		objects = make([]*desired, len(p.objects))
		for i, d := range p.objects {
			if c, ok := copies[d]; ok {
				d = c
			}
			objects[i] = d
		}
	}
	var deleted []*unstructured.Unstructured
	defer func() {
		inv, saveErr := m.recordSync(ctx, p, applied, deleted)
		if saveErr != nil && err == nil {
			err = saveErr
		}
		cs = result(objects, p.pruneChanges, applied, err)
		cs.Health, cs.Inventory = health(p.objects, applied), inv
	}()
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}

	var first, rest []*desired
	for _, d := range p.objects {
		if d.action != ActionCreated && d.action != ActionConfigured {
			continue
		}
		if inFirstStage(d) {
			first = append(first, d)
		} else {
			rest = append(rest, d)
		}
	}
	p.progress("applying %d object(s), %d unchanged", len(first)+len(rest), len(p.objects)-len(first)-len(rest))
	for _, b := range batches(first) {
		if err := m.applyBatch(ctx, b, applied); err != nil {
			return nil, err
		}
	}
	if err := m.waitEstablished(ctx, first, timeout); err != nil {
		return nil, err
	}
	if len(deferred) > 0 {
		if err := m.dryRunAll(ctx, p.opts, deferred); err != nil {
			m.undoCreated(ctx, first, applied)
			return nil, err
		}
	}
	prevWave, waves := 0, 0
	var lastWave []*desired
	for _, b := range batches(rest) {
		if waves > 0 && b[0].wave != prevWave {
			p.progress("waiting for wave %d to be healthy", prevWave)
			if err := m.waitHealthy(ctx, p.opts.App, lastWave, timeout, p.opts.Progress); err != nil {
				return nil, fmt.Errorf("wave %d: %w", prevWave, err)
			}
			lastWave = nil
		}
		if waves == 0 || b[0].wave != prevWave {
			waves++
			prevWave = b[0].wave
		}
		if err := m.applyBatch(ctx, b, applied); err != nil {
			return nil, err
		}
		lastWave = append(lastWave, b...)
	}
	if len(p.prune) > 0 && (opts.PruneLast || prunesLast(p.prune)) {
		p.progress("waiting for what was applied to be healthy before pruning (PruneLast)")
		if err := m.waitHealthy(ctx, p.opts.App, p.objects, timeout, p.opts.Progress); err != nil {
			return nil, fmt.Errorf("before pruning: %w", err)
		}
	}
	if deleted, err = m.prune(ctx, p); err != nil {
		return nil, err
	}
	if opts.Wait {
		var all []*desired
		for _, d := range p.objects {
			all = append(all, d)
		}
		if err := m.waitHealthy(ctx, p.opts.App, all, timeout, p.opts.Progress); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// appliedSet collects the resourceVersions applies returned.
type appliedSet struct {
	mu sync.Mutex
	rv map[render.Key]string
	// objs holds what each apply returned: the live object right after.
	objs map[render.Key]*unstructured.Unstructured
	// failed holds the error of each object whose apply failed.
	failed map[render.Key]error
}

func (a *appliedSet) set(k render.Key, obj *unstructured.Unstructured) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rv[k] = obj.GetResourceVersion()
	if a.objs == nil {
		a.objs = map[render.Key]*unstructured.Unstructured{}
	}
	a.objs[k] = obj
}

func (a *appliedSet) fail(k render.Key, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failed == nil {
		a.failed = map[render.Key]error{}
	}
	a.failed[k] = err
}

// applyBatch applies objs concurrently, failing with every object's error.
func (m *Manager) applyBatch(ctx context.Context, objs []*desired, applied *appliedSet) error {
	return errors.Join(m.forEach(ctx, objs, func(ctx context.Context, d *desired) error {
		err := m.applyOne(ctx, d, applied)
		if err != nil {
			applied.fail(d.key, err)
		}
		return err
	})...)
}

func (m *Manager) applyOne(ctx context.Context, d *desired, applied *appliedSet) error {
	if d.replace {
		if err := m.deleteAndWait(ctx, d.live); err != nil {
			return objectErrorf(d.obj, d.source, "replacing: %w", err)
		}
	}
	if err := m.takeOver(ctx, d); err != nil {
		return objectErrorf(d.obj, d.source, "taking over the fields of earlier managers: %w", apiError(err, d.obj))
	}
	obj := d.obj.DeepCopy()
	if err := m.serverSideApply(ctx, obj, d.manager, d.lenient, false); err != nil {
		return objectErrorf(d.obj, d.source, "apply failed: %w", apiError(err, d.obj))
	}
	applied.set(d.key, obj)
	return nil
}

// serverSideApply applies obj as manager, forcing ownership, and leaves
// what the server answered in obj. Fields the schema does not declare fail
// the apply, unless lenient (Argo CD's Validate=false): then each field
// the server names is dropped and the apply tried again, as kubectl's
// --validate=false would leave them out.
func (m *Manager) serverSideApply(ctx context.Context, obj *unstructured.Unstructured, manager string, lenient, dryRun bool) error {
	opts := []client.ApplyOption{client.FieldOwner(manager), client.ForceOwnership}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	for range maxDroppedFields {
		err := m.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), opts...)
		if err == nil || !lenient || !dropUndeclared(obj, err) {
			return err
		}
	}
	return fmt.Errorf("still fields the schema does not declare after %d tries", maxDroppedFields)
}

// maxDroppedFields bounds the tries of a lenient apply: each answer names
// every undeclared field it found, so a few suffice, and a tenant's
// object cannot turn one apply into many requests.
const maxDroppedFields = 8

// undeclared finds the field an apply names as not in the schema:
// `.spec.replica: field not declared in schema`.
var undeclared = regexp.MustCompile(`(\.[^\s:]+): field not declared in schema`)

// dropUndeclared removes from obj the fields err names as not declared in
// the schema; false when it names none it could remove.
func dropUndeclared(obj *unstructured.Unstructured, err error) bool {
	dropped := false
	for _, m := range undeclared.FindAllStringSubmatch(err.Error(), -1) {
		path, ok := schemaPath(m[1])
		if !ok {
			continue
		}
		if _, found := getPath(obj.Object, path); found {
			deletePath(obj.Object, path)
			dropped = true
		}
	}
	return dropped
}

// schemaPath reads a structured-merge-diff path (`.spec.containers[name="web"].x`)
// as a path getPath follows.
func schemaPath(s string) ([]any, bool) {
	var out []any
	for _, tok := range strings.Split(strings.TrimPrefix(s, "."), ".") {
		name, sel, hasSel := strings.Cut(tok, "[")
		if name != "" {
			out = append(out, name)
		}
		if !hasSel {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSuffix(sel, "]"), "=")
		if !ok {
			return nil, false
		}
		unq, err := strconv.Unquote(v)
		if err != nil {
			return nil, false
		}
		out = append(out, keyElem{k: unq})
	}
	return out, len(out) > 0
}

// deleteAndWait deletes u and waits until it is gone.
func (m *Manager) deleteAndWait(ctx context.Context, u *unstructured.Unstructured) error {
	if u == nil {
		return nil
	}
	err := m.client.Delete(ctx, u, client.PropagationPolicy("Background"))
	if client.IgnoreNotFound(err) != nil {
		return err
	}
	return poll.Until(ctx, 100*time.Millisecond, time.Minute, func(ctx context.Context) (bool, error) {
		probe := &unstructured.Unstructured{}
		probe.SetGroupVersionKind(u.GroupVersionKind())
		err := m.client.Get(ctx, client.ObjectKeyFromObject(u), probe)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// undoCreated deletes what the first stage created (never what it only
// configured), after a later validation failed.
func (m *Manager) undoCreated(ctx context.Context, first []*desired, applied *appliedSet) {
	for _, d := range first {
		if d.action != ActionCreated {
			continue
		}
		if _, ok := applied.rv[d.key]; !ok {
			continue
		}
		if err := m.client.Delete(ctx, d.obj.DeepCopy()); client.IgnoreNotFound(err) == nil {
			delete(applied.rv, d.key)
		}
	}
}

// waitEstablished waits until every CRD among objs serves its kinds.
func (m *Manager) waitEstablished(ctx context.Context, objs []*desired, timeout time.Duration) error {
	for _, d := range objs {
		if d.gvk.Kind != "CustomResourceDefinition" {
			continue
		}
		err := poll.Until(ctx, 100*time.Millisecond, timeout, func(ctx context.Context) (bool, error) {
			crd := &unstructured.Unstructured{}
			crd.SetGroupVersionKind(d.gvk)
			if err := m.client.Get(ctx, client.ObjectKeyFromObject(d.obj), crd); err != nil {
				return false, err
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				cm, _ := c.(map[string]any)
				if cm["type"] == "Established" && cm["status"] == "True" {
					return true, nil
				}
			}
			return false, fmt.Errorf("not Established yet")
		})
		if err != nil {
			return objectError(d.obj, d.source, err)
		}
	}
	return nil
}

func (p *Plan) progress(format string, args ...any) {
	if p.opts.Progress != nil {
		p.opts.Progress(fmt.Sprintf(format, args...))
	}
}
