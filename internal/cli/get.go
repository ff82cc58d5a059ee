package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/source"
)

// GetOptions holds the flags of `converge get`.
type GetOptions struct {
	Streams
	Kube   KubeFlags
	Output string
}

// NewGetCommand returns `converge get [APP]`.
func NewGetCommand(streams Streams) *cobra.Command {
	o := &GetOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "get [APP]",
		Short: "Show Applications: sync, health, revision and readiness",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return o.Run(cmd.Context(), name)
		},
	}
	o.Kube.Bind(cmd.Flags())
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: wide, json or yaml")
	return cmd
}

// Run prints the Applications.
func (o *GetOptions) Run(ctx context.Context, name string) error {
	c, ns, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	var apps []v1alpha1.Application
	if name != "" {
		var app v1alpha1.Application
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &app); err != nil {
			return err
		}
		apps = []v1alpha1.Application{app}
	} else {
		var list v1alpha1.ApplicationList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		apps = list.Items
	}
	switch o.Output {
	case "json", "yaml":
		for i := range apps {
			apps[i].SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("Application"))
		}
		if name != "" {
			return printObject(o.Out, OutputFormat(o.Output), apps[0])
		}
		return printObject(o.Out, OutputFormat(o.Output), map[string]any{"apiVersion": "v1", "kind": "List", "items": apps})
	case "", "wide":
	default:
		return fmt.Errorf("unknown output format %q: use wide, json or yaml", o.Output)
	}
	tw := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	header := "NAME\tSYNC\tHEALTH\tREVISION\tREADY\tAGE"
	if o.Output == "wide" {
		header += "\tREPO\tPATH\tAUTHOR\tCOMMIT\tMESSAGE"
	}
	fmt.Fprintln(tw, header)
	for _, a := range apps {
		ready := "Unknown"
		msg := ""
		if c := apimeta.FindStatusCondition(a.Status.Conditions, v1alpha1.ConditionReady); c != nil {
			ready, msg = string(c.Status), c.Message
		}
		if c := apimeta.FindStatusCondition(a.Status.Conditions, v1alpha1.ConditionPinned); c != nil && c.Status == "True" {
			msg = c.Message + "; " + msg
		}
		rev := a.Status.Sync.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", a.Name, orDash(string(a.Status.Sync.Status)), orDash(string(a.Status.Health.Status)),
			orDash(rev), ready, time.Since(a.CreationTimestamp.Time).Round(time.Second))
		if o.Output == "wide" {
			author, subject := "-", "-"
			if c := a.Status.Sync.Commit; c != nil {
				author, subject = orDash(c.Author), orDash(firstLine(c.Subject))
			}
			line += fmt.Sprintf("\t%s\t%s\t%s\t%s\t%s", source.RedactURL(a.Spec.Source.RepoURL), orDash(a.Spec.Source.Path), author, subject, msg)
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
