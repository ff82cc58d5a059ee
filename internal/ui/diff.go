package ui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/preview"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/source"
)

// diffView is an app's diff: each object that would change, with its
// unified diff (Secret values already masked by the engine).
type diffView struct {
	Summary string
	Objects []diffObject
}

type diffObject struct {
	Action, Ref, Reason string
	Open                bool
	Lines               []diffLine
}

type diffLine struct{ Class, Text string }

// previewSlots bounds the diffs computed at once: each fetches and renders.
var previewSlots = make(chan struct{}, 2)

// appDiff compares the app's source with the cluster, as the viewer: the
// same fetch, render and dry-run plan as `converge diff APP`.
func (u *Server) appDiff(w http.ResponseWriter, r *http.Request, ss *session) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	v, err := u.diff(ctx, ss, r.PathValue("ns"), r.PathValue("name"))
	if err != nil {
		v = &diffView{Summary: "The comparison failed: " + viewerMessage(err)}
	}
	u.renderTemplate(w, http.StatusOK, "app", "diff", pageData{Data: v})
}

func (u *Server) diff(ctx context.Context, ss *session, ns, name string) (*diffView, error) {
	if u.Previewer == nil {
		return nil, errors.New("this server does not compute diffs")
	}
	app := &v1alpha1.Application{}
	if err := ss.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
		return nil, err
	}
	m, err := ss.manager()
	if err != nil {
		return nil, err
	}
	if !ss.previews.Allow() {
		return nil, errors.New("too many comparisons: a session may ask for one every 2 seconds (10 at once); try again shortly")
	}
	select {
	case previewSlots <- struct{}{}:
		defer func() { <-previewSlots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res, err := u.Previewer.Preview(ctx, preview.Request{Config: ss.cfg, Client: ss.client, App: app, Engine: m})
	if err != nil {
		if errors.Is(err, engine.ErrEmptyRender) && res != nil {
			return nil, fmt.Errorf("the source renders no objects at %s", source.ShortRevision(res.Revision))
		}
		return nil, err
	}
	cs := &res.Plan.ChangeSet
	c := cs.Counts()
	v := &diffView{Summary: fmt.Sprintf("At %s: %d to create, %d to configure, %d to delete, %d unchanged.",
		source.ShortRevision(res.Revision), c.Created, c.Configured, c.Deleted, c.Unchanged)}
	if n := res.Plan.Hooks(); n > 0 {
		v.Summary += fmt.Sprintf(" %d hook(s) not compared: they run during a sync.", n)
	}
	for _, ch := range cs.Changes {
		switch ch.Action {
		case engine.ActionCreated, engine.ActionConfigured, engine.ActionDeleted, engine.ActionFailed:
		default:
			continue
		}
		o := diffObject{Action: string(ch.Action), Ref: ch.Ref, Reason: redact.Message(ch.Reason), Open: len(cs.Changes) <= 10}
		for _, line := range strings.Split(strings.TrimRight(ch.Diff, "\n"), "\n") {
			if line == "" && ch.Diff == "" {
				continue
			}
			o.Lines = append(o.Lines, diffLine{Class: lineClass(line), Text: line})
		}
		v.Objects = append(v.Objects, o)
	}
	return v, nil
}

func lineClass(line string) string {
	switch {
	case strings.HasPrefix(line, "+++"), strings.HasPrefix(line, "---"):
		return "file"
	case strings.HasPrefix(line, "+"):
		return "add"
	case strings.HasPrefix(line, "-"):
		return "del"
	case strings.HasPrefix(line, "@@"):
		return "hunk"
	}
	return ""
}
