package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/poll"
)

// SuspendOptions holds the flags of `converge suspend` and `converge resume`.
type SuspendOptions struct {
	Streams
	Kube KubeFlags
	verb suspension
}

// suspension is what `converge suspend` or `converge resume` does.
type suspension int

const (
	suspendSyncing suspension = iota
	resumeSyncing
)

// NewSuspendCommand returns `converge suspend APP`.
func NewSuspendCommand(streams Streams) *cobra.Command {
	return newSuspendCommand(streams, suspendSyncing, "suspend APP", "Stop syncing an Application (and correcting drift) until resumed")
}

// NewResumeCommand returns `converge resume APP`.
func NewResumeCommand(streams Streams) *cobra.Command {
	return newSuspendCommand(streams, resumeSyncing, "resume APP", "Resume syncing a suspended Application")
}

func newSuspendCommand(streams Streams, verb suspension, use, short string) *cobra.Command {
	o := &SuspendOptions{Streams: streams, verb: verb}
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.Run(cmd.Context(), args[0]) },
	}
	o.Kube.Bind(cmd.Flags())
	return cmd
}

// Run sets spec.suspend (resuming also asks for a sync).
func (o *SuspendOptions) Run(ctx context.Context, name string) error {
	c, ns, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	act, verb := newActor(ctx, c).Resume, "resumed"
	if o.verb == suspendSyncing {
		act, verb = newActor(ctx, c).Suspend, "suspended"
	}
	d, err := act(ctx, ns, name)
	if err != nil {
		return err
	}
	warnRecord(o.Streams, d)
	fmt.Fprintf(o.ErrOut, "Application %s/%s %s\n", ns, name, verb)
	return nil
}

// WaitOptions holds the flags of `converge wait`.
type WaitOptions struct {
	Streams
	Kube    KubeFlags
	Health  bool
	Sync    bool
	Timeout time.Duration
	// Revision, when set, must also be the synced revision.
	Revision string
}

// NewWaitCommand returns `converge wait APP`.
func NewWaitCommand(streams Streams) *cobra.Command {
	o := &WaitOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "wait APP",
		Short: "Wait until an Application is Synced and/or Healthy (both when neither flag is given)",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return o.Run(cmd.Context(), args[0], "") },
	}
	o.Kube.Bind(cmd.Flags())
	cmd.Flags().BoolVar(&o.Health, "health", false, "wait for Healthy")
	cmd.Flags().BoolVar(&o.Sync, "sync", false, "wait for Synced")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 5*time.Minute, "give up after this long")
	return cmd
}

// Run waits. With handled set, it also waits until the agent has acted on
// that sync request.
func (o *WaitOptions) Run(ctx context.Context, name, handled string) error {
	c, ns, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	wantSync, wantHealth := o.Sync || !o.Health, o.Health || !o.Sync
	var last string
	err = poll.Until(ctx, 250*time.Millisecond, o.Timeout, func(ctx context.Context) (bool, error) {
		app := &v1alpha1.Application{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
			return false, err
		}
		ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		msg := ""
		if ready != nil {
			msg = ready.Message
		}
		state := fmt.Sprintf("sync %s, health %s: %s", orDash(string(app.Status.Sync.Status)), orDash(string(app.Status.Health.Status)), msg)
		if state != last {
			fmt.Fprintln(o.ErrOut, name+": "+state)
			last = state
		}
		if handled != "" && app.Status.LastHandledRequest != handled {
			return false, nil
		}
		if stalled := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionStalled); stalled != nil && stalled.Status == metav1.ConditionTrue {
			return false, poll.Stop(fmt.Errorf("stalled: %s", stalled.Message))
		}
		ok := app.Status.ObservedGeneration == app.Generation
		ok = ok && (o.Revision == "" || app.Status.Sync.Revision == o.Revision)
		ok = ok && (!wantSync || app.Status.Sync.Status == v1alpha1.SyncStatusSynced)
		ok = ok && (!wantHealth || app.Status.Health.Status == v1alpha1.HealthHealthy)
		if !ok && app.Status.LastError != "" {
			err := fmt.Errorf("%s", app.Status.LastError)
			if handled != "" {
				// The sync we asked for failed: that is the answer.
				return false, poll.Stop(err)
			}
			return false, err
		}
		return ok, nil
	})
	return err
}

// requestSync asks the agent to sync name now (only the selected objects,
// if any are); it returns the request's
// mark, which `waitForRequest` waits on.
func requestSync(ctx context.Context, streams Streams, kube KubeFlags, name string, only ...engine.ResourceSelector) (string, error) {
	c, ns, err := appClient(&kube)
	if err != nil {
		return "", err
	}
	d, err := newActor(ctx, c).Sync(ctx, ns, name, only...)
	if err != nil {
		return "", err
	}
	warnRecord(streams, d)
	fmt.Fprintf(streams.ErrOut, "Sync of %s/%s requested\n", ns, name)
	return d.Request, nil
}

// waitForRequest waits until the agent has handled request and the app
// is synced and healthy, or says why not.
func waitForRequest(ctx context.Context, streams Streams, kube KubeFlags, name, request string, timeout time.Duration) error {
	w := &WaitOptions{Streams: streams, Kube: kube, Sync: true, Timeout: timeout}
	return w.Run(ctx, name, request)
}
