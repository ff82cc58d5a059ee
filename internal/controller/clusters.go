package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/redact"
)

// Clusters connects to the destination Clusters that Applications name.
// Per cluster it keeps one engine per account (client, discovery, REST
// mapper), one cache of the metadata of converge-owned objects there (the
// drift watches: drift on another cluster is an event, as at home), and a
// client for probes. The engines and the cache are made on first use and
// dropped when no Application uses the cluster any more.
//
// Credentials come only from the Secret a Cluster names in the agent's
// own namespace: a bearer token or a client certificate. Nothing that
// would run a program (kubeconfig exec plugins) is accepted.
type Clusters struct {
	// Reader reads Cluster objects (the manager's cache).
	Reader client.Reader
	// Secrets reads credential Secrets.
	Secrets client.Reader
	// Namespace is the agent's namespace, the only one credentials are
	// read from.
	Namespace string
	Scheme    *runtime.Scheme

	// ctrl is the Application controller that drift events feed.
	ctrl controller.Controller
	// ctx bounds the caches' lifetimes (the manager's).
	ctx context.Context

	mu    sync.Mutex
	conns map[string]*clusterConn
	// users maps each Application to the Cluster it last synced to.
	users map[types.NamespacedName]string
}

// clusterConn is the agent's connection to one Cluster.
type clusterConn struct {
	// key is the Cluster's generation and its Secret's resourceVersion
	// the connection was made from: a new token makes a new connection.
	key string
	cfg *rest.Config
	// probe asks the apiserver its version.
	probe discovery.DiscoveryInterface
	// engines by impersonated user ("" for the Cluster's own identity).
	engines *accounts
	cache   cache.Cache
	watches *driftWatches
	stop    context.CancelFunc
	users   int
}

// ClusterError says why a Cluster cannot be used; Reason is one of the
// Cluster reasons (ClusterNotFound, CredentialsInvalid,
// ClusterUnreachable).
type ClusterError struct {
	Cluster string
	Reason  string
	Err     error
}

func (e *ClusterError) Error() string {
	return fmt.Sprintf("Cluster %s: %s", e.Cluster, redact.Error(e.Err))
}

func (e *ClusterError) Unwrap() error { return e.Err }

// start lets Clusters feed drift events to c's queue; caches end with ctx.
func (c *Clusters) start(ctx context.Context, ctrl controller.Controller) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ctx, c.ctrl = ctx, ctrl
}

// connect returns the connection to the Cluster name, made anew when its
// spec or Secret changed.
func (c *Clusters) connect(ctx context.Context, name string) (*clusterConn, *v1alpha1.Cluster, error) {
	cl := &v1alpha1.Cluster{}
	if err := c.Reader.Get(ctx, client.ObjectKey{Name: name}, cl); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, &ClusterError{Cluster: name, Reason: v1alpha1.ReasonClusterNotFound, Err: errors.New("no such Cluster")}
		}
		return nil, nil, err
	}
	secret := &corev1.Secret{}
	ref := client.ObjectKey{Namespace: c.Namespace, Name: cl.Spec.SecretRef.Name}
	if err := c.Secrets.Get(ctx, ref, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, cl, &ClusterError{Cluster: name, Reason: v1alpha1.ReasonCredentialsInvalid, Err: fmt.Errorf("Secret %s/%s not found", ref.Namespace, ref.Name)}
		}
		return nil, cl, err
	}
	key := strconv.FormatInt(cl.Generation, 10) + "/" + secret.ResourceVersion
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[name]; ok && conn.key == key {
		return conn, cl, nil
	}
	cfg, err := restConfig(cl, secret)
	if err != nil {
		return nil, cl, &ClusterError{Cluster: name, Reason: v1alpha1.ReasonCredentialsInvalid, Err: err}
	}
	probe, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, cl, &ClusterError{Cluster: name, Reason: v1alpha1.ReasonCredentialsInvalid, Err: err}
	}
	conn := &clusterConn{key: key, cfg: cfg, probe: probe}
	if old, ok := c.conns[name]; ok {
		conn.users = old.users
		old.close()
	}
	if c.conns == nil {
		c.conns = map[string]*clusterConn{}
	}
	c.conns[name] = conn
	return conn, cl, nil
}

// restConfig is how to reach cl with the credentials in secret: the
// Cluster's server and CA, and a token or a client certificate. Dialing
// gives up after 5 seconds, so an unreachable cluster holds no worker
// for long.
func restConfig(cl *v1alpha1.Cluster, secret *corev1.Secret) (*rest.Config, error) {
	cfg := &rest.Config{
		Host:      cl.Spec.Server,
		UserAgent: "converge-agent",
		TLSClientConfig: rest.TLSClientConfig{
			CAData:     cl.Spec.CAData,
			ServerName: cl.Spec.TLSServerName,
		},
		Dial: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	if len(cfg.CAData) == 0 {
		cfg.CAData = secret.Data["ca.crt"]
	}
	token, crt, key := secret.Data["token"], secret.Data["tls.crt"], secret.Data["tls.key"]
	switch {
	case len(token) > 0:
		cfg.BearerToken = string(token)
	case len(crt) > 0 && len(key) > 0:
		cfg.CertData, cfg.KeyData = crt, key
	default:
		return nil, fmt.Errorf("Secret %s/%s holds neither token nor tls.crt and tls.key", secret.Namespace, secret.Name)
	}
	return cfg, nil
}

// engine returns the engine acting on the Cluster as user ("" for the
// Cluster's own identity, else impersonating user there).
func (conn *clusterConn) engine(user string) (*engine.Manager, error) {
	if conn.engines == nil {
		conn.engines = &accounts{}
	}
	return conn.engines.engine(conn.cfg, user)
}

// close stops the connection's cache and forgets its engines.
func (conn *clusterConn) close() {
	if conn.stop != nil {
		conn.stop()
	}
	conn.engines, conn.cache, conn.watches, conn.stop = nil, nil, nil, nil
}

// target returns where app's objects go on the Cluster name, acting as
// serviceAccount (impersonated there) or, with none, as the Cluster's
// own identity; app is counted as a user of the Cluster.
func (c *Clusters) target(ctx context.Context, app *v1alpha1.Application, serviceAccount string) (*target, error) {
	name := app.Spec.Destination.Cluster
	conn, cl, err := c.connect(ctx, name)
	if err != nil {
		return nil, err
	}
	// The last probe found it down: do not spend a timeout finding out
	// again (its recovery wakes the app).
	if ready := apimeta.FindStatusCondition(cl.Status.Conditions, v1alpha1.ConditionReady); ready != nil &&
		ready.Status == metav1.ConditionFalse && ready.ObservedGeneration == cl.Generation {
		return nil, &ClusterError{Cluster: name, Reason: ready.Reason, Err: errors.New(ready.Message)} // the message names no cluster
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.use(client.ObjectKeyFromObject(app), name)
	user := ""
	if serviceAccount != "" {
		user = serviceAccountUser(app.Namespace, serviceAccount)
	}
	eng, err := conn.engine(user)
	if err != nil {
		return nil, &ClusterError{Cluster: name, Reason: v1alpha1.ReasonClusterUnreachable, Err: err}
	}
	if conn.cache == nil {
		if err := c.startCache(conn); err != nil {
			return nil, &ClusterError{Cluster: name, Reason: v1alpha1.ReasonClusterUnreachable, Err: err}
		}
	}
	return &target{cluster: name, engine: eng, cache: conn.cache, watches: conn.watches}, nil
}

// startCache starts conn's cache of converge-owned objects' metadata,
// which the drift watches add kinds to.
func (c *Clusters) startCache(conn *clusterConn) error {
	if c.ctx == nil || c.ctrl == nil {
		return errors.New("the agent has not started")
	}
	owned, err := labels.NewRequirement(engine.LabelApp, selection.Exists, nil)
	if err != nil {
		return err
	}
	ch, err := cache.New(conn.cfg, cache.Options{Scheme: c.Scheme, DefaultLabelSelector: labels.NewSelector().Add(*owned)})
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(c.ctx)
	go func() { _ = ch.Start(ctx) }()
	conn.cache, conn.stop = ch, stop
	conn.watches = newDriftWatches(ch, c.ctrl)
	return nil
}

// use records that app syncs to cluster ("" for the agent's own),
// releasing the Cluster it used before. Callers hold c.mu.
func (c *Clusters) use(app types.NamespacedName, cluster string) {
	prev, ok := c.users[app]
	if ok && prev == cluster {
		return
	}
	if ok {
		delete(c.users, app)
		if conn := c.conns[prev]; conn != nil {
			conn.users--
			if conn.users <= 0 {
				conn.users = 0
				conn.close()
			}
		}
	}
	if cluster == "" {
		return
	}
	if c.users == nil {
		c.users = map[types.NamespacedName]string{}
	}
	c.users[app] = cluster
	if conn := c.conns[cluster]; conn != nil {
		conn.users++
	}
}

// release forgets app (deleted, or syncing to the agent's own cluster).
func (c *Clusters) release(app types.NamespacedName) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.use(app, "")
}

// reconnect drops the Cluster's engines and cache, which are made anew on
// next use: after an outage, new watches list at once where the old ones
// would wait out their backoff.
func (c *Clusters) reconnect(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[name]; ok {
		conn.close()
	}
}

// drop forgets the Cluster name (deleted).
func (c *Clusters) drop(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[name]; ok {
		conn.close()
		delete(c.conns, name)
	}
}

// probe asks the Cluster's apiserver for its version, within 5 seconds.
func (c *Clusters) probe(ctx context.Context, name string) (*version.Info, error) {
	conn, _, err := c.connect(ctx, name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	raw, err := conn.probe.RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		reason := v1alpha1.ReasonClusterUnreachable
		if apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err) {
			reason = v1alpha1.ReasonCredentialsInvalid
		}
		return nil, &ClusterError{Cluster: name, Reason: reason, Err: err}
	}
	info := &version.Info{}
	if err := json.Unmarshal(raw, info); err != nil {
		return nil, &ClusterError{Cluster: name, Reason: v1alpha1.ReasonClusterUnreachable, Err: fmt.Errorf("reading /version: %w", err)}
	}
	return info, nil
}

// unreachable reports whether err says a cluster did not answer at all
// (refused, timed out, reset), rather than answered with an error.
func unreachable(err error) bool {
	if err == nil {
		return false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return false
	}
	var nerr net.Error
	var operr *net.OpError
	return errors.As(err, &operr) || (errors.As(err, &nerr) && nerr.Timeout()) ||
		utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		// Discovery and the REST mapper flatten the cause into text.
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "i/o timeout")
}

// target is where an app's objects go: the agent's own cluster, or a
// destination Cluster.
type target struct {
	// cluster names the Cluster; "" for the agent's own.
	cluster string
	// engine plans and applies there, as the app's account.
	engine *engine.Manager
	// cache holds the metadata of converge-owned objects there, of the
	// kinds watches has added.
	cache   client.Reader
	watches *driftWatches
}

// records is where the app's inventory is kept: with the Application
// (through local, as the app's account) when its objects go to another
// cluster; nil, the cluster they go to, otherwise.
func (t *target) records(local *engine.Manager) client.Client {
	if t.cluster == "" {
		return nil
	}
	return local.Client()
}

// target returns where app's objects go; local acts in the agent's own
// cluster as the app's account.
func (r *ApplicationReconciler) target(ctx context.Context, app *v1alpha1.Application, local *engine.Manager, serviceAccount string) (*target, error) {
	if app.Spec.Destination.Cluster == "" {
		r.Clusters.release(client.ObjectKeyFromObject(app))
		return &target{engine: local, cache: r.cache, watches: r.watches}, nil
	}
	if r.Clusters == nil {
		return nil, &ClusterError{Cluster: app.Spec.Destination.Cluster, Reason: v1alpha1.ReasonClusterNotFound, Err: errors.New("this agent deploys to no other cluster")}
	}
	return r.Clusters.target(ctx, app, serviceAccount)
}

// clusterIndex indexes Applications by the Cluster they go to.
const clusterIndex = "spec.destination.cluster"

// appsOfCluster maps a Cluster to the Applications that go to it.
func (r *ApplicationReconciler) appsOfCluster() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		var apps v1alpha1.ApplicationList
		if err := r.cache.List(ctx, &apps, client.MatchingFields{clusterIndex: obj.GetName()}); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, len(apps.Items))
		for i := range apps.Items {
			reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&apps.Items[i])}
		}
		return reqs
	})
}

// clusterChanged passes a Cluster's creation and deletion, a change to its
// spec, and a change of its Ready condition's status or reason.
func clusterChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*v1alpha1.Cluster), e.ObjectNew.(*v1alpha1.Cluster)
		if o.Generation != n.Generation {
			return true
		}
		oc := apimeta.FindStatusCondition(o.Status.Conditions, v1alpha1.ConditionReady)
		nc := apimeta.FindStatusCondition(n.Status.Conditions, v1alpha1.ConditionReady)
		if (oc == nil) != (nc == nil) {
			return true
		}
		return oc != nil && (oc.Status != nc.Status || oc.Reason != nc.Reason)
	}}
}
