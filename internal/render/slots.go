package render

import (
	"context"
	"errors"
	"sync"
)

// slots shares the render slots between queues. The trusted queue ("",
// the agent's own apps and the CLI) may use them all; a tenant's queue at
// most half (at least one), so one tenant's endless renders always leave
// a slot for the others. A freed slot goes to the queues with waiters in
// turn (round robin), each queue's waiters first come, first served.
type slots struct {
	mu      sync.Mutex
	free    int
	total   int
	holding map[string]int
	waiting map[string][]chan struct{}
	// turn is the queues with waiters, in the order they are served.
	turn []string
}

func newSlots(n int) *slots {
	return &slots{free: n, total: n, holding: map[string]int{}, waiting: map[string][]chan struct{}{}}
}

// limit is the most slots queue may hold at once.
func (s *slots) limit(queue string) int {
	if queue == "" {
		return s.total
	}
	return max(1, s.total/2)
}

// ErrBusy is a tenant's render refused at once because its queue already
// holds its share of the slots and as many renders wait: the caller tries
// again later instead of parking a worker of its own (a reconciler's
// workers are shared by every tenant).
var ErrBusy = errors.New("the tenant's renders already hold their share of the render slots")

// acquire waits for a slot for queue; release gives it back. A tenant's
// queue holding its limit with as many waiting is refused (ErrBusy).
func (s *slots) acquire(ctx context.Context, queue string) (release func(), err error) {
	ch := make(chan struct{})
	s.mu.Lock()
	if queue != "" && s.holding[queue] >= s.limit(queue) && len(s.waiting[queue]) >= s.limit(queue) {
		s.mu.Unlock()
		return nil, ErrBusy
	}
	if len(s.waiting[queue]) == 0 {
		s.turn = append(s.turn, queue)
	}
	s.waiting[queue] = append(s.waiting[queue], ch)
	s.dispatch()
	s.mu.Unlock()
	release = func() {
		s.mu.Lock()
		s.holding[queue]--
		if s.holding[queue] == 0 {
			delete(s.holding, queue)
		}
		s.free++
		s.dispatch()
		s.mu.Unlock()
	}
	select {
	case <-ch:
		return release, nil
	case <-ctx.Done():
		s.mu.Lock()
		select {
		case <-ch: // granted meanwhile: hand it back
			s.mu.Unlock()
			release()
		default:
			s.forget(queue, ch)
			s.mu.Unlock()
		}
		return nil, ctx.Err()
	}
}

// dispatch grants free slots to waiting queues in turn, skipping those
// at their limit. s.mu is held.
func (s *slots) dispatch() {
	for s.free > 0 {
		granted := false
		for i := 0; i < len(s.turn); i++ {
			q := s.turn[i]
			if s.holding[q] >= s.limit(q) {
				continue
			}
			w := s.waiting[q]
			close(w[0])
			s.waiting[q] = w[1:]
			s.holding[q]++
			s.free--
			// The queue goes to the back of the turn, or leaves it.
			s.turn = append(s.turn[:i], s.turn[i+1:]...)
			if len(s.waiting[q]) > 0 {
				s.turn = append(s.turn, q)
			} else {
				delete(s.waiting, q)
			}
			granted = true
			break
		}
		if !granted {
			return
		}
	}
}

// forget removes a waiter that gave up. s.mu is held.
func (s *slots) forget(queue string, ch chan struct{}) {
	w := s.waiting[queue]
	for i, c := range w {
		if c == ch {
			s.waiting[queue] = append(w[:i], w[i+1:]...)
			break
		}
	}
	if len(s.waiting[queue]) > 0 {
		return
	}
	delete(s.waiting, queue)
	for i, q := range s.turn {
		if q == queue {
			s.turn = append(s.turn[:i], s.turn[i+1:]...)
			break
		}
	}
}
