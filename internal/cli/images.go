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

// NewImagesCommand returns `converge images`: each ImagePolicy's
// latest tag, the one before it, and when an automation last wrote it to
// Git.
func NewImagesCommand(streams Streams) *cobra.Command {
	o := &GetOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "images",
		Short: "Show ImagePolicies: the latest tag each chose and when it was applied to Git",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.RunImages(cmd.Context())
		},
	}
	o.Kube.Bind(cmd.Flags())
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json or yaml")
	return cmd
}

// RunImages prints the namespace's ImagePolicies.
func (o *GetOptions) RunImages(ctx context.Context) error {
	c, ns, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	var list v1alpha1.ImagePolicyList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err
	}
	switch o.Output {
	case "json", "yaml":
		for i := range list.Items {
			list.Items[i].SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("ImagePolicy"))
		}
		return printObject(o.Out, OutputFormat(o.Output), map[string]any{"apiVersion": "v1", "kind": "List", "items": list.Items})
	case "":
	default:
		return fmt.Errorf("unknown output format %q: use json or yaml", o.Output)
	}
	tw := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIMAGE\tLATEST\tPREVIOUS\tAPPLIED\tCOMMIT\tREADY\tMESSAGE")
	for _, p := range list.Items {
		image, latest, previous, applied := "-", "-", "-", "-"
		if r := p.Status.LatestRef; r != nil {
			image, latest = r.Name, r.Tag
		}
		if r := p.Status.ObservedPreviousRef; r != nil {
			previous = r.Tag
		}
		if at := p.Status.AppliedAt; at != nil {
			applied = time.Since(at.Time).Round(time.Second).String() + " ago"
		}
		ready, msg := "Unknown", ""
		if c := apimeta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c != nil {
			ready, msg = string(c.Status), c.Message
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, image, latest, previous, applied, orDash(source.ShortRevision(p.Status.AppliedCommit)), ready, msg)
	}
	return tw.Flush()
}
