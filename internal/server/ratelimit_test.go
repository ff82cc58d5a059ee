package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRateLimit_EachClientHasItsOwnBudget(t *testing.T) {
	l := &RateLimit{Rate: 1, Burst: 3}
	h := l.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	status := func(remote string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/hooks/git", nil)
		req.RemoteAddr = remote
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for i := range 3 {
		if got := status("10.0.0.1:1234"); got != http.StatusOK {
			t.Fatalf("request %d: %d", i, got)
		}
	}
	if got := status("10.0.0.1:999"); got != http.StatusTooManyRequests {
		t.Errorf("over the burst: %d, want 429", got)
	}
	if got := status("10.0.0.2:1234"); got != http.StatusOK {
		t.Errorf("another client: %d, want 200", got)
	}
}
