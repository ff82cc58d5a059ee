package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"converge.dev/converge/internal/redact"

	"github.com/spf13/cobra"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
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
		header += "\tCLUSTER\tSHARD\tREPO\tPATH\tAUTHOR\tCOMMIT\tMESSAGE"
	}
	fmt.Fprintln(tw, header)
	for _, n := range appTree(apps) {
		a := n.app
		ready := "Unknown"
		msg := ""
		if c := apimeta.FindStatusCondition(a.Status.Conditions, v1alpha1.ConditionReady); c != nil {
			ready, msg = string(c.Status), c.Message
		}
		if c := apimeta.FindStatusCondition(a.Status.Conditions, v1alpha1.ConditionPinned); c != nil && c.Status == "True" {
			msg = c.Message + "; " + msg
		}
		rev := source.ShortRevision(a.Status.Sync.Revision)
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", strings.Repeat("  ", n.depth)+treeMark(n.depth)+a.Name, orDash(string(a.Status.Sync.Status)), orDash(string(a.Status.Health.Status)),
			orDash(rev), ready, time.Since(a.CreationTimestamp.Time).Round(time.Second))
		if o.Output == "wide" {
			author, subject := "-", "-"
			if c := a.Status.Sync.Commit; c != nil {
				author, subject = orDash(c.Author), orDash(firstLine(c.Subject))
			}
			line += fmt.Sprintf("\t%s\t%s\t%s\t%s\t%s\t%s\t%s", orLocal(a.Spec.Destination.Cluster), orDash(a.Status.Shard), redact.URL(a.Spec.Source.RepoURL), orDash(a.Spec.Source.Path), author, subject, msg)
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// orLocal names the destination cluster, "(local)" for the agent's own.
func orLocal(cluster string) string {
	if cluster == "" {
		return "(local)"
	}
	return cluster
}

// treeNode is an Application in `converge get`'s listing, at its depth
// under the app that applies it (app of apps).
type treeNode struct {
	app   *v1alpha1.Application
	depth int
}

func treeMark(depth int) string {
	if depth == 0 {
		return ""
	}
	return "└ "
}

// appTree orders apps so that each Application an app applies (an app of
// apps) follows it, one level deeper; the rest keep their order.
func appTree(apps []v1alpha1.Application) []treeNode {
	key := func(a *v1alpha1.Application) string { return a.Namespace + "/" + a.Name }
	children := map[string][]*v1alpha1.Application{}
	present := map[string]bool{}
	for i := range apps {
		present[key(&apps[i])] = true
	}
	var roots []*v1alpha1.Application
	for i := range apps {
		a := &apps[i]
		parent := ""
		if a.Labels[engine.LabelApp] != "" {
			parent = a.Annotations[engine.AnnotationOwner]
		}
		if parent != "" && parent != key(a) && present[parent] {
			children[parent] = append(children[parent], a)
			continue
		}
		roots = append(roots, a)
	}
	var out []treeNode
	seen := map[string]bool{}
	var walk func(a *v1alpha1.Application, depth int)
	walk = func(a *v1alpha1.Application, depth int) {
		if seen[key(a)] {
			return
		}
		seen[key(a)] = true
		out = append(out, treeNode{app: a, depth: depth})
		for _, c := range children[key(a)] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	// Apps in an ownership loop (no root) are listed flat.
	for i := range apps {
		if !seen[key(&apps[i])] {
			walk(&apps[i], 0)
		}
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
