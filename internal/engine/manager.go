package engine

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Labels and annotations converge reads and writes on managed objects.
const (
	// LabelApp holds the name of the app that owns an object. Watches and
	// lists select on it.
	LabelApp = "converge.dev/app"
	// AnnotationOwner holds "namespace/name" of the owning app's record;
	// together with LabelApp it is what prune checks before deleting.
	AnnotationOwner = "converge.dev/owner"
	// AnnotationSyncWave orders objects: lower waves first; default 0.
	AnnotationSyncWave = "converge.dev/sync-wave"
	// AnnotationPrune set to "false" keeps an object when it leaves Git
	// and when its app is deleted.
	AnnotationPrune = "converge.dev/prune"
	// AnnotationDelete set to "false" keeps an object when its app is
	// deleted (Argo CD's Delete=false); it is pruned as usual when it
	// leaves Git.
	AnnotationDelete = "converge.dev/delete"
	// AnnotationForce set to "true" lets a sync delete and recreate an
	// object whose change touches an immutable field.
	AnnotationForce = "converge.dev/force"
	// AnnotationAdopt set to "true" on a manifest lets a sync take over an
	// existing object that no app owns, where policy would refuse it.
	AnnotationAdopt = "converge.dev/adopt"
	// FieldManager prefixes each app's field manager (App.FieldManager);
	// alone, it is the manager every app shared before, whose fields an
	// app's first apply takes over (takeOver).
	FieldManager = "converge.dev"
)

// Options configure a Manager.
type Options struct {
	// FieldManager names converge's own writes that belong to no app.
	FieldManager string
	// Concurrency bounds requests in flight.
	Concurrency int
}

// ClientRate is the client-side rate limit for a QPS and burst asked for:
// none for a QPS of 0 (client-go's way of saying so is a negative QPS),
// and a burst of at least the QPS otherwise.
func ClientRate(qps float32, burst int) (float32, int) {
	if qps <= 0 {
		return -1, 0
	}
	return qps, max(burst, int(qps))
}

// DefaultOptions returns the options converge runs with.
func DefaultOptions() Options {
	return Options{FieldManager: FieldManager, Concurrency: 32}
}

// Manager plans and applies desired sets against one cluster.
type Manager struct {
	client client.Client
	// watcher watches hooks until they finish.
	watcher client.WithWatch
	// discovery describes the cluster to charts (Capabilities).
	discovery discovery.DiscoveryInterface
	caps      capabilitiesCache
	mapper    meta.RESTMapper
	opts      Options
}

// New returns a Manager for the cluster cfg points at. A config with no
// rate limit of its own (QPS 0, as a kubeconfig gives) gets none on the
// client side, rather than client-go's 5 a second: Concurrency bounds
// requests in flight, and the apiserver's priority and fairness queues
// them, so that the apiserver, not converge, is the bottleneck.
func New(cfg *rest.Config, opts Options) (*Manager, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.RateLimiter == nil {
		cfg.QPS, cfg.Burst = ClientRate(cfg.QPS, cfg.Burst)
	}
	if opts.FieldManager == "" {
		opts.FieldManager = FieldManager
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultOptions().Concurrency
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("discovering the cluster's APIs: %w", err)
	}
	c, err := client.NewWithWatch(cfg, client.Options{HTTPClient: httpClient, Mapper: mapper})
	if err != nil {
		return nil, err
	}
	disco, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	return &Manager{client: c, watcher: c, discovery: disco, mapper: mapper, opts: opts}, nil
}

// Client is the Manager's uncached client.
func (m *Manager) Client() client.Client { return m.client }
