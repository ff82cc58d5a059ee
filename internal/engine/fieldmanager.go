package engine

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// migrateManager hands the fields that the shared legacy manager
// ("converge.dev", used by every app before each had its own) applied on
// d's live object over to d's own manager, by renaming that managedFields
// entry. Without it, fields the old manager set would never be removed
// when they leave Git: the old entry would keep owning them. The patch
// tests the entry first, so it never renames anything it did not read.
// Objects without the legacy entry cost nothing.
func (m *Manager) migrateManager(ctx context.Context, d *desired) error {
	if i := legacyManagerEntry(d.live, d.manager); i >= 0 {
		path := fmt.Sprintf("/metadata/managedFields/%d/manager", i)
		patch, err := json.Marshal([]map[string]string{
			{"op": "test", "path": path, "value": FieldManager},
			{"op": "replace", "path": path, "value": d.manager},
		})
		if err != nil {
			return err
		}
		live := d.live.DeepCopy()
		return m.client.Patch(ctx, live, client.RawPatch(types.JSONPatchType, patch))
	}
	return nil
}

// legacyManagerEntry is the index of live's managedFields entry applied by
// the shared legacy manager, or -1 when there is none or when the app's
// own manager has an entry already (an object in the middle of a
// migration is left as it is).
func legacyManagerEntry(live *unstructured.Unstructured, own string) int {
	if live == nil {
		return -1
	}
	legacy := -1
	for i, e := range live.GetManagedFields() {
		switch {
		case e.Manager == own:
			return -1
		case e.Manager == FieldManager && e.Operation == "Apply":
			legacy = i
		}
	}
	return legacy
}
