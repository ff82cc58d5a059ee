package controller

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

// appMemory is what this replica remembers of one Application between
// its reconciles. All of it can be lost (a restart, another shard taking
// the app over): it only saves work and writes.
type appMemory struct {
	// synced is the revision and generation of the last successful
	// reconcile. The cached Application a drift event brings may predate
	// our own last status update; this does not.
	synced syncedAt
	// status is the status last written: a reconcile working from a
	// cached copy older than that write must not write the same status
	// again.
	status *writtenStatus
	// pin is when the pinned app's branch was last compared with its pin.
	pin *pinCheck
	// stalled is the revision and generation that failed terminally (see
	// outcome.terminal): not tried again until one changes.
	stalled *syncedAt
	// failure counts the failed attempts since the last success, whether
	// or not their status could be written.
	failure failure
	// idle is what the last quiet plan started from (see idle.go).
	idle *idleState
	// owned: this replica reconciles the app (sharded agents).
	owned bool
	// push is when a webhook delivery asked, in memory, for a fetch (see
	// push.go); zero: none pending.
	push time.Time
	// pushTrigger is what the sync it asks for records.
	pushTrigger engine.Trigger
}

type writtenStatus struct {
	status *v1alpha1.ApplicationStatus
	at     time.Time
}

type syncedAt struct {
	revision   string
	generation int64
}

type pinCheck struct {
	revision string
	at       time.Time
}

// failure is what the agent remembers of an app's failed attempts.
type failure struct {
	attempts int32
	last     string
}

// memory holds every app's appMemory; forgetting an app is one delete.
type memory struct {
	mu    sync.Mutex
	apps  map[types.NamespacedName]*appMemory
	owned int
}

// with runs fn on key's memory, made if there is none, under the lock.
func (m *memory) with(key types.NamespacedName, fn func(*appMemory)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	am, ok := m.apps[key]
	if !ok {
		if m.apps == nil {
			m.apps = map[types.NamespacedName]*appMemory{}
		}
		am = &appMemory{}
		m.apps[key] = am
	}
	fn(am)
}

// forget drops key's memory; it reports whether the app was owned.
func (m *memory) forget(key types.NamespacedName) (owned bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if am, ok := m.apps[key]; ok && am.owned {
		owned = true
		m.owned--
	}
	delete(m.apps, key)
	return owned
}

// own counts app as this replica's (converge_shard_applications).
func (r *ApplicationReconciler) own(key types.NamespacedName) {
	r.memory.with(key, func(m *appMemory) {
		if !m.owned {
			m.owned = true
			r.memory.owned++
		}
		shardApplications.Set(float64(r.memory.owned))
	})
}

func (r *ApplicationReconciler) forget(key types.NamespacedName) {
	if r.memory.forget(key) {
		r.memory.mu.Lock()
		shardApplications.Set(float64(r.memory.owned))
		r.memory.mu.Unlock()
	}
	r.Clusters.release(key)
}

// stall remembers a terminal failure of revision at generation.
func (r *ApplicationReconciler) stall(key types.NamespacedName, revision string, generation int64) {
	r.memory.with(key, func(m *appMemory) { m.stalled = &syncedAt{revision: revision, generation: generation} })
}

// stalledOn reports whether revision at generation failed terminally.
func (r *ApplicationReconciler) stalledOn(key types.NamespacedName, revision string, generation int64) (stalled bool) {
	r.memory.with(key, func(m *appMemory) {
		stalled = m.stalled != nil && *m.stalled == syncedAt{revision: revision, generation: generation}
	})
	return stalled
}

func (r *ApplicationReconciler) seen(key types.NamespacedName) (s syncedAt) {
	r.memory.with(key, func(m *appMemory) { s = m.synced })
	return s
}

// remember notes a successful reconcile, which ends any stall.
func (r *ApplicationReconciler) remember(key types.NamespacedName, s syncedAt) {
	r.memory.with(key, func(m *appMemory) { m.synced, m.stalled = s, nil })
}

// wrote reports whether status is exactly what was last written.
func (r *ApplicationReconciler) wrote(key types.NamespacedName, status *v1alpha1.ApplicationStatus) (same bool) {
	r.memory.with(key, func(m *appMemory) {
		same = m.status != nil && equality.Semantic.DeepEqual(m.status.status, status)
	})
	return same
}

// written remembers the status just written.
func (r *ApplicationReconciler) written(key types.NamespacedName, status *v1alpha1.ApplicationStatus) {
	r.memory.with(key, func(m *appMemory) { m.status = &writtenStatus{status: status.DeepCopy(), at: r.now()} })
}

// staleCopy reports whether app, read from the cache, predates a status
// this agent wrote moments ago: acting on it would redo work and write a
// status that conflicts. The informer catches up within milliseconds; after
// a few seconds a difference means someone else wrote, and the copy is used.
func (r *ApplicationReconciler) staleCopy(key types.NamespacedName, app *v1alpha1.Application) (stale bool) {
	r.memory.with(key, func(m *appMemory) {
		stale = m.status != nil && r.now().Sub(m.status.at) < 3*time.Second && !equality.Semantic.DeepEqual(m.status.status, &app.Status)
	})
	return stale
}

func (r *ApplicationReconciler) idleState(key types.NamespacedName) (s idleState, ok bool) {
	r.memory.with(key, func(m *appMemory) {
		if m.idle != nil {
			s, ok = *m.idle, true
		}
	})
	return s, ok
}

func (r *ApplicationReconciler) setIdle(key types.NamespacedName, s *idleState) {
	r.memory.with(key, func(m *appMemory) { m.idle = s })
}

// pinCheckedAt is when key's pin was last compared with its branch.
func (r *ApplicationReconciler) pinCheckedAt(key types.NamespacedName) (c pinCheck, ok bool) {
	r.memory.with(key, func(m *appMemory) {
		if m.pin != nil {
			c, ok = *m.pin, true
		}
	})
	return c, ok
}

func (r *ApplicationReconciler) pinChecked(key types.NamespacedName, c pinCheck) {
	r.memory.with(key, func(m *appMemory) { m.pin = &c })
}

// noteFailure remembers attempt number n of an app and its error; a count
// lower than one remembered (its status write was lost) continues it.
func (r *ApplicationReconciler) noteFailure(key types.NamespacedName, n int32, msg string) {
	r.memory.with(key, func(m *appMemory) {
		if prev := m.failure.attempts; n <= prev {
			n = prev + 1
		}
		m.failure = failure{attempts: n, last: msg}
	})
}

// takeFailure returns and forgets what noteFailure remembered.
func (r *ApplicationReconciler) takeFailure(key types.NamespacedName) (f failure) {
	r.memory.with(key, func(m *appMemory) { f, m.failure = m.failure, failure{} })
	return f
}
