package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"converge.dev/converge/internal/version"
)

// VersionOptions holds the flags of `converge version`.
type VersionOptions struct {
	Streams
	Output OutputFormat
}

// NewVersionCommand returns `converge version`.
func NewVersionCommand(streams Streams) *cobra.Command {
	o := &VersionOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print converge's version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.Run()
		},
	}
	bindOutput(cmd, &o.Output)
	return cmd
}

// Run prints the version.
func (o *VersionOptions) Run() error {
	if err := o.Output.validate(); err != nil {
		return err
	}
	info := version.Get()
	if o.Output != OutputText {
		return printObject(o.Out, o.Output, info)
	}
	_, err := fmt.Fprintf(o.Out, "converge %s\ncommit:   %s\ngo:       %s\nplatform: %s\n",
		info.Version, info.Commit, info.GoVersion, info.Platform)
	return err
}
