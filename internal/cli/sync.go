package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/source"
)

// SyncOptions holds the flags of `converge sync PATH`.
type SyncOptions struct {
	Streams
	pushFlags
	Prune      bool
	DryRun     bool
	AllowEmpty bool
	Wait       bool
	PruneLast  bool
	Resources  []string
	Timeout    time.Duration
	Output     OutputFormat
	// HistoryLimit bounds the app's history record.
	HistoryLimit int
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
	f.BoolVar(&o.AllowEmpty, "allow-empty", false, "accept an empty render (with --prune, it deletes everything the app owns)")
	f.BoolVar(&o.Wait, "wait", false, "wait until every object is healthy (kstatus Current)")
	f.BoolVar(&o.PruneLast, "prune-last", false, "prune only once everything applied is healthy (Argo CD's PruneLast)")
	f.StringArrayVar(&o.Resources, "resource", nil, "sync only this object, GROUP:KIND:NAME or GROUP:KIND:NAMESPACE/NAME (the core group empty: :ConfigMap:settings); repeatable; no hook runs")
	f.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "bound for --wait and for waits between waves")
	f.IntVar(&o.HistoryLimit, "history-limit", engine.DefaultHistoryLimit, "push mode: syncs and actions the app's history keeps")
	bindOutput(cmd, &o.Output)
	return cmd
}

// Run syncs.
func (o *SyncOptions) Run(cmd *cobra.Command, path string) error {
	if err := o.Output.validate(); err != nil {
		return err
	}
	only, err := parseSelectors(o.Resources)
	if err != nil {
		return err
	}
	if o.App == "" {
		// Pull mode: the argument names an Application.
		request, err := requestSync(cmd.Context(), o.Streams, o.Kube, path, only...)
		if err != nil || !o.Wait {
			return err
		}
		return waitForRequest(cmd.Context(), o.Streams, o.Kube, path, request, o.Timeout)
	}
	m, opts, err := o.connect(o.ErrOut)
	if err != nil {
		return err
	}
	opts.Prune, opts.AllowEmpty, opts.Only = o.Prune, o.AllowEmpty, only
	start := time.Now()
	rev, commit := localCommit(cmd.Context(), path)
	opts.Revision = rev
	run := engine.RunOptions{
		SyncOptions: engine.SyncOptions{PlanOptions: opts, DryRun: o.DryRun, Wait: o.Wait, Timeout: o.Timeout, PruneLast: o.PruneLast},
		Apply:       true,
		Mode:        engine.ModePush,
		Commit:      commit,
		Started:     start,
	}
	if !o.DryRun {
		// Push mode has no Application: events go on the app's record.
		run.Trigger = engine.Trigger{Type: engine.TriggerManual}
		run.Who = func() string { return whoami(cmd.Context(), m.Client()) }
		run.History, run.HistoryLimit = m.Client(), o.HistoryLimit
		run.Events = &recordEvents{ctx: cmd.Context(), c: m.Client(), app: opts.App, warn: o.ErrOut}
	}
	objs, err := o.render(cmd.Context(), m, path, opts.DefaultNamespace, o.ErrOut)
	if err != nil {
		// Recorded as the agent records a render that fails.
		if !o.DryRun {
			if herr := engine.RecordFailure(cmd.Context(), run, err); herr != nil {
				fmt.Fprintln(o.ErrOut, "warning:", herr)
			}
		}
		return err
	}
	res, err := m.Run(cmd.Context(), objs, run)
	if res.HistoryError != nil {
		fmt.Fprintln(o.ErrOut, "warning:", res.HistoryError)
	}
	if cs := res.Changes; cs != nil {
		verb := "Sync"
		if o.DryRun {
			verb = "Sync (dry run)"
		}
		printChanges(o.ErrOut, cs, verb)
		for _, h := range res.Hooks {
			fmt.Fprintln(o.ErrOut, "hook", h)
		}
		if o.Output != OutputText {
			if perr := printObject(o.Out, o.Output, cs); perr != nil && err == nil {
				err = perr
			}
		}
	}
	if err != nil {
		return emptyHint(path, err)
	}
	o.ErrOut.Write([]byte("Synced in " + time.Since(start).Round(time.Millisecond).String() + "\n"))
	return nil
}

// parseSelectors reads --resource flags.
func parseSelectors(flags []string) ([]engine.ResourceSelector, error) {
	if len(flags) > engine.MaxResourceSelectors {
		return nil, fmt.Errorf("--resource: %d given, at most %d", len(flags), engine.MaxResourceSelectors)
	}
	out := make([]engine.ResourceSelector, 0, len(flags))
	for _, f := range flags {
		s, err := engine.ParseResourceSelector(f)
		if err != nil {
			return nil, fmt.Errorf("--resource: %w", err)
		}
		out = append(out, s)
	}
	return out, nil
}

// recordEvents puts a push-mode sync's events on the app's record (there
// is no Application to put them on).
type recordEvents struct {
	ctx  context.Context
	c    client.Client
	app  engine.App
	warn io.Writer
}

func (e *recordEvents) Event(typ, reason, msg string) {
	ref := corev1.ObjectReference{APIVersion: "v1", Kind: "ConfigMap", Namespace: e.app.Namespace, Name: engine.InventoryName(e.app.Name)}
	if err := emitEvent(e.ctx, e.c, ref, typ, reason, msg); err != nil {
		fmt.Fprintln(e.warn, "warning: emitting an event:", err)
	}
}

// localCommit describes the commit checked out where path is, when path is
// in a Git work tree; a work tree with uncommitted changes gets "-dirty".
func localCommit(ctx context.Context, path string) (string, *source.CommitInfo) {
	dir := path
	if fi, err := os.Stat(path); err == nil && !fi.IsDir() {
		dir = filepath.Dir(path)
	}
	cmd := exec.CommandContext(ctx, "git", "-C", dir, "log", "-1", "--format=%H%x00%an%x00%ae%x00%cn%x00%ce%x00%cI%x00%s")
	out, err := cmd.Output()
	if err != nil {
		return "", nil
	}
	f := strings.SplitN(strings.TrimRight(string(out), "\n"), "\x00", 7)
	if len(f) != 7 {
		return "", nil
	}
	date, _ := time.Parse(time.RFC3339, f[5])
	rev := f[0]
	if st, err := exec.CommandContext(ctx, "git", "-C", dir, "status", "--porcelain", "--", ".").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		rev += "-dirty"
	}
	return rev, &source.CommitInfo{Author: f[1], AuthorEmail: f[2], Committer: f[3], CommitterEmail: f[4], Date: date.UTC(), Subject: f[6]}
}
