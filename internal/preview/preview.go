// Package preview renders an Application's source at a revision, as the
// agent would, and plans it against the cluster without changing anything:
// `converge diff APP` and the web UI's diff. Everything is read with the
// caller's identity (the Application, its credentials Secret when the
// caller may read it, values from ConfigMaps and Secrets, the dry-runs).
package preview

import (
	"context"
	"fmt"

	"converge.dev/converge/internal/redact"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tenancy"
)

// Previewer builds apps' desired state through the builder the agent
// uses, and plans it.
type Previewer struct {
	Builder *appspec.Builder
	// Tenancy, when set, are the agent's rules: every preview is first
	// governed as the reconciler governs the app (tenancy.Resolve over the
	// Tenants read from Tenants), and one it would refuse fetches
	// nothing. The agent's web UI sets them: its previews fetch from the
	// agent's network position. The CLI fetches from the user's.
	Tenancy *tenancy.Options
	Tenants client.Reader
	// IgnoreDifferences are the agent's, before each app's own.
	IgnoreDifferences []engine.IgnoreRule
	// Progress, when set, hears what is being done and warnings, for
	// people.
	Progress func(format string, args ...any)
}

// Request is one preview.
type Request struct {
	// Config and Client reach the cluster as the caller.
	Config *rest.Config
	Client client.Client
	App    *v1alpha1.Application
	// Revision, when set, replaces the app's ref (a branch, tag or commit).
	Revision string
	// Engine, when set, is used instead of one made from Config.
	Engine *engine.Manager
	// AllowEmpty compares an empty render too.
	AllowEmpty bool
}

// Result is a preview's outcome.
type Result struct {
	Plan *engine.Plan
	// Revision is what was rendered: a commit, a chart digest or both.
	Revision string
	// RefName is the ref the revision was found at, or the chart@version.
	RefName string
	// Objects counts the rendered objects.
	Objects int
}

func (p *Previewer) progress(format string, args ...any) {
	if p.Progress != nil {
		p.Progress(format, args...)
	}
}

// SourceRequest is the fetch request for req's app at req.Revision (or
// its pin, or its ref). Without verify, signature checks are left off (a
// preview shows what a revision would do, trusted or not). The app's
// credentials are used when the caller may read them; otherwise the fetch
// goes without.
func (p *Previewer) SourceRequest(ctx context.Context, req Request, verify bool) (source.Request, error) {
	app := req.App.DeepCopy()
	if !verify {
		app.Spec.Source.Verify = nil
	}
	sr, err := appspec.SourceRequest(ctx, req.Client, app.Namespace, &app.Spec.Source)
	if err != nil && app.Spec.Source.SecretRef != nil && apierrors.IsForbidden(err) && !verify {
		p.progress("warning: may not read the credentials Secret %s; fetching without credentials", app.Spec.Source.SecretRef.Name)
		app.Spec.Source.SecretRef = nil
		sr, err = appspec.SourceRequest(ctx, req.Client, app.Namespace, &app.Spec.Source)
	}
	if err != nil {
		return sr, err
	}
	if req.Revision != "" {
		sr.Ref = source.Ref{Revision: req.Revision}
	} else if app.Spec.Pin != nil {
		sr.Ref = source.Ref{Commit: app.Spec.Pin.Revision}
	}
	return sr, nil
}

// Fetch fetches sr through the source cache.
func (p *Previewer) Fetch(ctx context.Context, sr source.Request) (*source.Artifact, error) {
	p.progress("Fetching %s (%s)", redact.URL(sr.URL), sr.Ref)
	return p.Builder.Fetch(ctx, sr)
}

// govern decides what governs app as the reconciler does, when the
// previewer has the agent's rules; a refusal is an error naming the rule.
func (p *Previewer) govern(ctx context.Context, app *v1alpha1.Application) (tenancy.Tenancy, error) {
	if p.Tenancy == nil {
		return tenancy.Tenancy{}, nil
	}
	var tenants v1alpha1.TenantList
	if err := p.Tenants.List(ctx, &tenants); err != nil {
		return tenancy.Tenancy{}, fmt.Errorf("listing Tenants: %w", err)
	}
	ten, err := tenancy.Resolve(app, tenants.Items, *p.Tenancy)
	if err != nil {
		return ten, &tenancy.PolicyError{Err: fmt.Errorf("refused by the agent's tenancy rules, as its sync is: %w", err)}
	}
	return ten, nil
}

// Preview fetches, renders and plans req's app.
func (p *Previewer) Preview(ctx context.Context, req Request) (*Result, error) {
	app := req.App
	if c := app.Spec.Destination.Cluster; c != "" {
		// Planning here would compare with the wrong cluster.
		return nil, fmt.Errorf("%s deploys to Cluster %s: previews (diff, verify, the web UI's diff) plan against this cluster only and do not support other clusters yet", app.Name, c)
	}
	ten, err := p.govern(ctx, app)
	if err != nil {
		return nil, err
	}
	breq := appspec.Request{App: app, Secrets: req.Client, Inputs: req.Client, Tenancy: ten,
		// A preview renders in a worker of the app's namespace only:
		// never in one that held another tenant's values.
		Isolation: app.Namespace + "/preview"}
	if app.Spec.Source.RepoURL != "" {
		if breq.Source, err = p.SourceRequest(ctx, req, false); err != nil {
			return nil, err
		}
		p.progress("Fetching %s (%s)", redact.URL(breq.Source.URL), breq.Source.Ref)
	} else if req.Revision != "" {
		return nil, fmt.Errorf("%s has no Git source: a revision has nothing to name", app.Name)
	}
	build, err := p.Builder.Resolve(ctx, breq)
	if err != nil {
		return nil, err
	}
	if ch := build.Chart; ch != nil {
		p.progress("Chart %s %s (%s)", ch.Name, ch.Version, ch.Digest)
	}
	a := build.Artifact
	m := req.Engine
	if m == nil {
		if m, err = engine.New(req.Config, engine.DefaultOptions()); err != nil {
			return nil, err
		}
	}
	caps, err := m.Capabilities(ctx)
	if err != nil {
		return nil, err
	}
	res, err := p.Builder.Render(ctx, build, caps)
	if err != nil {
		return nil, err
	}
	for _, w := range res.Warnings {
		p.progress("warning: %s", w)
	}
	p.progress("Rendered %d object(s) at %s", len(res.Objects), source.ShortRevision(a.Revision))
	ignore, err := appspec.IgnoreRules(app, p.IgnoreDifferences)
	if err != nil {
		return nil, err
	}
	plan, err := m.Plan(ctx, res.Objects, engine.PlanOptions{
		IgnoreDifferences: ignore,
		App:               engine.App{Name: app.Name, Namespace: app.Namespace},
		DefaultNamespace:  appspec.Destination(app),
		Prune:             true,
		AllowEmpty:        req.AllowEmpty,
		Revision:          a.Revision,
	})
	out := &Result{Plan: plan, Revision: a.Revision, RefName: a.RefName, Objects: len(res.Objects)}
	if err != nil {
		return out, err
	}
	return out, nil
}
