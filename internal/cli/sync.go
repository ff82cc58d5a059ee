package cli

import (
	"time"

	"github.com/spf13/cobra"

	"converge.dev/converge/internal/engine"
)

// SyncOptions holds the flags of `converge sync PATH`.
type SyncOptions struct {
	Streams
	pushFlags
	Prune      bool
	DryRun     bool
	AllowEmpty bool
	Wait       bool
	Timeout    time.Duration
	Output     OutputFormat
}

// NewSyncCommand returns `converge sync PATH --app NAME`.
func NewSyncCommand(streams Streams) *cobra.Command {
	o := &SyncOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "sync (PATH --app NAME | APP)",
		Short: "Converge the cluster with PATH (push mode), or ask the agent to sync APP now (pull mode)",
		Long: `Two forms, told apart by --app:

  converge sync PATH --app NAME   push mode: this command renders and applies
  converge sync APP [--wait]      pull mode: ask the agent to fetch and sync
                                  the Application APP now

Push mode: render PATH and converge the cluster with it by server-side apply: every
changed object is first validated by dry-run (if one fails, nothing is
written), then applied in order: CRDs, namespaces and cluster RBAC first,
then by sync wave. Unchanged objects are not written. With --prune, objects
the app owns that PATH no longer has are deleted. The app's inventory is
recorded in a ConfigMap in --namespace.

Progress and the summary go to stderr; -o json|yaml prints the change set
to stdout. Exit status: 0 success, 2 error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.Run(cmd, args[0])
		},
	}
	o.bind(cmd)
	f := cmd.Flags()
	f.BoolVar(&o.Prune, "prune", false, "delete owned objects that are no longer in PATH")
	f.BoolVar(&o.DryRun, "dry-run", false, "plan with server-side dry-runs and write nothing")
	f.BoolVar(&o.AllowEmpty, "allow-empty", false, "allow an empty render to prune everything the app owns")
	f.BoolVar(&o.Wait, "wait", false, "wait until every object is healthy (kstatus Current)")
	f.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "bound for --wait and for waits between waves")
	bindOutput(cmd, &o.Output)
	return cmd
}

// Run syncs.
func (o *SyncOptions) Run(cmd *cobra.Command, path string) error {
	if err := o.Output.validate(); err != nil {
		return err
	}
	if o.App == "" {
		// Pull mode: the argument names an Application.
		return requestAndWait(cmd.Context(), o.Streams, o.Kube, path, o.Wait, o.Timeout)
	}
	m, objs, opts, err := o.prepare(cmd.Context(), path, o.ErrOut)
	if err != nil {
		return err
	}
	opts.Prune, opts.AllowEmpty = o.Prune, o.AllowEmpty
	start := time.Now()
	cs, err := m.Sync(cmd.Context(), objs, engine.SyncOptions{PlanOptions: opts, DryRun: o.DryRun, Wait: o.Wait, Timeout: o.Timeout})
	if cs != nil {
		verb := "Sync"
		if o.DryRun {
			verb = "Sync (dry run)"
		}
		printChanges(o.ErrOut, cs, verb)
		if o.Output != OutputText {
			if perr := printObject(o.Out, o.Output, cs); perr != nil && err == nil {
				err = perr
			}
		}
	}
	if err != nil {
		return err
	}
	o.ErrOut.Write([]byte("Synced in " + time.Since(start).Round(time.Millisecond).String() + "\n"))
	return nil
}
