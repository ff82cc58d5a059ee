// Package seal is converge's one-way encryption for Secrets in Git: anyone
// with the cluster's public certificate can seal a value; only the agent,
// holding the private key, can open it. See docs/design/sealing.md for the
// byte layout.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Version is the envelope format written by Seal.
const Version byte = 1

// Scope says what a sealed value is bound to. The binding is the RSA-OAEP
// label, so a value sealed for one scope cannot be opened under another.
type Scope string

// Scopes.
const (
	// Strict binds a value to one Secret: its namespace and name.
	Strict Scope = "strict"
	// NamespaceWide binds a value to a namespace: any name.
	NamespaceWide Scope = "namespace"
	// ClusterWide binds a value to nothing: any namespace, any name.
	ClusterWide Scope = "cluster"
)

var scopeCodes = map[Scope]byte{Strict: 1, NamespaceWide: 2, ClusterWide: 3}

// ParseScope reads a scope name ("" is strict).
func ParseScope(s string) (Scope, error) {
	if s == "" {
		return Strict, nil
	}
	sc := Scope(s)
	if _, ok := scopeCodes[sc]; !ok {
		return "", fmt.Errorf("unknown scope %q: use strict, namespace or cluster", s)
	}
	return sc, nil
}

// Label is the OAEP label binding a value to its scope.
func Label(scope Scope, namespace, name string) []byte {
	switch scope {
	case NamespaceWide:
		return []byte("converge.dev/sealed/namespace/" + namespace)
	case ClusterWide:
		return []byte("converge.dev/sealed/cluster")
	}
	return []byte("converge.dev/sealed/strict/" + namespace + "/" + name)
}

// KeyID identifies a public key: the first 8 bytes of the SHA-256 of its
// DER-encoded SubjectPublicKeyInfo.
type KeyID [8]byte

func (k KeyID) String() string { return hex.EncodeToString(k[:]) }

// IDOf returns pub's key id.
func IDOf(pub *rsa.PublicKey) KeyID {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err) // only for unsupported key types; RSA always marshals
	}
	sum := sha256.Sum256(der)
	var id KeyID
	copy(id[:], sum[:8])
	return id
}

// Envelope layout (version 1), all integers big-endian:
//
//	offset  size  field
//	0       1     version (1)
//	1       1     scope (1 strict, 2 namespace, 3 cluster)
//	2       8     key id
//	10      8     scope check: first 8 bytes of SHA-256(label)
//	18      2     n: length of the wrapped key
//	20      n     AES-256 key wrapped with RSA-OAEP(SHA-256, label)
//	20+n    12    GCM nonce
//	32+n    rest  AES-256-GCM ciphertext and 16-byte tag; the additional
//	              data is bytes 0..20 (the header)
const (
	headerSize = 20
	nonceSize  = 12
	tagSize    = 16
	// MaxSize bounds an envelope (a Secret is at most 1 MiB).
	MaxSize = 2 << 20
)

// Errors that say why a value cannot be opened. They never carry key
// material or plaintext.
var (
	ErrMalformed   = errors.New("malformed ciphertext")
	ErrVersion     = errors.New("unsupported ciphertext version")
	ErrUnknownKey  = errors.New("sealed with a key this cluster does not have")
	ErrWrongScope  = errors.New("sealed for a different scope")
	ErrTampered    = errors.New("ciphertext was modified (integrity check failed)")
	ErrWrongSecret = errors.New("sealed for a different namespace or name")
)

// Seal encrypts plaintext for pub, bound to the scope.
func Seal(rnd io.Reader, pub *rsa.PublicKey, scope Scope, namespace, name string, plaintext []byte) ([]byte, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	code, ok := scopeCodes[scope]
	if !ok {
		return nil, fmt.Errorf("unknown scope %q", scope)
	}
	label := Label(scope, namespace, name)
	sessionKey := make([]byte, 32)
	if _, err := io.ReadFull(rnd, sessionKey); err != nil {
		return nil, err
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rnd, pub, sessionKey, label)
	if err != nil {
		return nil, err
	}
	header := make([]byte, headerSize)
	header[0], header[1] = Version, code
	id := IDOf(pub)
	copy(header[2:10], id[:])
	check := sha256.Sum256(label)
	copy(header[10:18], check[:8])
	binary.BigEndian.PutUint16(header[18:20], uint16(len(wrapped)))
	nonce := make([]byte, nonceSize)
	if _, err := io.ReadFull(rnd, nonce); err != nil {
		return nil, err
	}
	gcm, err := newGCM(sessionKey)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, headerSize+len(wrapped)+nonceSize+len(plaintext)+tagSize)
	out = append(out, header...)
	out = append(out, wrapped...)
	out = append(out, nonce...)
	return gcm.Seal(out, nonce, plaintext, header), nil
}

// Parsed is an envelope's header, readable without any key.
type Parsed struct {
	Version byte
	Scope   Scope
	KeyID   KeyID
	check   [8]byte
	header  []byte
	wrapped []byte
	nonce   []byte
	sealed  []byte
}

// Parse reads an envelope's structure without decrypting it.
func Parse(data []byte) (*Parsed, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes is over the %d limit", ErrMalformed, len(data), MaxSize)
	}
	if len(data) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrMalformed, len(data))
	}
	if data[0] != Version {
		return nil, fmt.Errorf("%w %d (this converge reads version %d)", ErrVersion, data[0], Version)
	}
	p := &Parsed{Version: data[0], header: data[:headerSize]}
	for s, c := range scopeCodes {
		if c == data[1] {
			p.Scope = s
		}
	}
	if p.Scope == "" {
		return nil, fmt.Errorf("%w: unknown scope code %d", ErrMalformed, data[1])
	}
	copy(p.KeyID[:], data[2:10])
	copy(p.check[:], data[10:18])
	n := int(binary.BigEndian.Uint16(data[18:20]))
	rest := data[headerSize:]
	if n == 0 || len(rest) < n+nonceSize+tagSize {
		return nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	p.wrapped, rest = rest[:n], rest[n:]
	p.nonce, p.sealed = rest[:nonceSize], rest[nonceSize:]
	return p, nil
}

// Open decrypts an envelope with priv, which must be the key the envelope
// names, for the scope the reader expects (scope, namespace, name).
func (p *Parsed) Open(priv *rsa.PrivateKey, scope Scope, namespace, name string) ([]byte, error) {
	if IDOf(&priv.PublicKey) != p.KeyID {
		return nil, ErrUnknownKey
	}
	if p.Scope != scope {
		return nil, fmt.Errorf("%w: sealed with scope %s, but the SealedSecret asks for %s", ErrWrongScope, p.Scope, scope)
	}
	label := Label(scope, namespace, name)
	check := sha256.Sum256(label)
	if [8]byte(check[:8]) != p.check {
		if scope == NamespaceWide {
			return nil, fmt.Errorf("%w: sealed for another namespace than %s", ErrWrongSecret, namespace)
		}
		return nil, fmt.Errorf("%w: sealed for another namespace or name than %s/%s", ErrWrongSecret, namespace, name)
	}
	sessionKey, err := rsa.DecryptOAEP(sha256.New(), nil, priv, p.wrapped, label)
	if err != nil || len(sessionKey) != 32 {
		return nil, ErrTampered
	}
	gcm, err := newGCM(sessionKey)
	if err != nil {
		return nil, ErrTampered
	}
	plain, err := gcm.Open(nil, p.nonce, p.sealed, p.header)
	if err != nil {
		return nil, ErrTampered
	}
	return plain, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
