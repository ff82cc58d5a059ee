package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/internal/migrate"
	"converge.dev/converge/internal/render"
)

// MigrateOptions holds the flags of `converge migrate`.
type MigrateOptions struct {
	Streams
	Output   OutputFormat
	Clusters map[string]string
}

// NewMigrateCommand returns `converge migrate PATH...`.
func NewMigrateCommand(streams Streams) *cobra.Command {
	o := &MigrateOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "migrate PATH...",
		Short: "Print the converge Applications equivalent to Argo CD Applications and Flux Kustomizations and HelmReleases",
		Long: `Reads the manifests in each PATH (a file or a directory, read as converge
build reads a directory, with every Kustomize root and Helm chart in it
rendered too: a flux bootstrap's flux-system, an Argo CD app-of-apps chart
with its default values) and prints, for each Argo CD Application and each
Flux Kustomization or HelmRelease (with the GitRepository, HelmRepository
or OCIRepository it refers to, which must be among the manifests), the
equivalent converge Application. Nothing is applied: review the output,
then kubectl apply it (and delete the old objects, with their controllers
told to orphan what they deployed).

Everything that cannot be carried over, or is carried over with a
difference, is listed on stderr with the object and the field: plugins,
post-renderers, valuesFrom, Kustomize overrides, SOPS decryption, other
clusters not mapped with --cluster (those apps are not translated, never
retargeted to this cluster)...

Exit status: 0 when at least one Application was made, 2 otherwise.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.Run(cmd, args) },
	}
	cmd.Flags().StringVarP((*string)(&o.Output), "output", "o", "yaml", "output format: yaml or json")
	cmd.Flags().StringToStringVar(&o.Clusters, "cluster", nil, "map another cluster (an Argo CD destination's server URL or name, a Flux kubeConfig Secret's name) to a converge Cluster: --cluster https://prod.example.com=prod (repeatable); apps aimed at an unmapped cluster are not translated")
	return cmd
}

// maxMigrateRenders bounds the Kustomize roots and charts one PATH may
// lead migrate to render.
const maxMigrateRenders = 500

// collect renders rel below root as a repository of Argo CD or Flux
// manifests: a plain directory's files, and each Kustomize root and Helm
// chart in it rendered in turn (a flux bootstrap's flux-system, a tenant's
// kustomization, an Argo CD app-of-apps chart with its default values).
func (o *MigrateOptions) collect(ctx context.Context, root, rel string, budget *int) ([]render.Object, error) {
	if *budget == 0 {
		return nil, fmt.Errorf("%s: more than %d Kustomize roots and charts to render", rel, maxMigrateRenders)
	}
	*budget--
	name := path.Base(rel)
	if rel == "." {
		name = filepath.Base(root)
	}
	res, err := render.Render(ctx, render.Options{Root: root, Path: rel, Helm: render.HelmOptions{ReleaseName: name}})
	if err != nil {
		return nil, err
	}
	if res.Kind != render.KindDirectory {
		fmt.Fprintf(o.ErrOut, "Rendered %s (%s): %d object(s)\n", rel, res.Kind, len(res.Objects))
	}
	objs := res.Objects
	for _, sub := range res.Nested {
		got, err := o.collect(ctx, root, sub, budget)
		if err != nil {
			return nil, err
		}
		objs = append(objs, got...)
	}
	return objs, nil
}

// workTree is the Git work tree dir is in ("" if none): the nearest
// directory up from dir that holds .git.
func workTree(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, ".git")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// printItems prints items as a JSON List, or as YAML documents.
func printItems(w io.Writer, format OutputFormat, items []any) error {
	if format == OutputJSON {
		return printObject(w, OutputJSON, map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	}
	for i, item := range items {
		data, err := yaml.Marshal(item)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(w, "---")
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
	}
	return nil
}

// Run translates and prints.
func (o *MigrateOptions) Run(cmd *cobra.Command, paths []string) error {
	if o.Output != OutputYAML && o.Output != OutputJSON {
		return fmt.Errorf("unknown output format %q: use yaml or json", o.Output)
	}
	var objs []render.Object
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		root := abs
		if fi, err := os.Stat(abs); err != nil {
			return err
		} else if !fi.IsDir() {
			root = filepath.Dir(abs)
		}
		// Within a Git work tree, objects are named by their path in the
		// repository, as Applications name theirs (an app of apps is
		// found by its path).
		if top := workTree(root); top != "" {
			root = top
		}
		rel, _ := filepath.Rel(root, abs)
		budget := maxMigrateRenders
		got, err := o.collect(cmd.Context(), root, filepath.ToSlash(rel), &budget)
		if err != nil {
			return err
		}
		objs = append(objs, got...)
	}
	res := migrate.Translate(objs, migrate.Options{Clusters: o.Clusters})
	for _, f := range res.Findings {
		fmt.Fprintln(o.ErrOut, "not carried over:", f)
	}
	if len(res.Applications)+len(res.ApplicationSets) == 0 {
		return fmt.Errorf("no Argo CD Application or ApplicationSet, Flux Kustomization or Flux HelmRelease found in %d object(s)", len(objs))
	}
	// In the order they apply in: Tenants and credentials before what
	// uses them.
	var items []any
	items = appendItems(items, res.Tenants)
	items = appendItems(items, res.Secrets)
	items = appendItems(items, res.Clusters)
	items = appendItems(items, res.Applications)
	items = appendItems(items, res.ApplicationSets)
	items = appendItems(items, res.Notifiers)
	items = appendItems(items, res.Alerts)
	items = appendItems(items, res.ImageRepositories)
	items = appendItems(items, res.ImagePolicies)
	items = appendItems(items, res.ImageUpdateAutomations)
	if len(res.Secrets) > 0 {
		fmt.Fprintf(o.ErrOut, "The output holds %d Secret(s) of credentials carried over from Argo CD's cluster and repository Secrets: keep it as safe as those\n", len(res.Secrets))
	}
	if err := printItems(o.Out, o.Output, items); err != nil {
		return err
	}
	fmt.Fprintf(o.ErrOut, "Translated %d Application(s), %d ApplicationSet(s), %d Tenant(s), %d Cluster(s), %d Notifier(s), %d Alert(s), %d image automation object(s); %d finding(s) above\n",
		len(res.Applications), len(res.ApplicationSets), len(res.Tenants), len(res.Clusters), len(res.Notifiers), len(res.Alerts),
		len(res.ImageRepositories)+len(res.ImagePolicies)+len(res.ImageUpdateAutomations), len(res.Findings))
	if len(res.Findings) > 0 {
		// Printed, but not all of it: scripts must not take it for a
		// complete translation.
		return &ExitError{Code: ExitChanges}
	}
	return nil
}

// appendItems appends each of objs to items, in order.
func appendItems[T any](items []any, objs []T) []any {
	for i := range objs {
		items = append(items, objs[i])
	}
	return items
}
