package ui

import (
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"converge.dev/converge/internal/redact"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/source"
)

// appRow is one Application in the list, and the head of its page.
type appRow struct {
	Namespace, Name           string
	Sync, Health              string
	Revision, ShortRevision   string
	RevisionURL               string
	Author, Subject           string
	LastSync, LastSyncText    string
	Suspended, Pinned         bool
	PinnedTo, Message, Source string
	Search                    string
}

func rowOf(app *v1alpha1.Application, now time.Time) appRow {
	r := appRow{
		Namespace: app.Namespace, Name: app.Name,
		Sync: orUnknown(string(app.Status.Sync.Status)), Health: orUnknown(string(app.Status.Health.Status)),
		Revision: app.Status.Sync.Revision, ShortRevision: source.ShortRevision(app.Status.Sync.Revision),
		Suspended: app.Spec.Suspend, Pinned: app.Spec.Pin != nil,
		Source: sourceText(app),
	}
	r.RevisionURL = commitURL(app.Spec.Source.RepoURL, app.Status.Sync.Revision)
	if c := app.Status.Sync.Commit; c != nil {
		r.Author, r.Subject = c.Author, c.Subject
	}
	if t := app.Status.LastSyncTime; t != nil {
		r.LastSync, r.LastSyncText = t.UTC().Format(time.RFC3339), ago(now, t.Time)
	}
	if app.Spec.Pin != nil {
		r.PinnedTo = source.ShortRevision(app.Spec.Pin.Revision)
	}
	if ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady); ready != nil && ready.Status != "True" {
		r.Message = ready.Message
	}
	r.Search = strings.ToLower(strings.Join([]string{app.Namespace + "/" + app.Name, r.Source, r.Author, r.Subject, r.Revision}, " "))
	return r
}

func orUnknown(s string) string {
	if s == "" {
		return "Unknown"
	}
	return s
}

// sourceText names an app's source for people, without credentials.
func sourceText(app *v1alpha1.Application) string {
	s := app.Spec.Source
	var parts []string
	if s.RepoURL != "" {
		parts = append(parts, redact.URL(s.RepoURL))
	}
	if c := s.Chart; c != nil {
		parts = append(parts, fmt.Sprintf("chart %s %s from %s", c.Name, c.Version, redact.URL(c.RepoURL)))
	}
	return strings.Join(parts, " + ")
}

// counts are the states at the top of the list.
type counts struct {
	All, Synced, OutOfSync, Healthy, Progressing, Degraded, Suspended, Pinned int
}

func countRows(rows []appRow) counts {
	var c counts
	for _, r := range rows {
		c.All++
		switch r.Sync {
		case string(v1alpha1.SyncStatusSynced):
			c.Synced++
		case string(v1alpha1.SyncStatusOutOfSync):
			c.OutOfSync++
		}
		switch r.Health {
		case string(v1alpha1.HealthHealthy):
			c.Healthy++
		case string(v1alpha1.HealthProgressing):
			c.Progressing++
		case string(v1alpha1.HealthDegraded):
			c.Degraded++
		}
		if r.Suspended {
			c.Suspended++
		}
		if r.Pinned {
			c.Pinned++
		}
	}
	return c
}

// filter is the list's filters, from the query string.
type filter struct{ Namespace, Sync, Health, Q string }

func (f filter) match(r appRow) bool {
	return (f.Namespace == "" || r.Namespace == f.Namespace) && (f.Sync == "" || r.Sync == f.Sync) &&
		(f.Health == "" || r.Health == f.Health) && (f.Q == "" || strings.Contains(r.Search, strings.ToLower(f.Q)))
}

type appsView struct {
	Rows                     []rowView
	Counts                   counts
	Namespaces               []string
	SyncStates, HealthStates []string
	Filter                   filter
	Filtered                 bool
}

// rowView is a row as the list renders it: hidden when filtered out (the
// page filters again, as you type, without a request).
type rowView struct {
	appRow
	Hidden bool
}

var (
	syncStates   = []string{"Synced", "OutOfSync", "Unknown"}
	healthStates = []string{"Healthy", "Progressing", "Degraded", "Missing", "Unknown"}
)

// historyRow is one sync in an app's history.
type historyRow struct {
	ID                     int64
	Finished, FinishedText string
	Mode, Duration         string
	Short, RevisionURL     string
	Author, Subject        string
	Signer, Trigger        string
	Result, Error          string
	Counts                 string
	Changed                []string
	More                   int
	Hooks                  []string
}

func historyRows(app *v1alpha1.Application, h *engine.History, now time.Time) []historyRow {
	out := make([]historyRow, 0, len(h.Entries))
	for _, e := range h.Entries {
		r := historyRow{
			ID: e.ID, Finished: e.FinishedAt.UTC().Format(time.RFC3339), FinishedText: ago(now, e.FinishedAt),
			Mode: e.Mode, Duration: e.Duration().Round(time.Millisecond).String(),
			Short: source.ShortRevision(e.Revision), RevisionURL: commitURL(app.Spec.Source.RepoURL, e.Revision),
			Trigger: e.Trigger.String(), Result: e.Result, Error: e.Error,
			Counts:  fmt.Sprintf("%d created, %d configured, %d deleted", e.Counts.Created, e.Counts.Configured, e.Counts.Deleted),
			Changed: e.Changed, More: e.ChangedTotal - len(e.Changed),
		}
		if c := e.Commit; c != nil {
			r.Author, r.Subject = c.Author, c.Subject
			if c.AuthorEmail != "" {
				r.Author += " <" + c.AuthorEmail + ">"
			}
		}
		if s := e.Signer; s != nil {
			r.Signer = strings.TrimSpace(s.Identity + " " + s.Fingerprint)
		}
		for _, hk := range e.Hooks {
			r.Hooks = append(r.Hooks, hk.String())
		}
		out = append(out, r)
	}
	return out
}

// actionRow is one action taken through converge.
type actionRow struct {
	Time, TimeText, User, Action, Detail string
}

func actionRows(h *engine.History, now time.Time) []actionRow {
	out := make([]actionRow, 0, len(h.Actions))
	for _, a := range h.Actions {
		out = append(out, actionRow{Time: a.Time.UTC().Format(time.RFC3339), TimeText: ago(now, a.Time), User: a.User, Action: a.Action, Detail: a.Detail})
	}
	return out
}

// rollbackTarget is a history entry the app can be rolled back or pinned
// to: a successful sync of a revision other than the current one.
type rollbackTarget struct {
	ID             int64
	Short, Subject string
}

func rollbackTargets(app *v1alpha1.Application, h *engine.History) []rollbackTarget {
	var out []rollbackTarget
	seen := map[string]bool{app.Status.Sync.Revision: true}
	for _, e := range h.Entries {
		if e.Result != engine.ResultSucceeded || e.Revision == "" || seen[e.Revision] || strings.Contains(e.Revision, "-dirty") {
			continue
		}
		seen[e.Revision] = true
		t := rollbackTarget{ID: e.ID, Short: source.ShortRevision(e.Revision)}
		if e.Commit != nil {
			t.Subject = e.Commit.Subject
		}
		out = append(out, t)
	}
	return out
}

// eventRow is one recent event about an app.
type eventRow struct {
	Time, TimeText, Type, Reason, Message string
	Count                                 int32
}

func eventRows(events []corev1.Event, now time.Time, limit int) []eventRow {
	when := func(e corev1.Event) time.Time {
		switch {
		case !e.EventTime.IsZero():
			return e.EventTime.Time
		case !e.LastTimestamp.IsZero():
			return e.LastTimestamp.Time
		}
		return e.CreationTimestamp.Time
	}
	sort.SliceStable(events, func(i, j int) bool { return when(events[i]).After(when(events[j])) })
	if len(events) > limit {
		events = events[:limit]
	}
	out := make([]eventRow, 0, len(events))
	for _, e := range events {
		t := when(e)
		out = append(out, eventRow{Time: t.UTC().Format(time.RFC3339), TimeText: ago(now, t), Type: e.Type, Reason: e.Reason, Message: e.Message, Count: max(e.Count, 1)})
	}
	return out
}

// ago says how long ago t was, for people.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.UTC().Format("2006-01-02")
}

var (
	scpLike = regexp.MustCompile(`^(?:[\w.-]+@)?([\w.-]+):([\w./-]+?)(?:\.git)?/?$`)
	sha     = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?`)
)

// commitURL links a commit to the repository's web view, for the forges
// whose layout is known (GitHub, GitLab, Gitea/Forgejo, Bitbucket); ""
// when the URL does not allow it. The revision may carry a chart digest
// after the commit ("<sha>+sha256:...").
func commitURL(repoURL, revision string) string {
	commit := sha.FindString(revision)
	if repoURL == "" || commit == "" {
		return ""
	}
	var host, path string
	if u, err := url.Parse(repoURL); err == nil && u.Scheme != "" && u.Host != "" {
		if u.Scheme != "https" && u.Scheme != "ssh" && u.Scheme != "http" {
			return ""
		}
		host, path = u.Hostname(), u.Path
		if u.Scheme == "http" {
			return ""
		}
	} else if m := scpLike.FindStringSubmatch(repoURL); m != nil {
		host, path = m[1], "/"+m[2]
	} else {
		return ""
	}
	path = strings.TrimSuffix(strings.TrimSuffix(path, "/"), ".git")
	if strings.Count(path, "/") < 2 || strings.ContainsAny(path, "?#") {
		return ""
	}
	base := "https://" + host + path
	switch h := strings.ToLower(host); {
	case h == "github.com" || strings.HasPrefix(h, "github."):
		return base + "/commit/" + commit
	case h == "gitlab.com" || strings.HasPrefix(h, "gitlab."):
		return base + "/-/commit/" + commit
	case h == "bitbucket.org":
		return base + "/commits/" + commit
	case h == "codeberg.org" || strings.HasPrefix(h, "gitea.") || strings.HasPrefix(h, "forgejo."):
		return base + "/commit/" + commit
	}
	return ""
}
