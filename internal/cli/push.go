package cli

import (
	"context"
	"fmt"
	"io"
	"regexp"

	"github.com/spf13/cobra"

	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/render"
)

// pushFlags are what `converge diff PATH` and `converge sync PATH` share:
// the source, the cluster and the app that owns the objects.
type pushFlags struct {
	Source          SourceFlags
	Kube            KubeFlags
	App             string
	CreateNamespace bool
}

var appName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func (f *pushFlags) bind(cmd *cobra.Command) {
	f.Source.Bind(cmd.Flags())
	f.Kube.Bind(cmd.Flags())
	cmd.Flags().StringVar(&f.App, "app", "", "name of the app that owns the objects (push mode); its record lives in --namespace")
	cmd.Flags().BoolVar(&f.CreateNamespace, "create-namespace", false, "create --namespace if it does not exist; the app then owns it")
}

// prepare connects to the cluster and renders path.
func (f *pushFlags) prepare(ctx context.Context, path string, progress io.Writer) (*engine.Manager, []render.Object, engine.PlanOptions, error) {
	m, opts, err := f.connect(progress)
	if err != nil {
		return nil, nil, opts, err
	}
	objs, err := f.render(ctx, m, path, opts.DefaultNamespace, progress)
	return m, objs, opts, err
}

// connect checks --app and connects to the cluster: the engine and the
// plan options of the app that owns what PATH describes.
func (f *pushFlags) connect(progress io.Writer) (*engine.Manager, engine.PlanOptions, error) {
	var none engine.PlanOptions
	if f.App == "" {
		return nil, none, fmt.Errorf("--app is required: it names the app that owns what PATH describes")
	}
	if len(f.App) > 63 || !appName.MatchString(f.App) {
		return nil, none, fmt.Errorf("--app %q: must be a DNS label (lowercase letters, digits and '-', at most 63)", f.App)
	}
	cfg, ns, err := f.Kube.Config()
	if err != nil {
		return nil, none, err
	}
	m, err := engine.New(cfg, engine.DefaultOptions())
	if err != nil {
		return nil, none, err
	}
	opts := engine.PlanOptions{
		App:              engine.App{Name: f.App, Namespace: ns},
		DefaultNamespace: ns,
		Progress:         func(msg string) { fmt.Fprintln(progress, msg) },
	}
	if f.CreateNamespace {
		opts.CreateNamespace = &engine.NamespaceSpec{Name: ns}
	}
	return m, opts, nil
}

// render renders path for the cluster m talks to.
func (f *pushFlags) render(ctx context.Context, m *engine.Manager, path, ns string, progress io.Writer) ([]render.Object, error) {
	if f.Source.ReleaseName == "" {
		f.Source.ReleaseName = f.App // the agent's default too: one name in both modes
	}
	if isChart(path) && (f.Source.KubeVersion == "" || len(f.Source.APIVersions) == 0) {
		// The chart sees the cluster it goes to, as with helm install.
		caps, err := m.Capabilities(ctx)
		if err != nil {
			return nil, err
		}
		if f.Source.KubeVersion == "" {
			f.Source.KubeVersion = caps.KubeVersion
		}
		if len(f.Source.APIVersions) == 0 {
			f.Source.APIVersions = caps.APIVersions
		}
	}
	res, err := f.Source.Render(ctx, path, ns)
	if err != nil {
		return nil, err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(progress, "warning:", w)
	}
	fmt.Fprintf(progress, "Rendered %d object(s) from %s (%s)\n", len(res.Objects), path, res.Kind)
	return res.Objects, nil
}

// printChanges writes one line per change that is not "unchanged" to w,
// then the summary.
func printChanges(w io.Writer, cs *engine.ChangeSet, verb string) {
	for _, c := range cs.Changes {
		if c.Action == engine.ActionUnchanged {
			continue
		}
		line := fmt.Sprintf("%s %s", c.Ref, c.Action)
		if c.Reason != "" {
			line += " (" + c.Reason + ")"
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "%s: %s\n", verb, cs.Counts())
}
