package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"converge.dev/converge/internal/engine"
)

// DiffOptions holds the flags of `converge diff PATH`.
type DiffOptions struct {
	Streams
	pushFlags
	Output OutputFormat
}

// NewDiffCommand returns `converge diff PATH --app NAME`.
func NewDiffCommand(streams Streams) *cobra.Command {
	o := &DiffOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "diff PATH --app NAME",
		Short: "Show how the cluster differs from what PATH describes",
		Long: `Render PATH and compare it with the live cluster, object by object, by
server-side dry-run. Changed objects are printed as unified diffs (Secret
values masked), then a summary. Owned objects no longer in PATH show as
deleted.

Exit status: 0 no differences, 1 differences, 2 error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.Run(cmd, args[0])
		},
	}
	o.bind(cmd)
	bindOutput(cmd, &o.Output)
	return cmd
}

// Run plans and prints the differences.
func (o *DiffOptions) Run(cmd *cobra.Command, path string) error {
	if err := o.Output.validate(); err != nil {
		return err
	}
	m, objs, opts, err := o.prepare(cmd.Context(), path, o.ErrOut)
	if err != nil {
		return err
	}
	opts.Prune = true
	opts.AllowEmpty = true
	plan, err := m.Plan(cmd.Context(), objs, opts)
	if err != nil {
		return err
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
