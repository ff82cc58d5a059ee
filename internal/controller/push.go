package controller

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"converge.dev/converge/internal/engine"
)

// A push the webhook hands to the replica that reconciles the app is a
// request in memory: the app is woken through a channel and fetches at
// once, as an annotated request would make it, without the annotation's
// write (and its watch event at every replica). A push to 1,000 apps
// costs no request of its own. It is a hint: lost with the process, it
// is found by the app's next poll.

// RequestFetch asks the app key to fetch and sync at once, as a webhook
// delivery stamped at does. It reports false when this replica does not
// reconcile the app now (not the leader, another shard's, or the wake-up
// queue full): the caller annotates the app instead.
func (r *ApplicationReconciler) RequestFetch(key types.NamespacedName, at time.Time) bool {
	return r.RequestSync(key, at, engine.Trigger{Type: engine.TriggerWebhook})
}

// RequestSync is RequestFetch with the trigger the sync records: an image
// automation's push names itself and the tags it wrote.
func (r *ApplicationReconciler) RequestSync(key types.NamespacedName, at time.Time, trigger engine.Trigger) bool {
	if r.wake == nil || !r.reconciling(key) {
		return false
	}
	r.memory.with(key, func(m *appMemory) {
		if m.push.Before(at) {
			m.push, m.pushTrigger = at, trigger
		}
	})
	obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	select {
	case r.wake <- event.GenericEvent{Object: obj}:
		return true
	default:
		return false
	}
}

// reconciling reports whether this replica reconciles key now.
func (r *ApplicationReconciler) reconciling(key types.NamespacedName) bool {
	if r.Shards != nil {
		owns, _ := r.Shards.Owns(key)
		return owns
	}
	select {
	case <-r.elected:
		return true
	default:
		return false
	}
}

// takePush returns and forgets the push requested in memory for key, as
// the request it makes.
func (r *ApplicationReconciler) takePush(key types.NamespacedName) (q request, ok bool) {
	r.memory.with(key, func(m *appMemory) {
		if ok = !m.push.IsZero(); ok {
			q = request{at: m.push.UTC().Format(time.RFC3339Nano), trigger: m.pushTrigger, inMemory: true}
		}
		m.push, m.pushTrigger = time.Time{}, engine.Trigger{}
	})
	return q, ok
}
