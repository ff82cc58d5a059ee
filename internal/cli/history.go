package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/source"
)

// HistoryOptions holds the flags of `converge history`.
type HistoryOptions struct {
	Streams
	Kube    KubeFlags
	Output  string
	Actions bool
}

// NewHistoryCommand returns `converge history APP`.
func NewHistoryCommand(streams Streams) *cobra.Command {
	o := &HistoryOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "history APP",
		Short: "Show an app's syncs (or, with --actions, the actions taken on it)",
		Long: `Show the app's recorded syncs, newest first: id, revision, trigger, result,
changes, duration, commit author and subject. Push-mode syncs (converge sync
PATH --app APP) and the agent's syncs share the record, a ConfigMap named
converge-history-APP in the app's namespace.

-o wide adds the committer, the commit date, the signer and the changed
objects; -o json|yaml prints the entries as a list, newest first. --actions lists the mutating
actions taken through converge (sync requests, rollbacks, pins, suspends,
creation and deletion) with the Kubernetes user who took them.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.Run(cmd.Context(), args[0]) },
	}
	o.Kube.Bind(cmd.Flags())
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: wide, json or yaml")
	cmd.Flags().BoolVar(&o.Actions, "actions", false, "list actions taken through converge instead of syncs")
	return cmd
}

// Run prints the history.
func (o *HistoryOptions) Run(ctx context.Context, name string) error {
	switch o.Output {
	case "", "wide", "json", "yaml":
	default:
		return fmt.Errorf("unknown output format %q: use wide, json or yaml", o.Output)
	}
	c, ns, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	h, err := engine.LoadHistory(ctx, c, engine.App{Name: name, Namespace: ns})
	if err != nil {
		return err
	}
	if len(h.Entries) == 0 && len(h.Actions) == 0 {
		// Nothing recorded: say so, or that there is no such app at all.
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &v1alpha1.Application{})
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return fmt.Errorf("no app %q in namespace %s: no Application and no history record", name, ns)
		}
	}
	if o.Output == "json" || o.Output == "yaml" {
		// A plain list, newest first, as `helm history -o json` prints.
		if o.Actions {
			return printObject(o.Out, OutputFormat(o.Output), nonNil(h.Actions))
		}
		return printObject(o.Out, OutputFormat(o.Output), nonNil(h.Entries))
	}
	tw := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	if o.Actions {
		if len(h.Actions) == 0 {
			fmt.Fprintf(o.ErrOut, "No actions recorded for %s/%s\n", ns, name)
			return nil
		}
		fmt.Fprintln(tw, "TIME\tUSER\tACTION\tDETAIL")
		for _, a := range h.Actions {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Time.Local().Format(time.RFC3339), a.User, a.Action, orDash(a.Detail))
		}
		return nil
	}
	if len(h.Entries) == 0 {
		fmt.Fprintf(o.ErrOut, "No syncs recorded for %s/%s\n", ns, name)
		return nil
	}
	wide := o.Output == "wide"
	header := "ID\tSTARTED\tREVISION\tTRIGGER\tRESULT\tCHANGES\tDURATION\tAUTHOR\tMESSAGE"
	if wide {
		header += "\tCOMMITTER\tDATE\tSIGNER\tMODE\tOBJECTS\tHOOKS"
	}
	fmt.Fprintln(tw, header)
	for _, e := range h.Entries {
		author, subject := "-", "-"
		if e.Commit != nil {
			author, subject = orDash(e.Commit.Author), orDash(e.Commit.Subject)
		}
		result := e.Result
		if e.Error != "" {
			subject = "error: " + firstLine(e.Error)
		}
		line := fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", e.ID, e.StartedAt.Local().Format("2006-01-02 15:04:05"),
			orDash(short(e.Revision)), e.Trigger, result, changeSummary(e.Counts), e.Duration().Round(time.Millisecond), author, subject)
		if wide {
			committer, date, signer := "-", "-", "-"
			if e.Commit != nil {
				committer, date = orDash(e.Commit.Committer), e.Commit.Date.Local().Format(time.RFC3339)
			}
			if e.Signer != nil {
				signer = e.Signer.Type + ":" + e.Signer.Fingerprint
			}
			objs := strings.Join(e.Changed, ", ")
			if e.ChangedTotal > len(e.Changed) {
				objs += fmt.Sprintf(" (+%d more)", e.ChangedTotal-len(e.Changed))
			}
			if len(e.Kept) > 0 {
				objs = strings.TrimPrefix(objs+"; kept "+strings.Join(e.Kept, ", "), "; ")
			}
			hooks := make([]string, len(e.Hooks))
			for i, h := range e.Hooks {
				hooks[i] = h.String()
			}
			line += fmt.Sprintf("\t%s\t%s\t%s\t%s\t%s\t%s", committer, date, signer, e.Mode, orDash(objs), orDash(strings.Join(hooks, ", ")))
		}
		fmt.Fprintln(tw, line)
	}
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func changeSummary(c engine.Counts) string {
	s := fmt.Sprintf("+%d ~%d -%d", c.Created, c.Configured, c.Deleted)
	if c.Failed > 0 {
		s += fmt.Sprintf(" !%d", c.Failed)
	}
	return s
}

func short(rev string) string { return source.ShortRevision(rev) }

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	if len(line) > 120 {
		line = line[:120] + "…"
	}
	return line
}
