package poll

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUntil_KeepsTheLastReasonAndStopsOnStop(t *testing.T) {
	err := Until(context.Background(), time.Millisecond, 20*time.Millisecond, func(context.Context) (bool, error) {
		return false, errors.New("2 of 3 ready")
	})
	if err == nil || !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), "2 of 3 ready") {
		t.Fatalf("timeout error = %v", err)
	}
	calls := 0
	final := errors.New("stalled")
	err = Until(context.Background(), time.Millisecond, time.Minute, func(context.Context) (bool, error) {
		calls++
		return false, Stop(final)
	})
	if !errors.Is(err, final) || calls != 1 {
		t.Fatalf("Stop: err %v after %d calls; want the error after one", err, calls)
	}
}
