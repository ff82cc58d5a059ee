package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"converge.dev/converge/internal/engine"
)

// DiffOptions holds the flags of `converge diff PATH`.
type DiffOptions struct {
	Streams
	pushFlags
	Output     OutputFormat
	Revision   string
	Format     string
	AllowEmpty bool
}

// NewDiffCommand returns `converge diff PATH --app NAME`.
func NewDiffCommand(streams Streams) *cobra.Command {
	o := &DiffOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "diff (PATH --app NAME | APP [--revision REF])",
		Short: "Show how the cluster differs from PATH, or from an Application's source at a revision",
		Long: `Two forms, told apart by --app:

  converge diff PATH --app NAME      render the local PATH
  converge diff APP [--revision REF] fetch the Application's repository at REF
                                     (a branch, tag or commit; default: the
                                     app's own ref) and render it as the
                                     agent would: a pull-request preview

Either way the render is compared with the live cluster, object by object,
by server-side dry-run. Changed objects are printed as unified diffs (Secret
values masked), then a summary. Owned objects no longer rendered show as
deleted. --format markdown prints a report for a pull-request comment: a
table of objects to create, configure and delete by kind, then each diff,
collapsed. The app's credentials Secret is used when you may read it.

Exit status: 0 no differences, 1 differences, 2 error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.Run(cmd, args[0])
		},
	}
	o.bind(cmd)
	bindOutput(cmd, &o.Output)
	cmd.Flags().StringVar(&o.Revision, "revision", "", "with APP: the branch, tag or commit to preview (default: the app's ref)")
	cmd.Flags().StringVar(&o.Format, "format", "", "with APP: text (default) or markdown")
	cmd.Flags().BoolVar(&o.AllowEmpty, "allow-empty", false, "compare an empty render too (everything the app owns shows as deleted)")
	return cmd
}

// Run plans and prints the differences.
func (o *DiffOptions) Run(cmd *cobra.Command, path string) error {
	if err := o.Output.validate(); err != nil {
		return err
	}
	if o.App == "" {
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("%s is a local path: the PATH form needs --app NAME (the app that owns the objects)", path)
		}
		return o.previewRun(cmd.Context(), path)
	}
	if o.Revision != "" || o.Format != "" {
		return fmt.Errorf("--revision and --format go with the APP form (converge diff APP --revision REF), not with --app")
	}
	m, objs, opts, err := o.prepare(cmd.Context(), path, o.ErrOut)
	if err != nil {
		return err
	}
	opts.Prune = true
	opts.AllowEmpty = o.AllowEmpty
	plan, err := m.Plan(cmd.Context(), objs, opts)
	if err != nil {
		return emptyHint(path, err)
	}
	cs := &plan.ChangeSet
	if o.Output != OutputText {
		if err := printObject(o.Out, o.Output, cs); err != nil {
			return err
		}
	} else {
		writeDiffs(o.Out, cs)
	}
	printChanges(o.ErrOut, cs, "Diff")
	if n := plan.Hooks(); n > 0 {
		fmt.Fprintf(o.ErrOut, "%d hook(s) not compared: they run during a sync (docs/compat.md)\n", n)
	}
	if cs.HasChanges() {
		return &ExitError{Code: ExitChanges}
	}
	return nil
}

func writeDiffs(w io.Writer, cs *engine.ChangeSet) {
	for _, c := range cs.Changes {
		if c.Diff != "" {
			fmt.Fprint(w, c.Diff)
		}
	}
}
