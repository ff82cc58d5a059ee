package controller

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SecretCache answers an app's reads of its Secrets (credentials, trusted
// keys) from memory while the Secret is unchanged, so an idle reconcile
// reads none. A metadata-only watch on Secrets says when one changes; it
// keeps each Secret's name and resourceVersion only: no values, no
// annotations (kubectl's last-applied annotation would hold the values).
// Only the Secrets apps name are held, with their data.
//
// Until the watch has synced (or when the agent may not watch Secrets),
// every read goes to the apiserver, as without a cache.
type SecretCache struct {
	meta metadata.Interface
	// Recheck bounds how long a Secret read as an impersonated account is
	// served from memory: access the account loses is noticed within it.
	Recheck time.Duration
	now     func() time.Time

	mu       sync.Mutex
	informer toolscache.SharedIndexInformer
	entries  map[secretKey]secretEntry
}

type secretKey struct {
	// reader is the account the Secret was read as ("" for the agent).
	reader          string
	namespace, name string
}

type secretEntry struct {
	// secret is nil for one the apiserver said does not exist: until the
	// watch sees it made, reading it again says so from memory.
	secret *corev1.Secret
	at     time.Time
}

// NewSecretCache returns a cache for cfg's cluster; Start runs its watch.
func NewSecretCache(cfg *rest.Config) (*SecretCache, error) {
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &SecretCache{meta: meta, Recheck: 10 * time.Minute, now: time.Now, entries: map[secretKey]secretEntry{}}, nil
}

// Start runs the metadata watch until ctx ends (a manager.Runnable).
func (c *SecretCache) Start(ctx context.Context) error {
	f := metadatainformer.NewSharedInformerFactory(c.meta, 0)
	inf := f.ForResource(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}).Informer()
	if err := inf.SetTransform(func(obj any) (any, error) {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
			return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
				Name: m.Name, Namespace: m.Namespace, ResourceVersion: m.ResourceVersion, UID: m.UID,
			}}, nil
		}
		return obj, nil
	}); err != nil {
		return err
	}
	// Forget a Secret's data as soon as it is made, changes or goes.
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.drop(obj) },
		UpdateFunc: func(_, obj any) { c.drop(obj) },
		DeleteFunc: c.drop,
	}); err != nil {
		return err
	}
	c.mu.Lock()
	c.informer = inf
	c.mu.Unlock()
	inf.Run(ctx.Done())
	return nil
}

func (c *SecretCache) drop(obj any) {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.entries {
		if k.namespace == m.GetNamespace() && k.name == m.GetName() {
			delete(c.entries, k)
		}
	}
}

// currentVersion is the resourceVersion the watch last saw of a Secret,
// and whether the watch can say.
func (c *SecretCache) currentVersion(namespace, name string) (string, bool) {
	c.mu.Lock()
	inf := c.informer
	c.mu.Unlock()
	if inf == nil || !inf.HasSynced() {
		return "", false
	}
	obj, exists, err := inf.GetStore().GetByKey(namespace + "/" + name)
	if err != nil {
		return "", false
	}
	if !exists {
		return "", true
	}
	return obj.(metav1.Object).GetResourceVersion(), true
}

// Reader returns a reader of Secrets as account (""; the agent itself)
// through r, answering from memory when it can.
func (c *SecretCache) Reader(account string, r client.Reader) client.Reader {
	if c == nil {
		return r
	}
	return &cachedSecrets{Reader: r, cache: c, account: account}
}

type cachedSecrets struct {
	client.Reader
	cache   *SecretCache
	account string
}

func (s *cachedSecrets) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	out, ok := obj.(*corev1.Secret)
	if !ok {
		return s.Reader.Get(ctx, key, obj, opts...)
	}
	c := s.cache
	k := secretKey{reader: s.account, namespace: key.Namespace, name: key.Name}
	rv, known := c.currentVersion(key.Namespace, key.Name)
	c.mu.Lock()
	e, held := c.entries[k]
	c.mu.Unlock()
	fresh := s.account == "" || c.now().Sub(e.at) < c.Recheck
	switch {
	case !known || !held || !fresh:
	case e.secret == nil && rv == "":
		return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	case e.secret != nil && rv != "" && e.secret.ResourceVersion == rv:
		e.secret.DeepCopyInto(out)
		return nil
	}
	if err := s.Reader.Get(ctx, key, out, opts...); err != nil {
		if apierrors.IsNotFound(err) && known {
			c.mu.Lock()
			c.entries[k] = secretEntry{at: c.now()}
			c.mu.Unlock()
		}
		return err
	}
	if known {
		c.mu.Lock()
		c.entries[k] = secretEntry{secret: out.DeepCopy(), at: c.now()}
		c.mu.Unlock()
	}
	return nil
}
