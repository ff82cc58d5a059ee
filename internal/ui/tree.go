package ui

import (
	"context"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

// treeNode is an object in an app's tree: one the app applies (with its
// sync status), or one a controller made for it (found by owner
// references: Deployment → ReplicaSet → Pod, CronJob → Job → Pod).
type treeNode struct {
	Kind, Namespace, Name string
	Health, Sync, Message string
	// Ref is Kind/namespace/name; Parent is the parent's Ref.
	Ref, Parent string
	// Link is the object's own page (manifest, events, logs, actions).
	Link string
	// Select is the selective sync selector of an object from Git
	// (GROUP:KIND:NAMESPACE/NAME); empty for what the cluster made.
	Select   string
	Children []*treeNode
	More     int
	uid      types.UID
}

// maxChildren bounds the objects shown under one parent.
const maxChildren = 20

// workloadKinds are the kinds whose children the tree shows: what each
// owns, by kind.
var workloadKinds = map[schema.GroupKind][]schema.GroupVersionKind{
	{Group: "apps", Kind: "Deployment"}:  {{Group: "apps", Version: "v1", Kind: "ReplicaSet"}, {Version: "v1", Kind: "Pod"}},
	{Group: "apps", Kind: "StatefulSet"}: {{Version: "v1", Kind: "Pod"}},
	{Group: "apps", Kind: "DaemonSet"}:   {{Version: "v1", Kind: "Pod"}},
	{Group: "apps", Kind: "ReplicaSet"}:  {{Version: "v1", Kind: "Pod"}},
	{Group: "batch", Kind: "Job"}:        {{Version: "v1", Kind: "Pod"}},
	{Group: "batch", Kind: "CronJob"}:    {{Group: "batch", Version: "v1", Kind: "Job"}, {Version: "v1", Kind: "Pod"}},
}

// tree builds app's object tree as the viewer: the app's objects from its
// status, in the order a sync applies them (CRDs first), each workload
// with what its controllers made. note says what could not be shown.
func (u *Server) tree(ctx context.Context, ss *session, app *v1alpha1.Application) ([]*treeNode, string) {
	res := append([]v1alpha1.ResourceStatus(nil), app.Status.Resources...)
	sort.SliceStable(res, func(i, j int) bool {
		a, b := res[i], res[j]
		oa, ob := engine.KindOrder(schema.GroupKind{Group: a.Group, Kind: a.Kind}), engine.KindOrder(schema.GroupKind{Group: b.Group, Kind: b.Kind})
		if oa != ob {
			return oa < ob
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	var notes []string
	nodes := make([]*treeNode, 0, len(res))
	for _, r := range res {
		n := &treeNode{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, Health: string(r.Health), Sync: string(r.Status), Message: r.Message}
		n.Ref = ref(r.Kind, r.Namespace, r.Name)
		n.Link = objectLink(app, r.Group, r.Kind, r.Namespace, r.Name)
		n.Select = engine.ResourceSelector{Group: r.Group, Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}.String()
		nodes = append(nodes, n)
		owns, ok := workloadKinds[schema.GroupKind{Group: r.Group, Kind: r.Kind}]
		if !ok || r.Namespace == "" {
			continue
		}
		if err := u.children(ctx, ss, app, n, schema.GroupVersionKind{Group: r.Group, Version: r.Version, Kind: r.Kind}, owns); err != nil {
			notes = append(notes, err.Error())
		}
	}
	return nodes, strings.Join(dedupe(notes), "; ")
}

// children finds n's children of the kinds in owns (each the owner of the
// next), by listing them with n's selector and matching owner references.
func (u *Server) children(ctx context.Context, ss *session, app *v1alpha1.Application, n *treeNode, gvk schema.GroupVersionKind, owns []schema.GroupVersionKind) error {
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(gvk)
	if err := ss.client.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: n.Name}, live); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return accessNote(err, gvk.Kind, n.Namespace)
	}
	n.uid = live.GetUID()
	var selector *metav1.LabelSelector
	if raw, ok, _ := unstructured.NestedMap(live.Object, "spec", "selector"); ok {
		selector = &metav1.LabelSelector{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, selector); err != nil {
			selector = nil
		}
	}
	parents := []*treeNode{n}
	for _, child := range owns {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(child.GroupVersion().WithKind(child.Kind + "List"))
		opts := []client.ListOption{client.InNamespace(n.Namespace)}
		if selector != nil {
			sel, err := metav1.LabelSelectorAsSelector(selector)
			if err == nil {
				opts = append(opts, client.MatchingLabelsSelector{Selector: sel})
			}
		}
		if err := ss.client.List(ctx, list, opts...); err != nil {
			return accessNote(err, child.Kind, n.Namespace)
		}
		var next []*treeNode
		for _, p := range parents {
			var kids []*treeNode
			for i := range list.Items {
				obj := &list.Items[i]
				if !ownedBy(obj, p.uid) || (child.Kind == "ReplicaSet" && idleReplicaSet(obj)) {
					continue
				}
				h := engine.HealthOf(obj)
				kid := &treeNode{Kind: child.Kind, Namespace: obj.GetNamespace(), Name: obj.GetName(), Health: string(h.Health()), Message: h.Message,
					Ref: ref(child.Kind, obj.GetNamespace(), obj.GetName()), Parent: p.Ref, uid: obj.GetUID(),
					Link: objectLink(app, child.Group, child.Kind, obj.GetNamespace(), obj.GetName())}
				kids = append(kids, kid)
			}
			sort.Slice(kids, func(i, j int) bool { return kids[i].Name < kids[j].Name })
			if len(kids) > maxChildren {
				p.More = len(kids) - maxChildren
				kids = kids[:maxChildren]
			}
			p.Children = kids
			next = append(next, kids...)
		}
		parents = next
	}
	return nil
}

func ownedBy(obj *unstructured.Unstructured, uid types.UID) bool {
	if uid == "" {
		return false
	}
	for _, o := range obj.GetOwnerReferences() {
		if o.UID == uid {
			return true
		}
	}
	return false
}

// idleReplicaSet is an old revision of a Deployment, scaled to zero.
func idleReplicaSet(obj *unstructured.Unstructured) bool {
	replicas, found, _ := unstructured.NestedInt64(obj.Object, "spec", "replicas")
	current, _, _ := unstructured.NestedInt64(obj.Object, "status", "replicas")
	return found && replicas == 0 && current == 0
}

func accessNote(err error, kind, ns string) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("your account may not read %ss in %s, so their children are not shown", kind, ns)
	}
	return fmt.Errorf("children of %ss in %s not shown: %v", kind, ns, err)
}

func ref(kind, ns, name string) string {
	if ns == "" {
		return kind + "/" + name
	}
	return kind + "/" + ns + "/" + name
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
