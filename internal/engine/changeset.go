package engine

import (
	"fmt"
	"sort"
	"strings"

	"converge.dev/converge/internal/render"
)

// Action is what a sync does (or would do) to one object.
type Action string

// Actions, in the vocabulary of `converge diff` and `converge sync`.
const (
	ActionCreated    Action = "created"
	ActionConfigured Action = "configured"
	ActionUnchanged  Action = "unchanged"
	ActionDeleted    Action = "deleted"
	ActionSkipped    Action = "skipped"
	ActionFailed     Action = "failed"
)

// Change is the plan or the outcome for one object.
type Change struct {
	// Ref is "Kind/namespace/name".
	Ref string `json:"ref"`
	// APIVersion, Kind, Namespace and Name identify the object.
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Action     Action `json:"action"`
	// Reason says why an object was skipped or failed, or that it was
	// replaced (deleted and created again for an immutable field).
	Reason string `json:"reason,omitempty"`
	// Kept, for an owned object left in place instead of deleted, is the
	// annotation that kept it (Prune=false, Delete=false, keep...).
	Kept string `json:"kept,omitempty"`
	// Source is the file the object came from (empty for deletions).
	Source string `json:"source,omitempty"`
	// Diff is a unified diff from the live object to the desired one, with
	// Secret values masked. Only for created, configured and deleted.
	Diff string `json:"diff,omitempty"`
	// Wave is the sync wave the object belongs to.
	Wave int `json:"wave"`
}

// ChangeSet is the result of a plan or a sync, sorted by ref.
type ChangeSet struct {
	Changes []Change `json:"changes"`
	// Health, in the change set Apply returns, is each object's health
	// right after the sync; a plan's change set leaves it empty.
	Health []ObjectHealth `json:"-"`
	// Inventory, in the change set Apply returns, is the app's record as
	// the sync left it (nil: none was written or it could not be).
	Inventory *Inventory `json:"-"`
}

// reasonNotSelected starts the reason of a change a selective sync left
// out.
const reasonNotSelected = "not selected"

// HasUnselected reports whether a selective sync left out a change: the
// cluster still differs from the source there.
func (cs *ChangeSet) HasUnselected() bool {
	if cs == nil {
		return false
	}
	for _, c := range cs.Changes {
		if c.Action == ActionSkipped && strings.HasPrefix(c.Reason, reasonNotSelected) {
			return true
		}
	}
	return false
}

// Counts tallies a change set by action.
type Counts struct {
	Created    int `json:"created"`
	Configured int `json:"configured"`
	Unchanged  int `json:"unchanged"`
	Deleted    int `json:"deleted"`
	Skipped    int `json:"skipped"`
	Failed     int `json:"failed"`
}

// Counts tallies the set.
func (cs *ChangeSet) Counts() Counts {
	var c Counts
	for _, ch := range cs.Changes {
		switch ch.Action {
		case ActionCreated:
			c.Created++
		case ActionConfigured:
			c.Configured++
		case ActionUnchanged:
			c.Unchanged++
		case ActionDeleted:
			c.Deleted++
		case ActionSkipped:
			c.Skipped++
		case ActionFailed:
			c.Failed++
		}
	}
	return c
}

// HasChanges reports whether anything was (or would be) created, configured
// or deleted.
func (cs *ChangeSet) HasChanges() bool {
	c := cs.Counts()
	return c.Created+c.Configured+c.Deleted > 0
}

func (c Counts) String() string {
	parts := []string{
		fmt.Sprintf("%d created", c.Created),
		fmt.Sprintf("%d configured", c.Configured),
		fmt.Sprintf("%d unchanged", c.Unchanged),
		fmt.Sprintf("%d deleted", c.Deleted),
	}
	if c.Skipped > 0 {
		parts = append(parts, fmt.Sprintf("%d skipped", c.Skipped))
	}
	if c.Failed > 0 {
		parts = append(parts, fmt.Sprintf("%d failed", c.Failed))
	}
	return strings.Join(parts, ", ")
}

func (cs *ChangeSet) add(c Change) { cs.Changes = append(cs.Changes, c) }

func (cs *ChangeSet) sort() {
	sort.SliceStable(cs.Changes, func(i, j int) bool { return cs.Changes[i].Ref < cs.Changes[j].Ref })
}

func changeFor(o *desired, action Action) Change {
	return Change{
		Ref:        render.Ref(o.obj),
		APIVersion: o.obj.GetAPIVersion(),
		Kind:       o.obj.GetKind(),
		Namespace:  o.obj.GetNamespace(),
		Name:       o.obj.GetName(),
		Action:     action,
		Source:     o.source,
		Wave:       o.wave,
	}
}

// result is the change set of a plan's objects and deletions, or of a
// sync once applied is known: objects whose apply failed are marked
// failed, and when the sync stopped early (err), those it did not reach are
// marked skipped.
func result(objects []*desired, pruneChanges []Change, applied *appliedSet, err error) *ChangeSet {
	cs := &ChangeSet{}
	for _, d := range objects {
		c := changeFor(d, d.action)
		c.Reason, c.Diff = d.reason, d.diff
		if applied != nil && (d.action == ActionCreated || d.action == ActionConfigured) {
			if ferr, failed := applied.failed[d.key]; failed {
				c.Action, c.Reason = ActionFailed, ferr.Error()
			} else if _, ok := applied.rv[d.key]; !ok && err != nil {
				c.Action, c.Reason = ActionSkipped, "not applied: the sync stopped before it"
			}
		}
		cs.add(c)
	}
	for _, c := range pruneChanges {
		cs.add(c)
	}
	cs.sort()
	return cs
}
