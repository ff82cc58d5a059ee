// Package poll waits for a condition, keeping the condition's last reason
// for the error when time runs out: "timed out: 2 of 3 nodes Ready" says
// more than "context deadline exceeded".
package poll

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Condition reports whether the awaited state holds; an error with false is
// the reason it does not yet, kept for the timeout message. An error made
// with Stop ends the wait at once: the state can no longer come.
type Condition func(ctx context.Context) (bool, error)

type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }
func (e stopError) Unwrap() error { return e.err }

// Stop marks err as final: Until returns it without waiting any longer.
func Stop(err error) error { return stopError{err} }

// Until checks cond every interval until it holds, ctx ends or timeout
// passes. Each check runs with its own deadline (at most 10 s), so the wait's
// deadline never turns a check's answer into a timeout error.
func Until(ctx context.Context, interval, timeout time.Duration, cond Condition) error {
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last error
	for {
		callCtx, callCancel := context.WithTimeout(ctx, 10*time.Second)
		ok, err := cond(callCtx)
		callCancel()
		if ok {
			return nil
		}
		var stop stopError
		if errors.As(err, &stop) {
			return stop.err
		}
		if err != nil {
			last = err
		}
		select {
		case <-waitCtx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if last != nil {
				return fmt.Errorf("timed out after %s: %w", timeout, last)
			}
			return fmt.Errorf("timed out after %s", timeout)
		case <-tick.C:
		}
	}
}
