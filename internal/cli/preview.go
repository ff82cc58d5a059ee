package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/preview"
	"converge.dev/converge/internal/source"
)

// appSource is an Application read with the kubeconfig's identity, and
// how to fetch and preview its source on this machine.
type appSource struct {
	Streams
	cfg *rest.Config
	c   client.Client
	app *v1alpha1.Application
	p   *preview.Previewer
}

func loadAppSource(ctx context.Context, streams Streams, kube *KubeFlags, name string) (*appSource, error) {
	cfg, _, err := kube.Config()
	if err != nil {
		return nil, err
	}
	c, ns, err := appClient(kube)
	if err != nil {
		return nil, err
	}
	app := &v1alpha1.Application{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
		return nil, err
	}
	p, err := previewer(streams)
	if err != nil {
		return nil, err
	}
	return &appSource{Streams: streams, cfg: cfg, c: c, app: app, p: p}, nil
}

// previewer fetches into the user's cache directory and tells of its
// progress on stderr.
func previewer(streams Streams) (*preview.Previewer, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	sources, err := source.NewCache(filepath.Join(dir, "converge", "git"))
	if err != nil {
		return nil, err
	}
	charts, err := chartCache()
	if err != nil {
		return nil, err
	}
	return &preview.Previewer{Builder: &appspec.Builder{Sources: sources, Charts: charts}, Progress: func(format string, args ...any) {
		fmt.Fprintf(streams.ErrOut, format+"\n", args...)
	}}, nil
}

func (s *appSource) request(revision string) preview.Request {
	return preview.Request{Config: s.cfg, Client: s.c, App: s.app, Revision: revision}
}

// previewRun is `converge diff APP [--revision REF]`: render the app's
// source at REF and compare it with the cluster.
func (o *DiffOptions) previewRun(ctx context.Context, name string) error {
	switch o.Format {
	case "", "text", "markdown":
	default:
		return fmt.Errorf("unknown --format %q: use text or markdown", o.Format)
	}
	s, err := loadAppSource(ctx, o.Streams, &o.Kube, name)
	if err != nil {
		return err
	}
	req := s.request(o.Revision)
	req.AllowEmpty = o.AllowEmpty
	res, err := s.p.Preview(ctx, req)
	if err != nil {
		if res != nil {
			return emptyHint(s.app.Name+" at "+short(res.Revision), err)
		}
		return err
	}
	cs := &res.Plan.ChangeSet
	switch {
	case o.Output != OutputText:
		err = printObject(o.Out, o.Output, cs)
	case o.Format == "markdown":
		label := o.Revision
		if label == "" {
			label = strings.TrimPrefix(strings.TrimPrefix(res.RefName, "refs/heads/"), "refs/tags/")
		}
		err = writeMarkdown(o.Out, s.app, label, res.Revision, cs)
	default:
		writeDiffs(o.Out, cs)
	}
	if err != nil {
		return err
	}
	printChanges(o.ErrOut, cs, "Diff")
	if cs.HasChanges() {
		return &ExitError{Code: ExitChanges}
	}
	return nil
}

// writeMarkdown writes a change set as a pull-request comment: a summary
// table by kind, then each changed object's diff, collapsed.
func writeMarkdown(w io.Writer, app *v1alpha1.Application, label, revision string, cs *engine.ChangeSet) error {
	type row struct{ created, configured, deleted int }
	rows := map[string]*row{}
	c := cs.Counts()
	for _, ch := range cs.Changes {
		r := rows[ch.Kind]
		if r == nil {
			r = &row{}
		}
		switch ch.Action {
		case engine.ActionCreated:
			r.created++
		case engine.ActionConfigured:
			r.configured++
		case engine.ActionDeleted:
			r.deleted++
		default:
			continue
		}
		rows[ch.Kind] = r
	}
	var b strings.Builder
	fmt.Fprintf(&b, "### converge diff: `%s/%s` at `%s` (`%s`)\n\n", app.Namespace, app.Name, label, short(revision))
	if !cs.HasChanges() {
		fmt.Fprintf(&b, "No changes: the cluster matches (%d object(s) unchanged).\n", c.Unchanged)
		_, err := io.WriteString(w, b.String())
		return err
	}
	fmt.Fprintf(&b, "%d to create, %d to configure, %d to delete, %d unchanged.\n\n", c.Created, c.Configured, c.Deleted, c.Unchanged)
	b.WriteString("| Kind | Create | Configure | Delete |\n| --- | ---: | ---: | ---: |\n")
	kinds := make([]string, 0, len(rows))
	for k := range rows {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		r := rows[k]
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", k, r.created, r.configured, r.deleted)
	}
	verbs := map[engine.Action]string{engine.ActionCreated: "create", engine.ActionConfigured: "configure", engine.ActionDeleted: "delete"}
	for _, ch := range cs.Changes {
		verb, ok := verbs[ch.Action]
		if !ok {
			continue
		}
		fence := "```"
		for strings.Contains(ch.Diff, fence) {
			fence += "`"
		}
		fmt.Fprintf(&b, "\n<details>\n<summary>%s <code>%s</code></summary>\n\n%sdiff\n%s%s\n\n</details>\n",
			verb, ch.Ref, fence, ensureNewline(ch.Diff), fence)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func ensureNewline(s string) string {
	if s == "" || strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}
