package engine

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/render"
)

// Record labels: every ConfigMap converge keeps about an app carries both.
const (
	LabelRecord     = "converge.dev/record"
	RecordInventory = "inventory"
	inventoryKey    = "inventory.json.gz"
)

// Entry is what the inventory remembers of one object: where it is, the
// hash of its desired state as last applied, and the resourceVersion that
// apply returned.
type Entry struct {
	Group           string `json:"g,omitempty"`
	Version         string `json:"v"`
	Kind            string `json:"k"`
	Namespace       string `json:"ns,omitempty"`
	Name            string `json:"n"`
	Hash            string `json:"h"`
	ResourceVersion string `json:"rv"`
}

func (e Entry) key() render.Key {
	return render.Key{Group: e.Group, Kind: e.Kind, Namespace: e.Namespace, Name: e.Name}
}

func (e Entry) gvk() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: e.Group, Version: e.Version, Kind: e.Kind}
}

// Inventory is the set of objects an app owns, as of its last sync.
type Inventory struct {
	// Revision is the source revision of the last sync, when known.
	Revision string               `json:"revision,omitempty"`
	Entries  map[render.Key]Entry `json:"-"`
	// ResourceVersion is its ConfigMap's, as last read or written ("":
	// there is none).
	ResourceVersion string `json:"-"`
}

type inventoryJSON struct {
	Revision string  `json:"revision,omitempty"`
	Entries  []Entry `json:"entries"`
}

// InventoryName is the name of the ConfigMap holding app's inventory.
func InventoryName(app string) string { return "converge-app-" + app }

// records is where app records are kept: c, or the cluster m acts on.
func (m *Manager) records(c client.Client) client.Client {
	if c != nil {
		return c
	}
	return m.client
}

// loadInventory reads app's inventory from records (see
// PlanOptions.Records); a missing record is an empty one.
func (m *Manager) loadInventory(ctx context.Context, records client.Client, app App) (*Inventory, bool, error) {
	var cm corev1.ConfigMap
	err := m.records(records).Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: InventoryName(app.Name)}, &cm)
	if apierrors.IsNotFound(err) {
		return &Inventory{Entries: map[render.Key]Entry{}}, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading inventory of %s: %w", app, err)
	}
	inv, err := decodeInventory(cm.BinaryData[inventoryKey])
	if err != nil {
		return nil, false, fmt.Errorf("inventory of %s (ConfigMap %s/%s) is corrupt: %w", app, cm.Namespace, cm.Name, err)
	}
	inv.ResourceVersion = cm.ResourceVersion
	return inv, true, nil
}

// Inventory returns app's inventory: what it owns as of its last sync.
func (m *Manager) Inventory(ctx context.Context, app App) (*Inventory, error) {
	inv, _, err := m.loadInventory(ctx, nil, app)
	return inv, err
}

// InventoryIn is Inventory kept in records (PlanOptions.Records).
func (m *Manager) InventoryIn(ctx context.Context, records client.Client, app App) (*Inventory, error) {
	inv, _, err := m.loadInventory(ctx, records, app)
	return inv, err
}

// Kinds are the kinds of the inventory's objects.
func (inv *Inventory) Kinds() []schema.GroupVersionKind {
	seen := map[schema.GroupVersionKind]bool{}
	var out []schema.GroupVersionKind
	for _, e := range inv.Entries {
		if gvk := e.gvk(); !seen[gvk] {
			seen[gvk] = true
			out = append(out, gvk)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Versions are the resourceVersions the inventory's objects were left
// at, by "namespace/name" per kind: what Unchanged compares.
func (inv *Inventory) Versions() map[schema.GroupVersionKind]map[string]string {
	out := map[schema.GroupVersionKind]map[string]string{}
	for _, e := range inv.Entries {
		gvk := e.gvk()
		if out[gvk] == nil {
			out[gvk] = map[string]string{}
		}
		out[gvk][e.Namespace+"/"+e.Name] = e.ResourceVersion
	}
	return out
}

// Unchanged reports whether live, the resourceVersions of the app's
// owned objects by "namespace/name" per kind, are exactly the objects the
// inventory holds at the versions its last sync left them.
func (inv *Inventory) Unchanged(live map[schema.GroupVersionKind]map[string]string) bool {
	n := 0
	for _, e := range inv.Entries {
		rv, ok := live[e.gvk()][e.Namespace+"/"+e.Name]
		if !ok || rv != e.ResourceVersion {
			return false
		}
		n++
	}
	total := 0
	for _, objs := range live {
		total += len(objs)
	}
	return n == total
}

// saveInventory writes inv as app's record with server-side apply.
func (m *Manager) saveInventory(ctx context.Context, records client.Client, app App, inv *Inventory) error {
	data, err := encodeInventory(inv)
	if err != nil {
		return err
	}
	cm := corev1ac.ConfigMap(InventoryName(app.Name), app.Namespace).
		WithLabels(map[string]string{LabelRecord: RecordInventory, LabelApp: app.Name}).
		WithBinaryData(map[string][]byte{inventoryKey: data})
	if err := m.records(records).Apply(ctx, cm, client.FieldOwner(app.FieldManager()), client.ForceOwnership); err != nil {
		return fmt.Errorf("writing inventory of %s: %w", app, err)
	}
	if cm.ResourceVersion != nil {
		inv.ResourceVersion = *cm.ResourceVersion
	}
	return nil
}

func encodeInventory(inv *Inventory) ([]byte, error) {
	out := inventoryJSON{Revision: inv.Revision, Entries: make([]Entry, 0, len(inv.Entries))}
	for _, e := range inv.Entries {
		out.Entries = append(out.Entries, e)
	}
	sort.Slice(out.Entries, func(i, j int) bool { return out.Entries[i].key().String() < out.Entries[j].key().String() })
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.ModTime = time.Time{}
	if _, err := zw.Write(raw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decodeInventory(data []byte) (*Inventory, error) {
	inv := &Inventory{Entries: map[render.Key]Entry{}}
	if len(data) == 0 {
		return inv, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		return nil, err
	}
	var in inventoryJSON
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, err
	}
	inv.Revision = in.Revision
	for _, e := range in.Entries {
		inv.Entries[e.key()] = e
	}
	return inv, nil
}

// recordSync writes the inventory after a sync: every desired object that
// was applied (with the new resourceVersion) or found unchanged, every
// previously owned object that is still there (not pruned, or pruning
// failed). Objects kept by converge.dev/prune: "false" leave the inventory.
// Nothing is written when the inventory is as it was. It returns the
// inventory as the sync left it (nil: there is none).
func (m *Manager) recordSync(ctx context.Context, p *Plan, applied *appliedSet, deleted []*unstructured.Unstructured) (*Inventory, error) {
	prev := p.inventory
	next := &Inventory{Revision: prev.Revision, Entries: make(map[render.Key]Entry, len(p.objects))}
	if p.opts.Revision != "" && len(p.opts.Only) == 0 {
		// A selective sync applied part of the revision: the record
		// keeps the one it had.
		next.Revision = p.opts.Revision
	}
	desiredKeys := make(map[render.Key]bool, len(p.objects))
	for _, d := range p.objects {
		desiredKeys[d.key] = true
		old, had := prev.Entries[d.key]
		e := Entry{Group: d.gvk.Group, Version: d.gvk.Version, Kind: d.gvk.Kind, Namespace: d.obj.GetNamespace(), Name: d.obj.GetName(), Hash: d.hash}
		switch rv, ok := applied.rv[d.key]; {
		case ok:
			e.ResourceVersion = rv
		case d.action == ActionUnchanged && had && old.Hash == d.hash:
			e = old
		case d.action == ActionUnchanged && d.live != nil:
			e.ResourceVersion = d.live.GetResourceVersion()
		case had:
			e = old // not applied this time: the cluster still has the old state
		default:
			continue
		}
		next.Entries[d.key] = e
	}
	gone := map[render.Key]bool{}
	for _, u := range deleted {
		gone[render.KeyOf(u)] = true
	}
	for k, live := range p.live {
		if !desiredKeys[k] && keep(live.GetAnnotations(), p.opts.AppDeleted) != "" {
			gone[k] = true // kept, and no longer the app's
		}
	}
	for k, e := range prev.Entries {
		if !desiredKeys[k] && !gone[k] && p.live[k] != nil {
			next.Entries[k] = e
		}
	}
	if p.hadInventory && next.Revision == prev.Revision && maps.Equal(next.Entries, prev.Entries) {
		return prev, nil
	}
	if !p.hadInventory && len(next.Entries) == 0 {
		return nil, nil
	}
	if err := m.saveInventory(ctx, p.opts.Records, p.opts.App, next); err != nil {
		return nil, err
	}
	return next, nil
}

func groupOf(apiVersion string) string {
	for i := 0; i < len(apiVersion); i++ {
		if apiVersion[i] == '/' {
			return apiVersion[:i]
		}
	}
	return ""
}
