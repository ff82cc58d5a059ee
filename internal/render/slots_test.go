package render

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A tenant holding every slot it may, with more waiting, leaves the rest
// to another tenant at once; the trusted queue may use every slot.
func TestSlots_ATenantHoldsAtMostHalf(t *testing.T) {
	ctx := context.Background()
	s := newSlots(4)
	var held []func()
	for range 2 {
		r, err := s.acquire(ctx, "tenant-a")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	// A third for tenant a waits although two slots are free.
	third := make(chan func(), 1)
	go func() {
		r, _ := s.acquire(ctx, "tenant-a")
		third <- r
	}()
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.waiting["tenant-a"]) == 1 })
	// Tenant b gets both free slots at once.
	for range 2 {
		short, cancel := context.WithTimeout(ctx, time.Second)
		r, err := s.acquire(short, "tenant-b")
		cancel()
		if err != nil {
			t.Fatalf("tenant b waited behind tenant a: %v", err)
		}
		held = append(held, r)
	}
	select {
	case <-third:
		t.Fatal("tenant a got more than half the slots")
	default:
	}
	// A slot tenant a gives back goes to its waiter, not past its limit.
	held[0]()
	r := <-third
	r()
	for _, r := range held[1:] {
		r()
	}
	// The trusted queue takes all four.
	for range 4 {
		short, cancel := context.WithTimeout(ctx, time.Second)
		r, err := s.acquire(short, "")
		cancel()
		if err != nil {
			t.Fatalf("the trusted queue was held to half: %v", err)
		}
		defer r()
	}
}

// Freed slots go to the waiting queues in turn, and a waiter that gives
// up leaves no slot behind.
func TestSlots_RoundRobinAndCancel(t *testing.T) {
	ctx := context.Background()
	s := newSlots(2)
	a, _ := s.acquire(ctx, "")
	b, _ := s.acquire(ctx, "")
	got := make(chan string, 4)
	waiters := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		for _, w := range s.waiting {
			n += len(w)
		}
		return n
	}
	for i, q := range []string{"x", "x", "y"} {
		go func() {
			r, err := s.acquire(ctx, q)
			if err == nil {
				got <- q
				defer r()
				<-ctx.Done()
			}
		}()
		waitFor(t, func() bool { return waiters() == i+1 })
	}
	a()
	b()
	first, second := <-got, <-got
	if first == second {
		t.Fatalf("slots went to %s and %s, want one each", first, second)
	}
	// Cancelled while waiting: nothing held afterwards.
	s2 := newSlots(1)
	r, _ := s2.acquire(ctx, "q")
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := s2.acquire(short, "q"); err == nil {
		t.Fatal("acquired past the limit")
	}
	r()
	if s2.free != 1 || len(s2.waiting) != 0 || len(s2.turn) != 0 {
		t.Fatalf("after a cancel: free %d, waiting %v, turn %v", s2.free, s2.waiting, s2.turn)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(time.Millisecond)
	}
}

// A tenant's queue at its limit with as many waiting refuses more at once
// (ErrBusy), so one tenant never parks more than twice its share of
// callers; the trusted queue always waits.
func TestSlots_ATenantParksAtMostTwiceItsShare(t *testing.T) {
	ctx := context.Background()
	s := newSlots(2)
	held, _ := s.acquire(ctx, "tenant-a")
	waiting := make(chan error, 1)
	go func() {
		r, err := s.acquire(ctx, "tenant-a")
		if err == nil {
			r()
		}
		waiting <- err
	}()
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.waiting["tenant-a"]) == 1 })
	if _, err := s.acquire(ctx, "tenant-a"); !errors.Is(err, ErrBusy) {
		t.Fatalf("a third render of tenant a: %v, want ErrBusy", err)
	}
	held()
	if err := <-waiting; err != nil {
		t.Fatal(err)
	}
}
