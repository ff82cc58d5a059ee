package engine

import (
	"context"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/render"
)

// splitHooks takes the hooks (and skipped objects) out of objs. A hook may
// have generateName instead of a name.
func (m *Manager) splitHooks(app App, defaultNamespace string, policy *Policy, objs []render.Object) ([]render.Object, []*hook, error) {
	var rest []render.Object
	var hooks []*hook
	var errs []error
	crds := crdKinds(objs)
	for _, o := range objs {
		ann := o.GetAnnotations()
		phases, skip, err := hookSpec(ann)
		switch {
		case err != nil:
			errs = append(errs, objectError(o.Unstructured, o.Source, err))
			continue
		case skip:
			continue
		case phases == nil:
			rest = append(rest, o)
			continue
		}
		h := &hook{phases: phases}
		if h.deletePolicy, err = hookDeletePolicy(ann); err == nil {
			h.weight, err = hookWeight(ann)
		}
		if err == nil {
			h.desired, err = m.prepareOne(app, defaultNamespace, policy, o, crds)
		}
		if err != nil {
			errs = append(errs, objectError(o.Unstructured, o.Source, err))
			continue
		}
		if h.obj.GetName() == "" && h.obj.GetGenerateName() == "" {
			errs = append(errs, objectErrorf(h.obj, o.Source, "a hook needs metadata.name or metadata.generateName"))
			continue
		}
		labels := h.obj.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		delete(labels, LabelApp)
		labels[LabelHook] = app.Name
		h.obj.SetLabels(labels)
		hooks = append(hooks, h)
	}
	if len(errs) > 0 {
		return nil, nil, &ValidationError{Errors: errs}
	}
	return rest, hooks, nil
}

// runHooks runs the hooks of phase, weight group by weight group; the
// hooks of a group run together. It stops at the first group with a failed
// hook and returns a HookError for it, with the results so far. Hooks
// whose policy deletes them once they succeed are deleted when the phase
// ends (as Helm does), so a ServiceAccount hook outlives the Job hooks of
// the phase that use it.
func (m *Manager) runHooks(ctx context.Context, app App, hooks []*hook, phase HookPhase, when occasion, timeout time.Duration, progress func(string)) ([]HookResult, error) {
	var results []HookResult
	var succeeded []*unstructured.Unstructured
	defer func() {
		for _, u := range succeeded {
			err := m.client.Delete(ctx, u, client.PropagationPolicy(metav1.DeletePropagationBackground))
			if client.IgnoreNotFound(err) != nil {
				for i := range results {
					if results[i].Ref == render.Ref(u) {
						results[i].Message += "; deleting it failed: " + apiError(err, u).Error()
					}
				}
			}
		}
	}()
	for _, group := range hooksFor(hooks, phase, when) {
		if progress != nil {
			progress(fmt.Sprintf("running %d %s hook(s)", len(group), phase))
		}
		out := make([]HookResult, len(group))
		errs := make([]error, len(group))
		done := make(chan int, len(group))
		created := make([]*unstructured.Unstructured, len(group))
		for i, h := range group {
			go func() {
				out[i], created[i], errs[i] = m.runHook(ctx, app, h, phase, timeout)
				done <- i
			}()
		}
		for range group {
			<-done
		}
		for i, h := range group {
			if out[i].Status == HookSucceeded && h.deletePolicy[deleteOnSuccess] {
				succeeded = append(succeeded, created[i])
			}
		}
		results = append(results, out...)
		for _, err := range errs {
			if err != nil {
				return results, err // the first failure names its hook; every result is kept
			}
		}
	}
	return results, nil
}

// runHook creates one hook (deleting an earlier run of it first, as its
// policy allows) and waits until it has finished; a failed hook whose
// policy says so is deleted. It returns the created object. Jobs finish
// when Complete or Failed, Pods when Succeeded or Failed; any other kind
// when it is created.
func (m *Manager) runHook(ctx context.Context, app App, h *hook, phase HookPhase, timeout time.Duration) (HookResult, *unstructured.Unstructured, error) {
	obj := h.obj.DeepCopy()
	res := HookResult{Ref: render.Ref(obj), Phase: phase}
	fail := func(reason string) (HookResult, *unstructured.Unstructured, error) {
		res.Status, res.Message = HookFailed, reason
		return res, nil, &HookError{Phase: phase, Ref: res.Ref, Source: h.source, Reason: reason}
	}
	if obj.GetName() != "" {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(h.gvk)
		err := m.client.Get(ctx, client.ObjectKeyFromObject(obj), live)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return fail(apiError(err, obj).Error())
		case live.GetLabels()[LabelHook] != app.Name || live.GetAnnotations()[AnnotationOwner] != app.String():
			return fail("an object of that name exists and is not this app's hook")
		case !h.deletePolicy[deleteBeforeCreation]:
			return fail("it exists from an earlier run, and its delete policy has no BeforeHookCreation")
		default:
			if err := m.deleteAndWait(ctx, live); err != nil {
				return fail("deleting the earlier run: " + apiError(err, obj).Error())
			}
		}
	}
	if err := m.client.Create(ctx, obj, client.FieldOwner(h.manager)); err != nil {
		return fail("create failed: " + apiError(err, obj).Error())
	}
	res.Ref = render.Ref(obj) // generateName is now a name
	status, reason, err := m.waitHook(ctx, obj, timeout)
	if err != nil {
		return fail(err.Error())
	}
	res.Status, res.Message = status, reason
	if status == HookFailed {
		if h.deletePolicy[deleteOnFailure] {
			err := m.client.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground))
			if client.IgnoreNotFound(err) != nil {
				res.Message += "; deleting it failed: " + apiError(err, obj).Error()
			}
		}
		return res, obj, &HookError{Phase: phase, Ref: res.Ref, Source: h.source, Reason: reason}
	}
	return res, obj, nil
}

// hookOutcome reads whether a hook object has finished, and how.
func hookOutcome(u *unstructured.Unstructured) (done bool, status, reason string) {
	switch {
	case u.GroupVersionKind().Group == "batch" && u.GetKind() == "Job":
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			cm, _ := c.(map[string]any)
			if cm["status"] != "True" {
				continue
			}
			msg, _ := cm["message"].(string)
			why, _ := cm["reason"].(string)
			switch cm["type"] {
			case "Complete":
				return true, HookSucceeded, "Job completed"
			case "Failed":
				return true, HookFailed, strings.TrimSuffix("Job failed: "+why+": "+msg, ": ")
			}
		}
		return false, "", ""
	case u.GroupVersionKind().Group == "" && u.GetKind() == "Pod":
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		msg, _, _ := unstructured.NestedString(u.Object, "status", "message")
		switch phase {
		case "Succeeded":
			return true, HookSucceeded, "Pod succeeded"
		case "Failed":
			return true, HookFailed, strings.TrimSuffix("Pod failed: "+msg, ": ")
		}
		return false, "", ""
	}
	return true, HookSucceeded, "created"
}

// waitHook waits until the hook obj (as created) has finished. It watches
// the object from its creation on, so a Job deleted right after it
// completes (ttlSecondsAfterFinished: 0) is still seen completing.
func (m *Manager) waitHook(ctx context.Context, obj *unstructured.Unstructured, timeout time.Duration) (string, string, error) {
	if done, status, reason := hookOutcome(obj); done {
		return status, reason, nil
	}
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rv := obj.GetResourceVersion()
	for {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(obj.GroupVersionKind().GroupVersion().WithKind(obj.GetKind() + "List"))
		w, err := m.watcher.Watch(ctx, list, client.InNamespace(obj.GetNamespace()),
			client.MatchingFields{"metadata.name": obj.GetName()}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})
		if err != nil {
			if ctx.Err() != nil {
				return "", "", fmt.Errorf("not finished after %s", timeout)
			}
			return "", "", fmt.Errorf("watching it: %w", err)
		}
		status, reason, next, err := m.readHookEvents(ctx, w, rv)
		w.Stop()
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return "", "", fmt.Errorf("not finished after %s", timeout)
			}
			return "", "", err
		case status != "":
			return status, reason, nil
		}
		rv = next // the watch closed: resume where it ended
	}
}

// readHookEvents reads one watch until the hook finishes or the watch
// ends, returning the resourceVersion to resume from.
func (m *Manager) readHookEvents(ctx context.Context, w watch.Interface, rv string) (status, reason, next string, err error) {
	next = rv
	for {
		select {
		case <-ctx.Done():
			return "", "", next, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return "", "", next, nil
			}
			switch ev.Type {
			case watch.Error:
				if s, ok := ev.Object.(*metav1.Status); ok && s.Code == 410 {
					return "", "", next, fmt.Errorf("its watch expired: %s", s.Message)
				}
				return "", "", next, fmt.Errorf("watching it: %v", apierrors.FromObject(ev.Object))
			case watch.Bookmark:
				if u, ok := ev.Object.(*unstructured.Unstructured); ok {
					next = u.GetResourceVersion()
				}
				continue
			}
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			next = u.GetResourceVersion()
			if done, status, reason := hookOutcome(u); done {
				return status, reason, next, nil
			}
			if ev.Type == watch.Deleted {
				return HookFailed, "deleted before it finished", next, nil
			}
		}
	}
}

// createHookNamespaces applies the desired Namespaces that hooks in groups
// live in and that the plan creates. The sync's apply finds them made.
func (m *Manager) createHookNamespaces(ctx context.Context, p *Plan, groups [][]*hook) error {
	need := map[string]bool{}
	for _, g := range groups {
		for _, h := range g {
			if h.namespaced {
				need[h.obj.GetNamespace()] = true
			}
		}
	}
	for _, d := range p.objects {
		if d.gvk.Group != "" || d.gvk.Kind != "Namespace" || d.action != ActionCreated || !need[d.obj.GetName()] {
			continue
		}
		obj := d.obj.DeepCopy()
		err := m.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(d.manager), client.ForceOwnership)
		if err != nil {
			return objectErrorf(d.obj, d.source, "creating it for the PreSync hooks: %w", apiError(err, d.obj))
		}
	}
	return nil
}
