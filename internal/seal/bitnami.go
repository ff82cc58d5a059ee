package seal

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
)

// The format of Bitnami's Sealed Secrets (kubeseal and its controller),
// which converge reads and writes so that teams moving in keep what they
// sealed: no header and no key id, all integers big-endian:
//
//	offset  size  field
//	0       2     n: length of the wrapped key
//	2       n     AES-256 key wrapped with RSA-OAEP(SHA-256, label)
//	2+n     rest  AES-256-GCM ciphertext and tag, zero nonce (the key is
//	              used once), no additional data
//
// The label binds the value to its scope: "namespace/name" (strict),
// "namespace" (namespace-wide) or "" (cluster-wide).

// BitnamiLabel is the OAEP label of Bitnami's format for a scope.
func BitnamiLabel(scope Scope, namespace, name string) []byte {
	switch scope {
	case ClusterWide:
		return nil
	case NamespaceWide:
		return []byte(namespace)
	}
	return []byte(namespace + "/" + name)
}

// SealBitnami encrypts plaintext for pub in Bitnami's format, bound to the
// scope, so that a sealed-secrets controller holding the key opens it too.
func SealBitnami(rnd io.Reader, pub *rsa.PublicKey, scope Scope, namespace, name string, plaintext []byte) ([]byte, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	if _, ok := scopeCodes[scope]; !ok {
		return nil, fmt.Errorf("unknown scope %q", scope)
	}
	sessionKey := make([]byte, 32)
	if _, err := io.ReadFull(rnd, sessionKey); err != nil {
		return nil, err
	}
	defer clear(sessionKey)
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rnd, pub, sessionKey, BitnamiLabel(scope, namespace, name))
	if err != nil {
		return nil, err
	}
	gcm, err := newGCM(sessionKey)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 2, 2+len(wrapped)+len(plaintext)+tagSize)
	binary.BigEndian.PutUint16(out, uint16(len(wrapped)))
	out = append(out, wrapped...)
	return gcm.Seal(out, make([]byte, gcm.NonceSize()), plaintext, nil), nil
}

// OpenBitnami decrypts a value in Bitnami's format with whichever key of
// the ring opens it (the format names none), for the scope the reader
// expects. A value sealed for another scope, namespace or name, or with a
// key the ring lacks, does not open: the format cannot tell which.
func (r *Keyring) OpenBitnami(data []byte, scope Scope, namespace, name string) ([]byte, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes is over the %d limit", ErrMalformed, len(data), MaxSize)
	}
	if len(data) < 2 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrMalformed, len(data))
	}
	n := int(binary.BigEndian.Uint16(data))
	if n == 0 || len(data) < 2+n+tagSize {
		return nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	wrapped, sealed := data[2:2+n], data[2+n:]
	label := BitnamiLabel(scope, namespace, name)
	for _, k := range r.All() {
		sessionKey, err := rsa.DecryptOAEP(sha256.New(), nil, k.Private, wrapped, label)
		if err != nil || len(sessionKey) != 32 {
			continue
		}
		gcm, err := newGCM(sessionKey)
		clear(sessionKey)
		if err != nil {
			continue
		}
		plain, err := gcm.Open(nil, make([]byte, gcm.NonceSize()), sealed, nil)
		if err != nil {
			return nil, ErrTampered
		}
		return plain, nil
	}
	return nil, fmt.Errorf("%w, or sealed for another scope, namespace or name (Bitnami's format names neither)", ErrUnknownKey)
}
