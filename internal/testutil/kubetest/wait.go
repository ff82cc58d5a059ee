package kubetest

import (
	"context"
	"os"
	"testing"
	"time"
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
// returns the last reason cond gave, or ctx's error.
func WaitFor(ctx context.Context, timeout time.Duration, cond Condition) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		// Each check gets its own time, so the deadline of the wait never
		// turns a check's answer into a timeout error.
		callCtx, callCancel := context.WithTimeout(parent, 10*time.Second)
		done, err := cond(callCtx)
		callCancel()
		if done {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return last
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func keepNamespaces() bool { return os.Getenv("CONVERGE_KEEP_NAMESPACES") != "" }
