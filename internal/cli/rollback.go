package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/actions"
	"converge.dev/converge/internal/poll"
)

// RollbackOptions holds the flags of `converge rollback`.
type RollbackOptions struct {
	Streams
	Kube    KubeFlags
	Pin     bool
	Unpin   bool
	Wait    bool
	Timeout time.Duration
}

// NewRollbackCommand returns `converge rollback APP [ID|REVISION]`.
func NewRollbackCommand(streams Streams) *cobra.Command {
	o := &RollbackOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "rollback APP [ID|REVISION]",
		Short: "Roll an Application back to an earlier revision, in Git (default) or by pinning",
		Long: `Roll the Application APP back to the revision of history entry ID, or to
REVISION (a commit SHA, or a prefix of one in the history). Without either,
the newest successful sync of a revision other than the current one.

By default the rollback is Git-native: the agent checks that the old tree
still renders, writes a commit on the tracked branch that restores the app's
path to the old content (its message names the range undone), pushes it with
the app's credentials (they need write access) and syncs it. Git stays the
source of truth and automated sync stays on.

--pin instead holds the Application at the old revision (spec.pin) until
'converge rollback APP --unpin'; status and the Pinned condition say how far
the branch has moved on meanwhile.

Waits for the sync unless --wait=false. Exit status: 0 done, 2 refused or
failed.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := ""
			if len(args) == 2 {
				target = args[1]
			}
			return o.Run(cmd.Context(), args[0], target)
		},
	}
	o.Kube.Bind(cmd.Flags())
	f := cmd.Flags()
	f.BoolVar(&o.Pin, "pin", false, "pin the Application to the revision instead of committing to Git")
	f.BoolVar(&o.Unpin, "unpin", false, "remove the pin: follow the branch again")
	f.BoolVar(&o.Wait, "wait", true, "wait until the Application is synced and healthy")
	f.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "give up waiting after this long")
	return cmd
}

// Run rolls back.
func (o *RollbackOptions) Run(ctx context.Context, name, target string) error {
	if o.Pin && o.Unpin {
		return fmt.Errorf("give --pin or --unpin, not both")
	}
	c, ns, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	actor := newActor(ctx, c)
	if o.Unpin {
		if target != "" {
			return fmt.Errorf("--unpin takes no revision")
		}
		d, err := actor.Unpin(ctx, ns, name)
		if errors.Is(err, actions.ErrNotPinned) {
			fmt.Fprintf(o.ErrOut, "Application %s/%s is not pinned\n", ns, name)
			return nil
		}
		if err != nil {
			return err
		}
		warnRecord(o.Streams, d)
		fmt.Fprintf(o.ErrOut, "Application %s/%s unpinned; following its branch again\n", ns, name)
		if !o.Wait {
			return nil
		}
		w := &WaitOptions{Streams: o.Streams, Kube: o.Kube, Timeout: o.Timeout}
		return w.Run(ctx, name, d.Request)
	}
	mode := actions.RollbackGit
	if o.Pin {
		mode = actions.RollbackPin
	}
	d, err := actor.Rollback(ctx, ns, name, target, mode)
	if err != nil {
		return err
	}
	warnRecord(o.Streams, d)
	how := "git-native"
	if o.Pin {
		how = "pin"
	}
	fmt.Fprintf(o.ErrOut, "Rollback of %s/%s to %s requested (%s)\n", ns, name, short(d.Rollback.Target), how)
	if !o.Wait {
		return nil
	}
	return o.wait(ctx, c, ns, name, *d.Rollback)
}

// wait waits until the agent handled the request, then, as `converge
// wait` does, until the app is synced at the new revision and healthy.
func (o *RollbackOptions) wait(ctx context.Context, c client.Client, ns, name string, req v1alpha1.RollbackRequest) error {
	start := time.Now()
	var rb *v1alpha1.RollbackStatus
	err := poll.Until(ctx, 250*time.Millisecond, o.Timeout, func(ctx context.Context) (bool, error) {
		app := &v1alpha1.Application{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
			return false, err
		}
		rb = app.Status.Rollback
		if rb == nil || rb.Request != req.ID {
			return false, fmt.Errorf("the agent has not handled the request yet")
		}
		if rb.Error != "" {
			return false, poll.Stop(fmt.Errorf("rollback refused: %s", rb.Error))
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	w := &WaitOptions{Streams: o.Streams, Kube: o.Kube, Revision: rb.Commit, Timeout: max(o.Timeout-time.Since(start), time.Second)}
	if err := w.Run(ctx, name, ""); err != nil {
		return err
	}
	if req.Pin {
		fmt.Fprintf(o.ErrOut, "Pinned to %s; 'converge rollback %s --unpin' follows the branch again\n", short(rb.Commit), name)
	} else {
		fmt.Fprintf(o.ErrOut, "Rolled back: commit %s restores %s\n", short(rb.Commit), short(rb.Target))
	}
	return nil
}
