package engine

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"converge.dev/converge/internal/render"
)

// App names the owner of a desired set. Its record (the inventory) lives in
// a ConfigMap in Namespace; objects it owns carry its name and identity.
type App struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

func (a App) String() string { return a.Namespace + "/" + a.Name }

// FieldManager is the app's own server-side apply field manager,
// "converge.dev/<namespace>/<name>": managedFields tell apps apart, and
// one app's apply never drops fields another set. Names too long for the
// apiserver's 128 characters end in a hash of the full name.
func (a App) FieldManager() string {
	m := FieldManager + "/" + a.Namespace + "/" + a.Name
	if len(m) <= 128 {
		return m
	}
	sum := sha256.Sum256([]byte(m))
	return m[:128-17] + "-" + hex.EncodeToString(sum[:8])
}

// desired is one object of the desired set, prepared for the cluster, with
// what the plan found out about it.
type desired struct {
	obj        *unstructured.Unstructured
	source     string
	key        render.Key
	gvk        schema.GroupVersionKind
	namespaced bool
	// pendingCRD: the kind is defined by a CRD in this same set and not yet
	// served, so it can be checked only once the CRD is Established.
	pendingCRD bool
	hash       string
	wave       int
	force      bool
	mode       applyMode
	// lenient: Argo CD's Validate=false; fields the schema does not
	// declare are dropped instead of failing the object.
	lenient bool
	// manager is the app's field manager.
	manager string

	// Filled by the plan.
	action Action
	reason string
	live   *unstructured.Unstructured
	dryRun *unstructured.Unstructured
	// replace: an immutable field changes and the object may be recreated.
	replace bool
	// finished: a Job that removed itself after finishing (its TTL).
	finished bool
	diff     string
}

// prepare turns rendered objects into desired objects: it resolves each kind
// against the cluster (or a CRD in the set), defaults the namespace of
// namespaced objects, clears it on cluster-scoped ones, folds Secret
// stringData into data, stamps ownership, and hashes the result.
func (m *Manager) prepare(app App, defaultNamespace string, policy *Policy, objs []render.Object) ([]*desired, error) {
	crds := crdKinds(objs)
	out := make([]*desired, 0, len(objs))
	seen := make(map[render.Key]string, len(objs))
	for _, o := range objs {
		d, err := m.prepareOne(app, defaultNamespace, policy, o, crds)
		if err != nil {
			return nil, err
		}
		if d.mode == applyNever {
			continue
		}
		labels := d.obj.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelApp] = app.Name
		d.obj.SetLabels(labels)
		if prev, dup := seen[d.key]; dup {
			return nil, objectErrorf(d.obj, o.Source, "also defined in %s", prev)
		}
		seen[d.key] = o.Source
		if d.hash, err = hashObject(d.obj); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// prepareOne resolves o's kind, defaults or clears its namespace, admits it
// by policy, folds Secret stringData, stamps the owner annotation and reads
// its sync wave. crds are the kinds CRDs in the same set define.
func (m *Manager) prepareOne(app App, defaultNamespace string, policy *Policy, o render.Object, crds map[schema.GroupVersionKind]bool) (*desired, error) {
	u := o.DeepCopy()
	gvk := u.GroupVersionKind()
	d := &desired{obj: u, source: o.Source, gvk: gvk, manager: app.FieldManager()}
	mapping, err := m.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	switch {
	case err == nil:
		d.namespaced = mapping.Scope.Name() == meta.RESTScopeNameNamespace
	case meta.IsNoMatchError(err):
		scope, ok := crds[gvk]
		if !ok {
			return nil, objectErrorf(u, o.Source, "%w: kind %s is not served by the cluster; is its CRD in this app or another?", ErrUnknownKind, gvk)
		}
		d.namespaced, d.pendingCRD = scope, true
	default:
		return nil, objectError(u, o.Source, err)
	}
	if d.namespaced && u.GetNamespace() == "" {
		if defaultNamespace == "" {
			return nil, objectErrorf(u, o.Source, "namespaced, but it has no namespace and no default was given")
		}
		u.SetNamespace(defaultNamespace)
	}
	if !d.namespaced {
		u.SetNamespace("")
	}
	if err := policy.admit(u, o.Source, d.namespaced); err != nil {
		return nil, err
	}
	if err := foldStringData(u); err != nil {
		return nil, objectError(u, o.Source, err)
	}
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationOwner] = app.String()
	u.SetAnnotations(ann)
	if d.wave, err = syncWave(ann); err != nil {
		return nil, objectError(u, o.Source, err)
	}
	d.force = forceReplace(ann)
	d.lenient = argoSyncOption(ann, "Validate", "false")
	if d.mode, err = applyModeOf(ann); err != nil {
		return nil, objectError(u, o.Source, err)
	}
	d.key = render.KeyOf(u)
	return d, nil
}

// crdKinds maps every kind defined by a CRD in objs (each served version) to
// whether it is namespaced.
func crdKinds(objs []render.Object) map[schema.GroupVersionKind]bool {
	kinds := map[schema.GroupVersionKind]bool{}
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" || o.GroupVersionKind().Group != "apiextensions.k8s.io" {
			continue
		}
		group, _, _ := unstructured.NestedString(o.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
		scope, _, _ := unstructured.NestedString(o.Object, "spec", "scope")
		versions, _, _ := unstructured.NestedSlice(o.Object, "spec", "versions")
		for _, v := range versions {
			vm, _ := v.(map[string]any)
			name, _ := vm["name"].(string)
			kinds[schema.GroupVersionKind{Group: group, Version: name, Kind: kind}] = scope != "Cluster"
		}
	}
	return kinds
}

// foldStringData moves a Secret's stringData into data, as the apiserver
// would, so the desired object compares equal to the live one.
func foldStringData(u *unstructured.Unstructured) error {
	if u.GetKind() != "Secret" || u.GroupVersionKind().Group != "" {
		return nil
	}
	sd, found, err := unstructured.NestedMap(u.Object, "stringData")
	if err != nil || !found {
		return err
	}
	data, _, err := unstructured.NestedMap(u.Object, "data")
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if data == nil {
		data = map[string]any{}
	}
	for k, v := range sd {
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("stringData.%s: not a string", k)
		}
		data[k] = base64.StdEncoding.EncodeToString([]byte(s))
	}
	unstructured.RemoveNestedField(u.Object, "stringData")
	return unstructured.SetNestedMap(u.Object, data, "data")
}

// hashObject fingerprints a desired object. encoding/json sorts map keys, so
// equal objects hash equal.
func hashObject(u *unstructured.Unstructured) (string, error) {
	data, err := json.Marshal(u.Object)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:16]), nil
}
