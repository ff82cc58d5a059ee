package v1alpha1

import (
	"math"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of the fields the apiserver defaults (the CRDs' defaults say the
// same); the methods below apply them to objects that did not pass through
// an apiserver (tests, `converge app create --dry-run`, older objects).
const (
	DefaultInterval     = 3 * time.Minute
	DefaultSyncTimeout  = 5 * time.Minute
	DefaultHistoryLimit = 20
)

// GetInterval is how often the app checks its repository (and resyncs).
func (p *SyncPolicy) GetInterval() time.Duration { return durationOr(p.Interval, DefaultInterval) }

// GetTimeout bounds one sync, its health waits included.
func (p *SyncPolicy) GetTimeout() time.Duration { return durationOr(p.Timeout, DefaultSyncTimeout) }

// GetHistoryLimit is how many syncs (and actions) the app's history keeps.
func (s *ApplicationSpec) GetHistoryLimit() int {
	if s.HistoryLimit == nil || *s.HistoryLimit <= 0 {
		return DefaultHistoryLimit
	}
	return int(*s.HistoryLimit)
}

// GetInterval is how often the set looks at its generators' sources.
func (s *ApplicationSetSpec) GetInterval() time.Duration {
	return durationOr(s.Interval, DefaultInterval)
}

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil || d.Duration <= 0 {
		return def
	}
	return d.Duration
}

// Delay is the wait before retry number attempt (1-based): Duration (5s),
// then ×Factor (2) each time, at most MaxDuration (3m). A nil Backoff is
// the defaults.
func (b *Backoff) Delay(attempt int32) time.Duration {
	base, factor, maxDelay := 5*time.Second, 2.0, 3*time.Minute
	if b != nil {
		base = durationOr(b.Duration, base)
		if b.Factor != nil && *b.Factor >= 1 {
			factor = float64(*b.Factor)
		}
		maxDelay = durationOr(b.MaxDuration, maxDelay)
	}
	d := time.Duration(float64(base) * math.Pow(factor, float64(attempt-1)))
	if d > maxDelay || d <= 0 {
		d = maxDelay
	}
	return d
}
