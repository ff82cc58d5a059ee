package engine

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"converge.dev/converge/internal/render"
)

func TestInventoryUnchanged(t *testing.T) {
	cm := schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
	dep := schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	inv := &Inventory{Entries: map[render.Key]Entry{}}
	for _, e := range []Entry{
		{Version: "v1", Kind: "ConfigMap", Namespace: "a", Name: "x", ResourceVersion: "10"},
		{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "a", Name: "web", ResourceVersion: "12"},
	} {
		inv.Entries[e.key()] = e
	}
	if got := inv.Kinds(); len(got) != 2 || got[0] != cm || got[1] != dep {
		t.Fatalf("kinds %v", got)
	}
	same := map[schema.GroupVersionKind]map[string]string{cm: {"a/x": "10"}, dep: {"a/web": "12"}}
	if !inv.Unchanged(same) {
		t.Error("the objects as the sync left them count as changed")
	}
	for name, live := range map[string]map[schema.GroupVersionKind]map[string]string{
		"edited":  {cm: {"a/x": "11"}, dep: {"a/web": "12"}},
		"deleted": {cm: {}, dep: {"a/web": "12"}},
		"added":   {cm: {"a/x": "10", "a/y": "3"}, dep: {"a/web": "12"}},
	} {
		if inv.Unchanged(live) {
			t.Errorf("%s: counted as unchanged", name)
		}
	}
}
