package controller

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"converge.dev/converge/api/v1alpha1"
)

func TestNextPoll_CountsFromTheAnswerUsedWithinATenthOfJitter(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	interval := 30 * time.Second
	app := func(name string) *v1alpha1.Application {
		return &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name}}
	}
	for _, name := range []string{"a", "b", "c", "web", "api"} {
		fresh := nextPoll(app(name), now, interval, now)
		if fresh < interval || fresh >= interval+interval/10 {
			t.Errorf("%s: after a fresh answer, next poll in %s; want [30s, 33s)", name, fresh)
		}
		if again := nextPoll(app(name), now, interval, now); again != fresh {
			t.Errorf("%s: jitter changed between calls: %s then %s", name, fresh, again)
		}
		// An answer another app got 20 s ago: poll 20 s earlier, so a
		// push made right after it is seen within 1.1 intervals.
		if got := nextPoll(app(name), now.Add(-20*time.Second), interval, now); got != fresh-20*time.Second {
			t.Errorf("%s: with a 20 s old answer, next poll in %s; want %s", name, got, fresh-20*time.Second)
		}
		if got := nextPoll(app(name), now.Add(-time.Hour), interval, now); got != time.Second {
			t.Errorf("%s: with an old answer, next poll in %s; want the 1 s floor", name, got)
		}
	}
}
