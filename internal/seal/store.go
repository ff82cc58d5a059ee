package seal

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Where the keys and the certificate live in the agent's namespace.
const (
	// LabelSealingKey marks the Secrets holding sealing key pairs.
	LabelSealingKey = "converge.dev/sealing-key"
	// AnnotationCreated is when a key was made (RFC 3339); it survives
	// export and import, so rotation continues on schedule.
	AnnotationCreated = "converge.dev/created-at"
	// CertConfigMap publishes the newest certificate under CertKey.
	CertConfigMap = "converge-sealing-cert"
	CertKey       = "cert.pem"
	// DefaultRotation is how often a new key is made.
	DefaultRotation = 30 * 24 * time.Hour
)

// KeySecretName is the name of the Secret holding key id.
func KeySecretName(id KeyID) string { return "converge-sealing-key-" + id.String() }

// KeySecret is the Secret that stores k.
func KeySecret(k *KeyPair, namespace string) (*corev1.Secret, error) {
	keyPEM, err := k.PrivatePEM()
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name: KeySecretName(k.ID), Namespace: namespace,
			Labels:      map[string]string{LabelSealingKey: "true"},
			Annotations: map[string]string{AnnotationCreated: k.Created.UTC().Format(time.RFC3339)},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSPrivateKeyKey: keyPEM, corev1.TLSCertKey: k.CertPEM},
	}, nil
}

// KeyFromSecret reads a key pair from its Secret.
func KeyFromSecret(s *corev1.Secret) (*KeyPair, error) {
	created := s.CreationTimestamp.Time
	if v := s.Annotations[AnnotationCreated]; v != "" {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			created = t
		}
	}
	k, err := ParseKeyPair(s.Data[corev1.TLSPrivateKeyKey], s.Data[corev1.TLSCertKey], created.UTC())
	if err != nil {
		return nil, fmt.Errorf("sealing key Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return k, nil
}

// Store keeps the sealing keys in labelled Secrets of one namespace and
// caches them in memory.
type Store struct {
	// Client reads Secrets uncached.
	Client    client.Client
	Namespace string
	// Rotation is how old the newest key may get before a new one is
	// made; 0 never rotates.
	Rotation time.Duration
	// Bits is the key size (KeyBits when 0; tests use less).
	Bits int
	Now  func() time.Time

	mu     sync.Mutex
	ring   *Keyring
	loaded time.Time
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Load reads every key from the cluster.
func (s *Store) Load(ctx context.Context) (*Keyring, error) {
	var list corev1.SecretList
	if err := s.Client.List(ctx, &list, client.InNamespace(s.Namespace), client.MatchingLabels{LabelSealingKey: "true"}); err != nil {
		return nil, fmt.Errorf("reading sealing keys: %w", err)
	}
	var keys []*KeyPair
	for i := range list.Items {
		k, err := KeyFromSecret(&list.Items[i])
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	ring := NewKeyring(keys...)
	s.mu.Lock()
	s.ring, s.loaded = ring, s.now()
	s.mu.Unlock()
	return ring, nil
}

// Keyring returns the cached keys, loading them if they are unknown or
// older than maxAge.
func (s *Store) Keyring(ctx context.Context, maxAge time.Duration) (*Keyring, error) {
	s.mu.Lock()
	ring, loaded := s.ring, s.loaded
	s.mu.Unlock()
	if ring != nil && s.now().Sub(loaded) < maxAge {
		return ring, nil
	}
	return s.Load(ctx)
}

// Ensure makes a key when there is none, or when the newest is older than
// Rotation, and publishes the newest certificate. It returns the keys.
func (s *Store) Ensure(ctx context.Context) (*Keyring, error) {
	ring, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	newest := ring.Newest()
	if newest == nil || (s.Rotation > 0 && s.now().Sub(newest.Created) >= s.Rotation) {
		return s.Rotate(ctx)
	}
	return ring, s.Publish(ctx, ring)
}

// Rotate makes a new key now, stores it and publishes its certificate: the
// newest key seals from then on, every older one still opens.
func (s *Store) Rotate(ctx context.Context) (*Keyring, error) {
	// Making a key costs seconds of CPU: first make sure it can be kept.
	// An agent run outside the cluster may find no namespace of its own
	// yet: make it.
	if err := s.Client.Get(ctx, client.ObjectKey{Name: s.Namespace}, &corev1.Namespace{}); apierrors.IsNotFound(err) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.Namespace}}
		if err := s.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("namespace %s does not exist and cannot be created (%v): create it, or give the agent --system-namespace", s.Namespace, err)
		}
	}
	bits := s.Bits
	if bits == 0 {
		bits = KeyBits
	}
	k, err := GenerateKey(nil, bits, s.now())
	if err != nil {
		return nil, err
	}
	sec, err := KeySecret(k, s.Namespace)
	if err != nil {
		return nil, err
	}
	if err := s.Client.Create(ctx, sec); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("storing the new sealing key: %w", err)
	}
	ring, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	return ring, s.Publish(ctx, ring)
}

// Publish writes the newest certificate into the ConfigMap sealers read,
// only when it changed.
func (s *Store) Publish(ctx context.Context, ring *Keyring) error {
	newest := ring.Newest()
	if newest == nil {
		return fmt.Errorf("no sealing key")
	}
	var cm corev1.ConfigMap
	err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: CertConfigMap}, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: CertConfigMap, Namespace: s.Namespace, Labels: map[string]string{LabelSealingKey: "cert"}},
			Data:       map[string]string{CertKey: string(newest.CertPEM)},
		}
		return s.Client.Create(ctx, &cm)
	case err != nil:
		return err
	case cm.Data[CertKey] == string(newest.CertPEM):
		return nil
	}
	cm.Data = map[string]string{CertKey: string(newest.CertPEM)}
	return s.Client.Update(ctx, &cm)
}

// Run keeps the keys rotated: it checks at start and then every check
// interval until ctx ends.
// After a failure it tries again sooner: 5 s, doubling up to check.
func (s *Store) Run(ctx context.Context, check time.Duration, onError func(error)) error {
	retry := 5 * time.Second
	for {
		wait := check
		if _, err := s.Ensure(ctx); err != nil {
			if onError != nil {
				onError(err)
			}
			wait = min(retry, check)
			retry *= 2
		} else {
			retry = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}
