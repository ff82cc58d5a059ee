package actions

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
)

// Resource names one object of an Application's tree.
type Resource struct {
	Group, Kind, Namespace, Name string
}

func (r Resource) String() string {
	gk := r.Kind
	if r.Group != "" {
		gk += "." + r.Group
	}
	if r.Namespace == "" {
		return gk + " " + r.Name
	}
	return gk + " " + r.Namespace + "/" + r.Name
}

// madeFor lists the kinds a workload's controllers make for it (the tree's
// children): an app's page may show and act on them too.
var madeFor = map[schema.GroupKind]bool{
	{Kind: "Pod"}:                       true,
	{Group: "apps", Kind: "ReplicaSet"}: true,
	{Group: "batch", Kind: "Job"}:       true,
}

// InTree reports whether r is one of app's objects (from its status), or
// an object of a kind its workloads' controllers make, in a namespace
// where app has objects. (RBAC still decides: every read and action is
// the viewer's.)
func InTree(app *v1alpha1.Application, r Resource) bool {
	namespaces := map[string]bool{}
	for _, o := range app.Status.Resources {
		if o.Group == r.Group && o.Kind == r.Kind && o.Namespace == r.Namespace && o.Name == r.Name {
			return true
		}
		namespaces[o.Namespace] = true
	}
	return r.Namespace != "" && namespaces[r.Namespace] && madeFor[schema.GroupKind{Group: r.Group, Kind: r.Kind}]
}

// fromGit reports whether app applies r itself.
func fromGit(app *v1alpha1.Application, r Resource) bool {
	for _, o := range app.Status.Resources {
		if o.Group == r.Group && o.Kind == r.Kind && o.Namespace == r.Namespace && o.Name == r.Name {
			return true
		}
	}
	return false
}

// RestartedAtAnnotation is kubectl rollout restart's: a new value in the
// pod template rolls the workload's pods. converge does not apply it, so
// a sync leaves it alone.
const RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

var restartable = map[schema.GroupKind]bool{
	{Group: "apps", Kind: "Deployment"}:  true,
	{Group: "apps", Kind: "StatefulSet"}: true,
	{Group: "apps", Kind: "DaemonSet"}:   true,
}

// CanRestart, CanScale, CanDelete and CanRetry say which actions an
// object's page offers.
func CanRestart(r Resource) bool { return restartable[schema.GroupKind{Group: r.Group, Kind: r.Kind}] }
func CanScale(r Resource) bool {
	return r.Group == "apps" && (r.Kind == "Deployment" || r.Kind == "StatefulSet")
}
func CanDelete(r Resource) bool { return r.Group == "" && r.Kind == "Pod" }
func CanRetry(r Resource) bool  { return r.Group == "batch" && r.Kind == "Job" }

// Restart rolls a workload's pods, as `kubectl rollout restart` does.
func (a *Actor) Restart(ctx context.Context, app *v1alpha1.Application, r Resource) (Done, error) {
	if !CanRestart(r) || !InTree(app, r) {
		return Done{}, fmt.Errorf("%s: only a Deployment, StatefulSet or DaemonSet of this app restarts", r)
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{RestartedAtAnnotation: time.Now().UTC().Format(time.RFC3339)}}}}})
	if err := a.client.Patch(ctx, object(r, "v1"), client.RawPatch(types.MergePatchType, patch)); err != nil {
		return Done{}, err
	}
	return a.recorded(ctx, app, "restart", r.String())
}

// Scale sets a Deployment's or StatefulSet's replicas. A sync puts back
// the count its manifest names, if it names one.
func (a *Actor) Scale(ctx context.Context, app *v1alpha1.Application, r Resource, replicas int32) (Done, error) {
	if !CanScale(r) || !InTree(app, r) {
		return Done{}, fmt.Errorf("%s: only a Deployment or StatefulSet of this app scales", r)
	}
	if replicas < 0 || replicas > 10000 {
		return Done{}, fmt.Errorf("replicas %d: want 0 to 10000", replicas)
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"replicas": replicas}})
	if err := a.client.Patch(ctx, object(r, "v1"), client.RawPatch(types.MergePatchType, patch)); err != nil {
		return Done{}, err
	}
	return a.recorded(ctx, app, "scale", fmt.Sprintf("%s to %d", r, replicas))
}

// DeletePod deletes a Pod; its controller makes another.
func (a *Actor) DeletePod(ctx context.Context, app *v1alpha1.Application, r Resource) (Done, error) {
	if !CanDelete(r) || !InTree(app, r) {
		return Done{}, fmt.Errorf("%s: only a Pod of this app is deleted here", r)
	}
	if err := a.client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.Name}}); err != nil {
		return Done{}, err
	}
	return a.recorded(ctx, app, "delete-pod", r.String())
}

// RetryJob runs a failed Job of the app's manifests again: it is deleted
// (with its pods) and a sync requested, which creates it anew.
func (a *Actor) RetryJob(ctx context.Context, app *v1alpha1.Application, r Resource) (Done, error) {
	if !CanRetry(r) || !fromGit(app, r) {
		return Done{}, fmt.Errorf("%s: only a Job this app applies can be retried (a sync creates it again)", r)
	}
	job := &batchv1.Job{}
	if err := a.client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: r.Name}, job); err != nil {
		return Done{}, err
	}
	if !jobFailed(job) {
		return Done{}, fmt.Errorf("%s has not failed: nothing to retry", r)
	}
	uid := job.UID
	if err := a.client.Delete(ctx, job, client.PropagationPolicy("Background"), client.Preconditions{UID: &uid}); err != nil {
		return Done{}, err
	}
	d, err := a.recorded(ctx, app, "retry-job", r.String())
	if err != nil {
		return d, err
	}
	synced, err := a.Sync(ctx, app.Namespace, app.Name)
	if err != nil {
		return d, fmt.Errorf("%s deleted, but the sync that creates it again was not requested: %w", r, err)
	}
	synced.Warning = joinWarnings(d.Warning, synced.Warning)
	return synced, nil
}

func jobFailed(job *batchv1.Job) bool {
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// recorded records a resource action in app's trail.
func (a *Actor) recorded(ctx context.Context, app *v1alpha1.Application, action, detail string) (Done, error) {
	d := Done{App: app}
	if err := a.Record(ctx, app, action, detail); err != nil {
		d.Warning = err.Error()
	}
	return d, nil
}

func joinWarnings(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// object is r as an unstructured object of version (for patches, which
// need only its kind and name).
func object(r Resource, version string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: r.Group, Version: version, Kind: r.Kind})
	u.SetNamespace(r.Namespace)
	u.SetName(r.Name)
	return u
}
