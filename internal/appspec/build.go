package appspec

import (
	"context"
	"errors"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tenancy"
)

// Builder is the one builder of an Application's desired state. Resolve
// takes the app at a revision to a Build: its Git checkout, its chart, its
// values and variables from the cluster, and the revision naming all of
// them; Render turns a Build into objects. The reconciler, its rollback
// check and deletion hooks, the previews (CLI and web UI) and the
// ApplicationSet's Git generators all build through it, so what a preview
// shows is what a sync applies.
type Builder struct {
	Sources *source.Cache
	Charts  *charts.Cache
	// ReadRoots confine render workers (see render.Options.ReadRoots).
	ReadRoots []string
	// Renders, if set, keeps recent renders (see RenderCache).
	Renders *RenderCache
	// Fetched, if set, hears the outcome of each Git fetch (metrics).
	Fetched func(err error)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Request is one app to resolve.
type Request struct {
	App *v1alpha1.Application
	// Source is the fetch request of the app's Git source at the revision
	// to build (see SourceRequest); unused when the app has none.
	Source source.Request
	// Secrets reads the chart's credentials, Inputs the values and
	// variables: both as the app's account.
	Secrets, Inputs client.Reader
	// Tenancy is what governs the app: the chart URLs it may reach and
	// the render queue it waits in.
	Tenancy tenancy.Tenancy
	// Isolation names who may share the render worker: only renders with
	// the same value do (see render.Options.Isolation).
	Isolation string
	// MaxAge: chart and index answers younger than this are reused (0:
	// ask now). The Git fetch's is Source.MaxAge.
	MaxAge time.Duration
}

// Build is an app resolved at a revision: ready to render.
type Build struct {
	// Artifact is the checkout (an empty directory for a chart-only app);
	// its Revision names everything the render takes: the commit, the
	// chart's digest, the values' and variables' digests.
	Artifact *source.Artifact
	// Chart is the chart fetched, for a chart source.
	Chart *charts.Chart
	// Inputs are the values and variables read from the cluster.
	Inputs Inputs
	// Options render the build, but for the cluster's capabilities.
	Options render.Options

	allow  func(rawURL string) error
	maxAge time.Duration
}

// FetchError is a Git fetch that failed.
type FetchError struct{ Err error }

func (e *FetchError) Error() string { return e.Err.Error() }
func (e *FetchError) Unwrap() error { return e.Err }

// Resolve fetches req's app (Git, then chart) and reads its inputs.
func (b *Builder) Resolve(ctx context.Context, req Request) (*Build, error) {
	app := req.App
	build := &Build{allow: req.Tenancy.AllowChart(), maxAge: req.MaxAge}
	var git *source.Artifact
	var err error
	switch {
	case app.Spec.Source.RepoURL != "":
		git, err = b.Fetch(ctx, req.Source)
	case app.Spec.Source.OCI != nil:
		git, err = b.artifact(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	a, err := b.chart(ctx, req, git, build)
	if err != nil {
		return nil, err
	}
	if build.Inputs, err = Read(ctx, req.Inputs, app); err != nil {
		return nil, err
	}
	a.Revision = build.Inputs.Revision(a.Revision)
	build.Artifact = a
	if build.Options, err = RenderOptions(app, a.Dir); err != nil {
		return nil, err
	}
	build.Options.Isolation = req.Isolation
	build.Options.Queue = req.Tenancy.Queue()
	build.Options.ReadRoots = b.ReadRoots
	if build.Chart != nil {
		build.Options.Chart = build.Chart.Path
	}
	build.Inputs.Apply(&build.Options)
	return build, nil
}

// Fetch fetches a Git source through the shared cache: a recent answer
// for the same repository and ref is reused.
func (b *Builder) Fetch(ctx context.Context, req source.Request) (*source.Artifact, error) {
	a, err := b.Sources.Fetch(ctx, req)
	if b.Fetched != nil {
		b.Fetched(err)
	}
	if err != nil {
		return nil, &FetchError{err}
	}
	return a, nil
}

// artifact fetches req's OCI artifact: its content is the source, as a
// Git checkout would be; its revision is "<tag>@<digest>".
func (b *Builder) artifact(ctx context.Context, req Request) (*source.Artifact, error) {
	areq, _, err := ArtifactRequest(ctx, req.Secrets, req.App)
	if err != nil {
		return nil, err
	}
	if b.Charts == nil {
		return nil, errors.New("this agent fetches no OCI artifacts")
	}
	areq.MaxAge = req.MaxAge
	a, err := b.Charts.FetchArtifact(ctx, areq)
	if err != nil {
		return nil, &FetchError{err}
	}
	subject := "OCI artifact " + a.URL
	if a.SourceRevision != "" {
		subject += " (" + a.Source + " at " + a.SourceRevision + ")"
	}
	return &source.Artifact{URL: a.URL, RefName: a.Tag, Revision: a.Revision, Dir: a.Dir,
		Commit: source.CommitInfo{Subject: subject, Date: a.Created}, CheckedAt: b.now()}, nil
}

// chart fetches req's chart, if its app has a chart source, and makes it
// part of the source: the revision becomes the Git revision and the
// chart's digest ("<commit>+sha256:..."), or the digest alone without
// Git, so a new chart version is a new revision like a new commit.
func (b *Builder) chart(ctx context.Context, req Request, git *source.Artifact, build *Build) (*source.Artifact, error) {
	creq, ok, err := ChartRequest(ctx, req.Secrets, req.App)
	if !ok {
		if git == nil {
			return nil, errors.New("spec.source: names neither a Git repository nor a chart")
		}
		a := *git
		return &a, nil
	}
	if err != nil {
		return nil, err
	}
	if b.Charts == nil {
		return nil, errors.New("this agent fetches no charts")
	}
	creq.MaxAge, creq.Allow = req.MaxAge, build.allow
	ch, err := b.Charts.Fetch(ctx, creq)
	if err != nil {
		return nil, err
	}
	build.Chart = ch
	if git == nil {
		return &source.Artifact{URL: ch.URL, RefName: ch.Name + "@" + ch.Version, Revision: ch.Digest, Dir: b.Charts.EmptyDir(),
			Commit: source.CommitInfo{Subject: "chart " + ch.Name + " " + ch.Version}, CheckedAt: b.now()}, nil
	}
	a := *git
	a.Revision = git.Revision + "+" + ch.Digest
	return &a, nil
}

// Render renders build for a cluster of the given capabilities (charts
// see the cluster they go to). Chart dependencies from repositories are
// fetched into the chart cache, answered from a recent index within the
// build's MaxAge. Through Renders, a recent render of the same revision
// and options is reused.
func (b *Builder) Render(ctx context.Context, build *Build, caps engine.Capabilities) (*render.Result, error) {
	opts := build.Options
	// What the app says of the cluster wins over what the cluster says.
	if opts.Helm.KubeVersion == "" {
		opts.Helm.KubeVersion = caps.KubeVersion
	}
	if len(opts.Helm.APIVersions) == 0 {
		opts.Helm.APIVersions = caps.APIVersions
	}
	fn := func(ctx context.Context, opts render.Options) (*render.Result, error) {
		if b.Charts == nil {
			return render.Render(ctx, opts)
		}
		return b.Charts.Render(ctx, opts, build.maxAge, build.allow)
	}
	if b.Renders == nil {
		return fn(ctx, opts)
	}
	return b.Renders.Render(ctx, build.Artifact.Revision, opts, fn)
}

func (b *Builder) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}
