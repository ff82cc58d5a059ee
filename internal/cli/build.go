package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/render"
)

// BuildOptions holds the flags of `converge build`.
type BuildOptions struct {
	Streams
	Source     SourceFlags
	Namespace  string
	Output     OutputFormat
	AllowEmpty bool
}

// NewBuildCommand returns `converge build PATH`.
func NewBuildCommand(streams Streams) *cobra.Command {
	o := &BuildOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "build PATH",
		Short: "Render PATH (plain YAML, Kustomize or Helm) and print the objects; no cluster needed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.Run(cmd, args[0])
		},
	}
	o.Source.Bind(cmd.Flags())
	cmd.Flags().StringVarP(&o.Namespace, "namespace", "n", "default", "namespace given to Helm as .Release.Namespace")
	cmd.Flags().StringVarP((*string)(&o.Output), "output", "o", "yaml", "output format: yaml or json")
	cmd.Flags().BoolVar(&o.AllowEmpty, "allow-empty", false, "succeed when PATH renders no objects")
	return cmd
}

// Run renders and prints.
func (o *BuildOptions) Run(cmd *cobra.Command, path string) error {
	if o.Output != OutputYAML && o.Output != OutputJSON {
		return fmt.Errorf("unknown output format %q: use yaml or json", o.Output)
	}
	res, err := o.Source.Render(cmd.Context(), path, o.Namespace)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(o.ErrOut, "warning:", w)
	}
	if len(res.Objects) == 0 && !o.AllowEmpty {
		return emptyRender(path, res)
	}
	if o.Output == OutputJSON {
		items := make([]any, len(res.Objects))
		for i, obj := range res.Objects {
			items[i] = obj.Object
		}
		return printObject(o.Out, OutputJSON, map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	}
	for i, obj := range res.Objects {
		data, err := yaml.Marshal(obj.Object)
		if err != nil {
			return fmt.Errorf("%s: %w", obj.Source, err)
		}
		if i > 0 {
			fmt.Fprintln(o.Out, "---")
		}
		if _, err := o.Out.Write(data); err != nil {
			return err
		}
	}
	fmt.Fprintf(o.ErrOut, "Rendered %d object(s) from %s (%s)\n", len(res.Objects), path, res.Kind)
	return nil
}

// emptyRender is the error for a render with no objects: never a silent
// success.
func emptyRender(path string, res *render.Result) error {
	why := ""
	if len(res.Warnings) > 0 {
		why = " (see the warnings above)"
	}
	return fmt.Errorf("%s renders no objects%s; --allow-empty accepts that", path, why)
}

// emptyHint names the flag that accepts an empty render.
func emptyHint(path string, err error) error {
	if errors.Is(err, engine.ErrEmptyRender) {
		return fmt.Errorf("%s renders no objects; refusing it (--allow-empty accepts it: every object the app owns is then deleted with --prune, or shown as deleted by diff)", path)
	}
	return err
}
