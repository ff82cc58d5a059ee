package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"converge.dev/converge/internal/source"
)

// VerifyOptions holds the flags of `converge verify`.
type VerifyOptions struct {
	Streams
	Kube   KubeFlags
	Output OutputFormat
}

// NewVerifyCommand returns `converge verify APP [REVISION]`.
func NewVerifyCommand(streams Streams) *cobra.Command {
	o := &VerifyOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "verify APP [REVISION]",
		Short: "Check the signature of a revision of an Application's repository against its trusted keys",
		Long: `Fetch REVISION (a branch, tag or commit; default: the app's own ref) of
the Application's repository and check it as the agent would before syncing
it: the commit's signature (spec.source.verify.mode head) or the annotated
tag's (mode tag), against the keys in spec.source.verify.secretRef.

Exit status: 0 signed by a trusted key, 1 unsigned or not trusted, 2 error.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rev := ""
			if len(args) == 2 {
				rev = args[1]
			}
			return o.Run(cmd.Context(), args[0], rev)
		},
	}
	o.Kube.Bind(cmd.Flags())
	bindOutput(cmd, &o.Output)
	return cmd
}

// VerifyResult is what `converge verify -o json` prints.
type VerifyResult struct {
	Revision string         `json:"revision"`
	Ref      string         `json:"ref,omitempty"`
	Trusted  bool           `json:"trusted"`
	Signer   *source.Signer `json:"signer,omitempty"`
	Reason   string         `json:"reason,omitempty"`
}

// Run verifies.
func (o *VerifyOptions) Run(ctx context.Context, name, revision string) error {
	if err := o.Output.validate(); err != nil {
		return err
	}
	s, err := loadAppSource(ctx, o.Streams, &o.Kube, name)
	if err != nil {
		return err
	}
	if s.app.Spec.Source.Verify == nil {
		return fmt.Errorf("Application %s/%s sets no spec.source.verify: there are no trusted keys to check against", s.app.Namespace, name)
	}
	req, err := s.p.SourceRequest(ctx, s.request(revision), true)
	if err != nil {
		return err
	}
	a, err := s.p.Fetch(ctx, req)
	var verr *source.VerificationError
	var res VerifyResult
	switch {
	case errors.As(err, &verr):
		res = VerifyResult{Revision: verr.Revision, Reason: verr.Error()}
	case err != nil:
		return err
	default:
		res = VerifyResult{Revision: a.Revision, Ref: a.RefName, Trusted: true, Signer: a.Signer}
	}
	if o.Output != OutputText {
		if err := printObject(o.Out, o.Output, res); err != nil {
			return err
		}
	} else if res.Trusted {
		fmt.Fprintf(o.Out, "%s: good %s signature by %s (%s)\n", res.Revision, res.Signer.Type, orDash(res.Signer.Identity), res.Signer.Fingerprint)
	} else {
		fmt.Fprintf(o.Out, "%s: NOT TRUSTED: %s\n", res.Revision, res.Reason)
	}
	if !res.Trusted {
		return &ExitError{Code: ExitChanges}
	}
	return nil
}
