package cli

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/actions"
)

// whoami asks the apiserver who the client is; "" when it does not say.
func whoami(ctx context.Context, c client.Client) string { return actions.Whoami(ctx, c) }

// newActor returns an actor acting (and recording) as the kubeconfig's user.
func newActor(ctx context.Context, c client.Client) *actions.Actor {
	return actions.New(ctx, c, "cli")
}

// warnRecord prints what went wrong recording a done action.
func warnRecord(streams Streams, d actions.Done) {
	if d.Warning != "" {
		fmt.Fprintln(streams.ErrOut, "warning:", d.Warning)
	}
}

// emitEvent records a Kubernetes Event about ref, from the CLI.
func emitEvent(ctx context.Context, c client.Client, ref corev1.ObjectReference, typ, reason, msg string) error {
	return actions.Event(ctx, c, "cli", ref, typ, reason, msg)
}
