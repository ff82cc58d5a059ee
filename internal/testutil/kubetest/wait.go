package kubetest

import (
	"context"
	"os"
	"testing"
	"time"

	"converge.dev/converge/internal/poll"
)

// Condition reports whether the awaited state holds. A non-nil error with
// done=false is a reason to keep waiting, kept for the failure message.
type Condition func(ctx context.Context) (done bool, err error)

// Eventually polls cond every 50 ms until it holds, and fails t with the last
// reason if it does not within timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond Condition) {
	t.Helper()
	if err := WaitFor(context.Background(), timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// WaitFor polls cond every 50 ms until it holds or timeout passes; it then
// returns the last reason cond gave.
func WaitFor(ctx context.Context, timeout time.Duration, cond Condition) error {
	return poll.Until(ctx, 50*time.Millisecond, timeout, poll.Condition(cond))
}

func keepNamespaces() bool { return os.Getenv("CONVERGE_KEEP_NAMESPACES") != "" }
