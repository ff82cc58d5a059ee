package seal

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sort"
	"time"
)

// KeyBits is the size of sealing keys.
const KeyBits = 4096

// KeyPair is one sealing key: the private key and its self-signed
// certificate (which is what sealers are given).
type KeyPair struct {
	ID      KeyID
	Private *rsa.PrivateKey
	CertPEM []byte
	Created time.Time
}

// GenerateKey makes a new sealing key pair.
func GenerateKey(rnd io.Reader, bits int, now time.Time) (*KeyPair, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	priv, err := rsa.GenerateKey(rnd, bits)
	if err != nil {
		return nil, err
	}
	id := IDOf(&priv.PublicKey)
	serial, err := rand.Int(rnd, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "converge sealing key " + id.String(), Organization: []string{"converge.dev"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment,
	}
	der, err := x509.CreateCertificate(rnd, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, err
	}
	return &KeyPair{ID: id, Private: priv, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Created: now.UTC()}, nil
}

// PrivatePEM encodes the private key as PKCS#8 PEM.
func (k *KeyPair) PrivatePEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Private)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPair reads a key pair from PEM (as stored in its Secret).
func ParseKeyPair(keyPEM, certPEM []byte, created time.Time) (*KeyPair, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, fmt.Errorf("private key: no PEM block")
	}
	var priv *rsa.PrivateKey
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private key: not RSA")
		}
		priv = rk
	} else if rk, err2 := x509.ParsePKCS1PrivateKey(block.Bytes); err2 == nil {
		priv = rk
	} else {
		return nil, fmt.Errorf("private key: %w", err)
	}
	pub, id, err := ParseCert(certPEM)
	if err != nil {
		return nil, err
	}
	if !pub.Equal(&priv.PublicKey) {
		return nil, fmt.Errorf("the certificate does not match the private key")
	}
	return &KeyPair{ID: id, Private: priv, CertPEM: certPEM, Created: created}, nil
}

// ParseCert reads a sealing certificate (PEM) and returns its public key
// and key id.
func ParseCert(certPEM []byte) (*rsa.PublicKey, KeyID, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, KeyID{}, fmt.Errorf("not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, KeyID{}, err
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, KeyID{}, fmt.Errorf("the certificate's key is not RSA")
	}
	if pub.N.BitLen() < 2048 {
		return nil, KeyID{}, fmt.Errorf("the certificate's key has only %d bits", pub.N.BitLen())
	}
	return pub, IDOf(pub), nil
}

// Keyring holds every retained key; the newest seals, all of them open.
type Keyring struct {
	keys map[KeyID]*KeyPair
}

// NewKeyring holds keys.
func NewKeyring(keys ...*KeyPair) *Keyring {
	r := &Keyring{keys: map[KeyID]*KeyPair{}}
	for _, k := range keys {
		r.keys[k.ID] = k
	}
	return r
}

// Len is the number of keys.
func (r *Keyring) Len() int { return len(r.keys) }

// Newest is the key new seals use (nil when empty).
func (r *Keyring) Newest() *KeyPair {
	var newest *KeyPair
	for _, k := range r.keys {
		if newest == nil || k.Created.After(newest.Created) || (k.Created.Equal(newest.Created) && k.ID.String() > newest.ID.String()) {
			newest = k
		}
	}
	return newest
}

// All returns the keys, newest first.
func (r *Keyring) All() []*KeyPair {
	out := make([]*KeyPair, 0, len(r.keys))
	for _, k := range r.keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out
}

// Has reports whether the ring holds key id.
func (r *Keyring) Has(id KeyID) bool { _, ok := r.keys[id]; return ok }

// Open decrypts an envelope with whichever retained key it names.
func (r *Keyring) Open(data []byte, scope Scope, namespace, name string) ([]byte, error) {
	p, err := Parse(data)
	if err != nil {
		return nil, err
	}
	k, ok := r.keys[p.KeyID]
	if !ok {
		return nil, fmt.Errorf("%w (key id %s)", ErrUnknownKey, p.KeyID)
	}
	return p.Open(k.Private, scope, namespace, name)
}

// Reseal opens an envelope and seals its value again with the newest key,
// for the same scope; the plaintext never leaves this function.
func (r *Keyring) Reseal(data []byte, scope Scope, namespace, name string) ([]byte, error) {
	newest := r.Newest()
	if newest == nil {
		return nil, errors.New("no sealing key")
	}
	plain, err := r.Open(data, scope, namespace, name)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	return Seal(nil, &newest.Private.PublicKey, scope, namespace, name, plain)
}
