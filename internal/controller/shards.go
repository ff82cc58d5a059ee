package controller

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Shards spreads Applications over agent replicas. Each replica holds a
// Lease of its own in the agent's namespace (label converge.dev/shard),
// renewed every quarter of Duration; the replicas whose Leases are current
// are the members, and each Application belongs to one of them by
// rendezvous hashing of its namespace/name: a member joining or leaving
// moves only the apps it gains or loses.
//
// No app is reconciled by two replicas at once: members are read every
// second, a replica whose view is older than two seconds owns nothing, and
// a replica owns nothing until its Lease is five seconds old (so every
// owning peer has seen it and let its apps go). A replica that could not
// renew its Lease for two thirds of Duration owns nothing either, before
// its peers, who wait for the Lease to expire, take its apps over. A
// replica that dies hands its apps over within Duration plus a second;
// one that stops cleanly deletes its Lease and hands them over at once.
type Shards struct {
	// Client reads and writes Leases (uncached).
	Client    client.Client
	Namespace string
	// ID names this replica (its pod's name).
	ID string
	// Duration is a Lease's lifetime (default 10s).
	Duration time.Duration
	// Moved, if set, is told when the apps this replica owns may have
	// changed (it enqueues every Application; reconciles skip others').
	Moved chan<- event.GenericEvent
	Now   func() time.Time

	mu      sync.RWMutex
	members []string
	// owning is whether this replica may own apps now.
	owning bool
	// renewed is when this replica's Lease was last renewed; refreshed
	// when the members were last read; joined when this replica first
	// saw itself among them.
	renewed, refreshed, joined time.Time
}

// Membership timing: members are read every refreshEvery; a view older
// than staleView owns nothing; a new member waits joinWait.
const (
	refreshEvery = time.Second
	staleView    = 2 * time.Second
	joinWait     = 5 * time.Second
)

// LabelShard marks the Leases of shard members.
const LabelShard = "converge.dev/shard"

func (s *Shards) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Shards) duration() time.Duration {
	if s.Duration <= 0 {
		return 10 * time.Second
	}
	return s.Duration
}

func (s *Shards) leaseName() string { return "converge-shard-" + s.ID }

// NeedLeaderElection: every replica is a member.
func (s *Shards) NeedLeaderElection() bool { return false }

// Start keeps this replica's Lease and the member list until ctx ends,
// then deletes the Lease so the others take over at once.
func (s *Shards) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("shards")
	d := s.duration()
	renew := time.NewTicker(d / 4)
	defer renew.Stop()
	refresh := time.NewTicker(refreshEvery)
	defer refresh.Stop()
	renewNow := true
	for {
		if renewNow {
			if err := s.renew(ctx); err != nil && ctx.Err() == nil {
				logger.Error(err, "renewing the shard Lease")
			}
		}
		if err := s.refresh(ctx); err != nil && ctx.Err() == nil {
			logger.Error(err, "listing shard members")
		}
		renewNow = false
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.owning = false
			s.mu.Unlock()
			lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: s.leaseName(), Namespace: s.Namespace}}
			stop, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return client.IgnoreNotFound(s.Client.Delete(stop, lease))
		case <-renew.C:
			renewNow = true
		case <-refresh.C:
		}
	}
}

// renew writes this replica's Lease (made on first use).
func (s *Shards) renew(ctx context.Context) error {
	now := metav1.NewMicroTime(s.now())
	lease := &coordinationv1.Lease{}
	key := client.ObjectKey{Namespace: s.Namespace, Name: s.leaseName()}
	err := s.Client.Get(ctx, key, lease)
	switch {
	case apierrors.IsNotFound(err):
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace, Labels: map[string]string{LabelShard: "member"}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(s.ID), LeaseDurationSeconds: ptr.To(int32(s.duration() / time.Second)),
				AcquireTime: &now, RenewTime: &now},
		}
		err = s.Client.Create(ctx, lease)
	case err == nil:
		lease.Spec.RenewTime = &now
		err = s.Client.Update(ctx, lease)
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.renewed = now.Time
	s.mu.Unlock()
	return nil
}

// refresh reads the members from their Leases and says whether this
// replica may own apps; a change wakes every app.
func (s *Shards) refresh(ctx context.Context) error {
	var leases coordinationv1.LeaseList
	if err := s.Client.List(ctx, &leases, client.InNamespace(s.Namespace), client.MatchingLabels{LabelShard: "member"}); err != nil {
		s.fence()
		return err
	}
	now := s.now()
	var members []string
	for _, l := range leases.Items {
		if l.Spec.HolderIdentity == nil || l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
			continue
		}
		if now.Sub(l.Spec.RenewTime.Time) > time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second {
			continue // expired: its holder is gone
		}
		members = append(members, *l.Spec.HolderIdentity)
	}
	slices.Sort(members)
	members = slices.Compact(members)
	s.mu.Lock()
	if s.joined.IsZero() && slices.Contains(members, s.ID) {
		s.joined = now
	}
	wasStale := now.Sub(s.refreshed) >= staleView
	s.refreshed = now
	owning := !s.joined.IsZero() && now.Sub(s.joined) >= joinWait && now.Sub(s.renewed) < s.duration()*2/3
	changed := owning != s.owning || !slices.Equal(members, s.members) || (owning && wasStale)
	s.members, s.owning = members, owning
	s.mu.Unlock()
	if changed {
		shardMembers.Set(float64(len(members)))
		log.FromContext(ctx).Info("shard members", "members", members, "owning", owning)
		s.wake()
	}
	return nil
}

// fence stops owning anything once the Lease may have expired.
func (s *Shards) fence() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owning && s.now().Sub(s.renewed) >= s.duration()*2/3 {
		s.owning = false
	}
}

func (s *Shards) wake() {
	if s.Moved == nil {
		return
	}
	select {
	case s.Moved <- event.GenericEvent{}:
	default: // a wake is pending already
	}
}

// Owns reports whether this replica reconciles app now; later, when app
// is this replica's by its members but it may not act yet (joining, or
// its view or Lease is stale): the reconcile is to be tried again soon.
func (s *Shards) Owns(app types.NamespacedName) (owns, later bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if owner(s.members, app) != s.ID {
		return false, false
	}
	now := s.now()
	if !s.owning || now.Sub(s.renewed) >= s.duration()*2/3 || now.Sub(s.refreshed) >= staleView {
		return false, true
	}
	return true, false
}

// owner is the member app belongs to: the highest hash of member and app.
func owner(members []string, app types.NamespacedName) string {
	var best string
	var bestHash uint64
	for _, m := range members {
		// A well-mixed hash: with FNV, names differing in one byte
		// ("shard-a", "shard-b") ranked the same way for every app.
		h := sha256.Sum256([]byte(m + "\x00" + app.String()))
		if sum := binary.BigEndian.Uint64(h[:8]); best == "" || sum > bestHash {
			best, bestHash = m, sum
		}
	}
	return best
}
