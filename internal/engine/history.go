package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/source"
)

// The history record: one ConfigMap per app, next to the inventory, holding
// the last syncs and the last actions taken through converge. Push and pull
// write the same record (docs/design/records.md).
const (
	RecordHistory = "history"
	historyKey    = "history.json"
	// DefaultHistoryLimit is how many syncs (and, separately, actions)
	// the record keeps per app.
	DefaultHistoryLimit = 20
	// maxChangedRefs bounds the objects listed per entry; ChangedTotal
	// keeps the real count.
	maxChangedRefs = 100
)

// Triggers: why a sync ran.
const (
	TriggerInterval = "interval"
	TriggerWebhook  = "webhook"
	TriggerDrift    = "drift"
	TriggerRollback = "rollback"
	// TriggerManual is a person's doing: a sync request, a push-mode
	// sync, or a change to the Application itself (its creation or spec).
	TriggerManual = "manual"
	// TriggerDeletion is the Application's own deletion: its objects
	// deleted, those marked to outlive it kept.
	TriggerDeletion = "deletion"
	// TriggerImageAutomation is a commit an ImageUpdateAutomation pushed;
	// Detail names it, its policies and their old and new tags.
	TriggerImageAutomation = "image-automation"
)

// Sync results.
const (
	ResultSucceeded = "Succeeded"
	ResultFailed    = "Failed"
	// ResultOutOfSync is a check that found differences and, automated
	// sync being off, applied nothing.
	ResultOutOfSync = "OutOfSync"
)

// HistoryEntry is one sync.
type HistoryEntry struct {
	// ID increases by one per sync of the app; rollback accepts it.
	ID       int64  `json:"id"`
	Revision string `json:"revision,omitempty"`
	// Ref is the ref the revision was resolved from (refs/heads/main).
	Ref     string             `json:"ref,omitempty"`
	Commit  *source.CommitInfo `json:"commit,omitempty"`
	Signer  *source.Signer     `json:"signer,omitempty"`
	Trigger Trigger            `json:"trigger"`
	// Mode is "pull" (the agent) or "push" (the CLI).
	Mode string `json:"mode"`
	// Cluster names the Cluster the sync went to; empty: the
	// Application's own.
	Cluster    string    `json:"cluster,omitempty"`
	Result     string    `json:"result"`
	Error      string    `json:"error,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
	Counts     Counts    `json:"counts"`
	// Changed lists the objects created, configured or deleted
	// ("deleted Kind/ns/name"), at most 100; ChangedTotal counts them all.
	Changed      []string `json:"changed,omitempty"`
	ChangedTotal int      `json:"changedTotal,omitempty"`
	// Kept lists the owned objects left in place instead of deleted, each
	// with the annotation that kept it ("ConfigMap/ns/data (Delete=false)"),
	// at most 100.
	Kept []string `json:"kept,omitempty"`
	// Hooks are the hooks the sync ran, with their outcomes.
	Hooks []HookResult `json:"hooks,omitempty"`
}

// Duration is how long the sync took.
func (e HistoryEntry) Duration() time.Duration { return e.FinishedAt.Sub(e.StartedAt) }

// Trigger says why a sync ran and, when a person asked, who.
type Trigger struct {
	Type string `json:"type"`
	User string `json:"user,omitempty"`
	// Detail says more of an automated trigger (an image automation's
	// changes).
	Detail string `json:"detail,omitempty"`
}

func (t Trigger) String() string {
	switch {
	case t.User != "":
		return t.Type + " (" + t.User + ")"
	case t.Detail != "":
		return t.Type + " (" + t.Detail + ")"
	}
	return t.Type
}

// ActionEntry is one mutating action taken through converge.
type ActionEntry struct {
	Time time.Time `json:"time"`
	// User is the Kubernetes identity that acted, as the apiserver
	// reported it to the client.
	User   string `json:"user"`
	Action string `json:"action"`
	Detail string `json:"detail,omitempty"`
}

// History is an app's record of syncs and actions, newest first.
type History struct {
	Entries []HistoryEntry `json:"entries"`
	Actions []ActionEntry  `json:"actions,omitempty"`
}

// Find returns the entry with id, or the newest entry whose revision is or
// starts with rev.
func (h *History) Find(idOrRevision string) (HistoryEntry, bool) {
	for _, e := range h.Entries {
		if fmt.Sprint(e.ID) == idOrRevision {
			return e, true
		}
	}
	if len(idOrRevision) >= 7 {
		for _, e := range h.Entries {
			if len(e.Revision) >= len(idOrRevision) && e.Revision[:len(idOrRevision)] == idOrRevision {
				return e, true
			}
		}
	}
	return HistoryEntry{}, false
}

// HistoryName is the name of the ConfigMap holding app's history.
func HistoryName(app string) string { return "converge-history-" + app }

// NewHistoryEntry fills an entry's result from a sync's change set and error.
func NewHistoryEntry(cs *ChangeSet, err error, applied bool) HistoryEntry {
	e := HistoryEntry{Result: ResultSucceeded}
	if cs != nil {
		e.Counts = cs.Counts()
		for _, c := range cs.Changes {
			switch c.Action {
			case ActionCreated, ActionConfigured, ActionDeleted, ActionFailed:
				e.ChangedTotal++
				if len(e.Changed) < maxChangedRefs {
					e.Changed = append(e.Changed, string(c.Action)+" "+c.Ref)
				}
			case ActionSkipped:
				if c.Kept != "" && len(e.Kept) < maxChangedRefs {
					e.Kept = append(e.Kept, c.Ref+" ("+c.Kept+")")
				}
			}
		}
	}
	switch {
	case err != nil:
		e.Result, e.Error = ResultFailed, redact.Error(err)
	case !applied && cs != nil && cs.HasChanges():
		e.Result = ResultOutOfSync
	}
	return e
}

// LoadHistory reads app's history; a missing record is an empty history.
func LoadHistory(ctx context.Context, c client.Reader, app App) (*History, error) {
	var cm corev1.ConfigMap
	err := c.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: HistoryName(app.Name)}, &cm)
	if apierrors.IsNotFound(err) {
		return &History{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the history of %s: %w", app, err)
	}
	return decodeHistory(app, &cm)
}

func decodeHistory(app App, cm *corev1.ConfigMap) (*History, error) {
	h := &History{}
	if raw := cm.Data[historyKey]; raw != "" {
		if err := json.Unmarshal([]byte(raw), h); err != nil {
			return nil, fmt.Errorf("history of %s (ConfigMap %s/%s) is corrupt: %w", app, cm.Namespace, cm.Name, err)
		}
	}
	return h, nil
}

// AppendHistory records a sync as the newest entry, giving it the next id,
// and keeps at most limit entries (DefaultHistoryLimit when limit <= 0).
// A failure identical to the newest entry (same revision and error) is the
// same failure retried: it is not recorded again, so retries neither flood
// the record nor write to it.
func AppendHistory(ctx context.Context, c client.Client, app App, e HistoryEntry, limit int) (HistoryEntry, error) {
	return appendHistory(ctx, c, app, e, limit, recordMayExist)
}

// recordState is what is known of an app's history record before it is
// written.
type recordState int

const (
	// recordMayExist: read it, then update or create it.
	recordMayExist recordState = iota
	// recordLikelyNew: the app's first sync; create it without reading
	// (a conflict reads it after all).
	recordLikelyNew
)

// appendHistory is AppendHistory, told what is known of the record.
func appendHistory(ctx context.Context, c client.Client, app App, e HistoryEntry, limit int, state recordState) (HistoryEntry, error) {
	if limit <= 0 {
		limit = DefaultHistoryLimit
	}
	err := updateHistory(ctx, c, app, state, func(h *History) bool {
		if len(h.Entries) > 0 {
			last := &h.Entries[0]
			if e.Result == ResultFailed && last.Result == ResultFailed && last.Revision == e.Revision && last.Error == e.Error {
				e = *last
				return false
			}
			e.ID = last.ID + 1
		} else {
			e.ID = 1
		}
		h.Entries = append([]HistoryEntry{e}, h.Entries...)
		if len(h.Entries) > limit {
			h.Entries = h.Entries[:limit]
		}
		return true
	})
	return e, err
}

// RecordAction adds an action to app's history, keeping the newest limit.
func RecordAction(ctx context.Context, c client.Client, app App, a ActionEntry, limit int) error {
	if limit <= 0 {
		limit = DefaultHistoryLimit
	}
	if a.Time.IsZero() {
		a.Time = time.Now().UTC()
	}
	return updateHistory(ctx, c, app, recordMayExist, func(h *History) bool {
		h.Actions = append([]ActionEntry{a}, h.Actions...)
		sort.SliceStable(h.Actions, func(i, j int) bool { return h.Actions[i].Time.After(h.Actions[j].Time) })
		if len(h.Actions) > limit {
			h.Actions = h.Actions[:limit]
		}
		return true
	})
}

// updateHistory reads, changes and writes the record with optimistic
// concurrency: the agent and CLI users write it concurrently. mutate says
// whether it changed anything; if not, nothing is written. A record
// likely new is created without reading it first; if it exists after all,
// the next attempt reads it.
func updateHistory(ctx context.Context, c client.Client, app App, state recordState, mutate func(*History) bool) error {
	// Jittered, and patient enough for a dozen writers at once.
	backoff := wait.Backoff{Steps: 30, Duration: 10 * time.Millisecond, Factor: 1.3, Jitter: 1, Cap: time.Second}
	err := retry.RetryOnConflict(backoff, func() error {
		var cm corev1.ConfigMap
		var err error
		if state == recordLikelyNew {
			state, err = recordMayExist, apierrors.NewNotFound(corev1.Resource("configmaps"), HistoryName(app.Name))
		} else {
			err = c.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: HistoryName(app.Name)}, &cm)
		}
		exists := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		h := &History{}
		if exists {
			if h, err = decodeHistory(app, &cm); err != nil {
				// A corrupt record is replaced rather than blocking syncs.
				h = &History{}
			}
		}
		if !mutate(h) {
			return nil
		}
		raw, err := json.MarshalIndent(h, "", " ")
		if err != nil {
			return err
		}
		cm.Namespace, cm.Name = app.Namespace, HistoryName(app.Name)
		if cm.Labels == nil {
			cm.Labels = map[string]string{}
		}
		cm.Labels[LabelRecord] = RecordHistory
		cm.Labels[LabelApp] = app.Name
		cm.Data = map[string]string{historyKey: string(raw)}
		if exists {
			return c.Update(ctx, &cm, client.FieldOwner(FieldManager))
		}
		err = c.Create(ctx, &cm, client.FieldOwner(FieldManager))
		if apierrors.IsAlreadyExists(err) {
			return apierrors.NewConflict(corev1.Resource("configmaps"), cm.Name, err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("writing the history of %s: %w", app, err)
	}
	return nil
}
