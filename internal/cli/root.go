// Package cli holds converge's cobra commands: one file per verb, each an
// Options struct that binds its own flags and a Run method. Nothing here is
// package-level state, so tests build a fresh command tree per case.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// Exit codes shared by every command. Commands that report a difference (diff)
// use ExitChanges; anything that went wrong is ExitFailure.
const (
	ExitOK      = 0
	ExitChanges = 1
	ExitFailure = 2
)

// Streams are the command's standard streams: data goes to Out, messages for
// people go to ErrOut.
type Streams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// DefaultStreams returns the process's stdin, stdout and stderr.
func DefaultStreams() Streams {
	return Streams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
}

// ExitError carries a specific exit code out of a command. Its message, if
// any, has already been shown or is shown by Execute.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit code %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// NewRootCommand builds the converge command tree.
func NewRootCommand(streams Streams) *cobra.Command {
	root := &cobra.Command{
		Use:   "converge",
		Short: "GitOps continuous delivery for Kubernetes",
		Long: `converge keeps Kubernetes clusters in step with Git: it renders the desired
state from a repository, diffs it against the live cluster, syncs with
server-side apply, prunes what Git no longer has and heals drift.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			// Commands report through their own output; controller-runtime's
			// logging would only add noise. The agent sets a real logger
			// (controller-runtime takes the first one set).
			if cmd.Name() != "agent" {
				ctrllog.SetLogger(logr.Discard())
			}
		},
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.AddCommand(
		NewVersionCommand(streams),
		NewBuildCommand(streams),
		NewMigrateCommand(streams),
		NewDiffCommand(streams),
		NewSyncCommand(streams),
		NewAgentCommand(streams),
		NewInstallCommand(streams),
		NewBootstrapCommand(streams),
		NewAppCommand(streams),
		NewGetCommand(streams),
		NewImagesCommand(streams),
		NewHistoryCommand(streams),
		NewRollbackCommand(streams),
		NewVerifyCommand(streams),
		NewSealCommand(streams),
		NewUICommand(streams),
		NewKeysCommand(streams),
		NewWaitCommand(streams),
		NewSuspendCommand(streams),
		NewResumeCommand(streams),
		NewClusterCommand(streams),
		NewPushCommand(streams),
	)
	return root
}

// Execute runs the command tree with args and returns the process exit code.
// Errors are printed to ErrOut once, here.
func Execute(ctx context.Context, streams Streams, args []string) int {
	root := NewRootCommand(streams)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var exit *ExitError
	if errors.As(err, &exit) {
		if exit.Err != nil {
			fmt.Fprintln(streams.ErrOut, "Error:", exit.Err)
		}
		return exit.Code
	}
	fmt.Fprintln(streams.ErrOut, "Error:", err)
	return ExitFailure
}
