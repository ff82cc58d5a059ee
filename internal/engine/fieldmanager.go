package engine

import (
	"context"
	"encoding/json"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/util/csaupgrade"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// peerManagers are the field managers whose fields an app takes over the
// first time it applies an object they manage: converge's shared legacy
// manager (every app's, before each had its own), and the controllers of
// the GitOps tools teams move from, Argo CD's (client-side or server-side
// apply) and Flux's. Without the handover, fields they set would never be
// removed when they leave Git: their entries would keep owning them.
// People's managers (kubectl, kubectl-edit, ...) are never taken over.
var peerManagers = map[string]bool{
	FieldManager:           true,
	"argocd-controller":    true,
	"kustomize-controller": true,
	"helm-controller":      true,
}

// handover is what taking over live's peer managers means: the JSON patch
// that gives their fields to own (replacing managedFields, guarded by the
// resourceVersion) and the managers it takes from; nil when live has no
// peer entry, or own has applied it already (an object taken over once is
// left as it is).
func handover(live *unstructured.Unstructured, own string) (patch []byte, from []string, err error) {
	if live == nil {
		return nil, nil, nil
	}
	names := sets.New[string]()
	for _, e := range live.GetManagedFields() {
		if e.Subresource != "" {
			continue
		}
		if e.Manager == own && e.Operation == metav1.ManagedFieldsOperationApply {
			return nil, nil, nil
		}
		if peerManagers[e.Manager] {
			names.Insert(e.Manager)
		}
	}
	if names.Len() == 0 {
		return nil, nil, nil
	}
	// A peer's server-side apply entry is handed over as a client-side
	// one would be: csaupgrade unions its fields into own's Apply entry.
	obj := live.DeepCopy()
	entries := obj.GetManagedFields()
	for i := range entries {
		if entries[i].Subresource == "" && names.Has(entries[i].Manager) {
			entries[i].Operation = metav1.ManagedFieldsOperationUpdate
		}
	}
	obj.SetManagedFields(entries)
	if err := csaupgrade.UpgradeManagedFields(obj, names, own); err != nil {
		return nil, nil, err
	}
	patch, err = jsonPatchManagedFields(obj.GetManagedFields(), live.GetResourceVersion())
	from = sets.List(names)
	sort.Strings(from)
	return patch, from, err
}

// handoverDryRunManager is the manager to dry-run d as, so that the answer
// shows what the apply will do once the fields are handed over: the most
// recent peer that applied the object server-side, else the app's own.
func handoverDryRunManager(live *unstructured.Unstructured, own string) string {
	if live == nil {
		return own
	}
	for _, e := range live.GetManagedFields() {
		if e.Subresource != "" {
			continue
		}
		if e.Manager == own && e.Operation == metav1.ManagedFieldsOperationApply {
			return own
		}
	}
	for _, e := range live.GetManagedFields() {
		if e.Subresource == "" && peerManagers[e.Manager] && e.Operation == metav1.ManagedFieldsOperationApply {
			return e.Manager
		}
	}
	return own
}

// takeOver hands the fields of d's live object's peer managers over to
// d's own manager (see handover) before d is applied.
func (m *Manager) takeOver(ctx context.Context, d *desired) error {
	patch, _, err := handover(d.live, d.manager)
	if err != nil || patch == nil {
		return err
	}
	live := d.live.DeepCopy()
	return m.client.Patch(ctx, live, client.RawPatch(types.JSONPatchType, patch))
}

func handoverReason(from []string) string {
	return "taking over the fields of " + strings.Join(from, ", ")
}

// jsonPatchManagedFields replaces an object's managedFields, failing with a
// conflict when it changed since resourceVersion.
func jsonPatchManagedFields(entries []metav1.ManagedFieldsEntry, resourceVersion string) ([]byte, error) {
	return json.Marshal([]map[string]any{
		{"op": "replace", "path": "/metadata/managedFields", "value": entries},
		{"op": "replace", "path": "/metadata/resourceVersion", "value": resourceVersion},
	})
}
