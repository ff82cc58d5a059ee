package ui

import (
	"context"
	"fmt"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

// Change says that something about an Application changed: the
// Application itself ("app"), its history record ("history") or its
// events ("event"). It carries names only: a page that hears it reads
// what changed again, as its viewer.
type Change struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Deleted   bool   `json:"deleted,omitempty"`
}

// Hub watches Applications, history records and the Applications' events,
// one watch per kind however many pages are open, and fans each change out
// to the pages that subscribed. It also serves the Application list from
// its cache.
type Hub struct {
	cache cache.Cache

	mu   sync.Mutex
	subs map[chan Change]struct{}
}

// HubOptions say what the hub watches with.
type HubOptions struct {
	// Namespaces, when set, are the only namespaces watched.
	Namespaces []string
	// Scheme must know converge's and Kubernetes' types.
	Scheme *runtime.Scheme
}

// NewHub makes a hub watching through cfg; Start runs it.
func NewHub(cfg *rest.Config, o HubOptions) (*Hub, error) {
	history := labels.SelectorFromSet(labels.Set{engine.LabelRecord: engine.RecordHistory})
	appEvents := fields.OneTermEqualSelector("involvedObject.kind", "Application")
	var nss map[string]cache.Config
	if len(o.Namespaces) > 0 {
		nss = map[string]cache.Config{}
		for _, ns := range o.Namespaces {
			nss[ns] = cache.Config{}
		}
	}
	c, err := cache.New(cfg, cache.Options{
		Scheme:            o.Scheme,
		DefaultNamespaces: nss,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {Label: history, Transform: keepMeta},
			&corev1.Event{}:     {Field: appEvents, Transform: keepEventRef},
		},
	})
	if err != nil {
		return nil, err
	}
	return &Hub{cache: c, subs: map[chan Change]struct{}{}}, nil
}

// keepMeta drops a history record's content from the cache: the hub only
// needs to know it changed.
func keepMeta(obj any) (any, error) {
	if cm, ok := obj.(*corev1.ConfigMap); ok {
		cm.Data, cm.BinaryData = nil, nil
		cm.ManagedFields = nil
	}
	return obj, nil
}

// keepEventRef keeps only what routes an event to its Application.
func keepEventRef(obj any) (any, error) {
	if ev, ok := obj.(*corev1.Event); ok {
		ev.Message, ev.ManagedFields = "", nil
	}
	return obj, nil
}

// Start registers the watches and runs them until ctx ends.
func (h *Hub) Start(ctx context.Context) error {
	route := []struct {
		obj  client.Object
		kind string
		app  func(obj any) (ns, name string, ok bool)
	}{
		{&v1alpha1.Application{}, "app", func(obj any) (string, string, bool) {
			a, ok := obj.(*v1alpha1.Application)
			if !ok {
				return "", "", false
			}
			return a.Namespace, a.Name, true
		}},
		{&corev1.ConfigMap{}, "history", func(obj any) (string, string, bool) {
			cm, ok := obj.(*corev1.ConfigMap)
			if !ok || cm.Labels[engine.LabelApp] == "" {
				return "", "", false
			}
			return cm.Namespace, cm.Labels[engine.LabelApp], true
		}},
		{&corev1.Event{}, "event", func(obj any) (string, string, bool) {
			ev, ok := obj.(*corev1.Event)
			if !ok {
				return "", "", false
			}
			return ev.InvolvedObject.Namespace, ev.InvolvedObject.Name, true
		}},
	}
	for _, r := range route {
		inf, err := h.cache.GetInformer(ctx, r.obj)
		if err != nil {
			return fmt.Errorf("watching %T: %w", r.obj, err)
		}
		kind, app := r.kind, r.app
		send := func(obj any, deleted bool) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if ns, name, ok := app(obj); ok {
				h.publish(Change{Kind: kind, Namespace: ns, Name: name, Deleted: deleted && kind == "app"})
			}
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { send(obj, false) },
			UpdateFunc: func(_, obj any) { send(obj, false) },
			DeleteFunc: func(obj any) { send(obj, true) },
		}); err != nil {
			return err
		}
	}
	return h.cache.Start(ctx)
}

// WaitForSync waits until the hub's first lists are in.
func (h *Hub) WaitForSync(ctx context.Context) bool { return h.cache.WaitForCacheSync(ctx) }

// Subscribe returns a channel of changes and a function that ends the
// subscription. A subscriber too slow to keep up (its buffer full) is sent
// a "reload" change once room frees up, instead of the changes it missed.
func (h *Hub) Subscribe() (<-chan Change, func()) {
	ch := make(chan Change, 256)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

func (h *Hub) publish(c Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- c:
		default:
			// Full: the page reloads when it catches up.
			select {
			case <-ch:
			default:
			}
			select {
			case ch <- Change{Kind: "reload"}:
			default:
			}
		}
	}
}

// Applications lists the cached Applications in ns ("" for all), sorted by
// namespace and name. They are the cache's own: read them, never change
// them.
func (h *Hub) Applications(ctx context.Context, ns string) ([]v1alpha1.Application, error) {
	var list v1alpha1.ApplicationList
	// Read-only use: no deep copy of a thousand Applications per page.
	if err := h.cache.List(ctx, &list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return list.Items, nil
}

// Application is one cached Application; ok is false when there is none.
func (h *Hub) Application(ctx context.Context, ns, name string) (*v1alpha1.Application, bool, error) {
	app := &v1alpha1.Application{}
	err := h.cache.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app)
	if client.IgnoreNotFound(err) != nil {
		return nil, false, err
	}
	return app, err == nil, nil
}
