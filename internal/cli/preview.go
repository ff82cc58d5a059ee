package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/source"
)

// appSource fetches a revision of an Application's repository on this
// machine, with the app's credentials when the user may read them.
type appSource struct {
	Streams
	cfg *rest.Config
	c   client.Client
	app *v1alpha1.Application
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
	return &appSource{Streams: streams, cfg: cfg, c: c, app: app}, nil
}

// request is the app's fetch request; revision, when set, replaces its ref.
func (s *appSource) request(ctx context.Context, revision string, verify bool) (source.Request, error) {
	app := s.app.DeepCopy()
	if !verify {
		app.Spec.Source.Verify = nil
	}
	req, err := appspec.SourceRequest(ctx, s.c, app)
	if err != nil && app.Spec.Source.SecretRef != nil && apierrors.IsForbidden(err) && !verify {
		fmt.Fprintf(s.ErrOut, "warning: may not read the credentials Secret %s; fetching without credentials\n", app.Spec.Source.SecretRef.Name)
		app.Spec.Source.SecretRef = nil
		req, err = appspec.SourceRequest(ctx, s.c, app)
	}
	if err != nil {
		return req, err
	}
	if revision != "" {
		req.Ref = source.Ref{Revision: revision}
	} else if app.Spec.Pin != nil {
		req.Ref = source.Ref{Commit: app.Spec.Pin.Revision}
	}
	return req, nil
}

func (s *appSource) fetch(ctx context.Context, req source.Request) (*source.Artifact, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	cache, err := source.NewCache(filepath.Join(dir, "converge", "git"))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(s.ErrOut, "Fetching %s (%s)\n", source.RedactURL(req.URL), req.Ref)
	return cache.Fetch(ctx, req)
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
	charts, err := chartCache()
	if err != nil {
		return err
	}
	a := &source.Artifact{Dir: charts.EmptyDir()}
	if s.app.Spec.Source.RepoURL != "" {
		req, err := s.request(ctx, o.Revision, false)
		if err != nil {
			return err
		}
		if a, err = s.fetch(ctx, req); err != nil {
			return err
		}
	} else if o.Revision != "" {
		return fmt.Errorf("%s has no Git source: --revision has nothing to name", name)
	}
	opts, err := appspec.RenderOptions(s.app, a.Dir)
	if err != nil {
		return err
	}
	// A chart source, and values from ConfigMaps and Secrets, as the
	// agent takes them (read with your own rights).
	creq, ok, err := appspec.ChartRequest(ctx, s.c, s.app)
	if err != nil {
		return err
	}
	if ok {
		ch, err := charts.Fetch(ctx, creq)
		if err != nil {
			return err
		}
		fmt.Fprintf(o.ErrOut, "Chart %s %s (%s)\n", ch.Name, ch.Version, ch.Digest)
		opts.Chart = ch.Path
		if a.Revision == "" {
			a.Revision, a.RefName = ch.Digest, ch.Name+"@"+ch.Version
		} else {
			a.Revision += "+" + ch.Digest
		}
	}
	vals, _, err := appspec.ValuesFrom(ctx, s.c, s.app)
	if err != nil {
		return err
	}
	if vals != nil {
		opts.Helm.Values = loader.MergeMaps(vals, opts.Helm.Values)
	}
	m, err := engine.New(s.cfg, engine.DefaultOptions())
	if err != nil {
		return err
	}
	caps, err := m.Capabilities(ctx)
	if err != nil {
		return err
	}
	opts.Helm.KubeVersion, opts.Helm.APIVersions = caps.KubeVersion, caps.APIVersions
	res, err := charts.Render(ctx, opts, 0)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(o.ErrOut, "warning:", w)
	}
	fmt.Fprintf(o.ErrOut, "Rendered %d object(s) at %s\n", len(res.Objects), short(a.Revision))
	plan, err := m.Plan(ctx, res.Objects, engine.PlanOptions{
		App:              engine.App{Name: s.app.Name, Namespace: s.app.Namespace},
		DefaultNamespace: appspec.Destination(s.app),
		Prune:            true,
		AllowEmpty:       o.AllowEmpty,
		Revision:         a.Revision,
	})
	if err != nil {
		return emptyHint(s.app.Name+" at "+short(a.Revision), err)
	}
	cs := &plan.ChangeSet
	switch {
	case o.Output != OutputText:
		err = printObject(o.Out, o.Output, cs)
	case o.Format == "markdown":
		label := o.Revision
		if label == "" {
			label = strings.TrimPrefix(strings.TrimPrefix(a.RefName, "refs/heads/"), "refs/tags/")
		}
		err = writeMarkdown(o.Out, s.app, label, a.Revision, cs)
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
