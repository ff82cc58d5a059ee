// Package sigstoretest signs OCI artifacts as `cosign sign` does keylessly,
// for tests, with a Sigstore of its own: a Fulcio-like certificate
// authority that issues short-lived certificates naming an OIDC issuer and
// subject, and a Rekor-like log key that signs the entry each signature
// carries as its bundle. Everything is made with cosign's and sigstore's
// own modules; nothing is served.
package sigstoretest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	cosignmutate "github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	cosignstatic "github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// Sigstore is a certificate authority and a transparency log key.
type Sigstore struct {
	caKey    *ecdsa.PrivateKey
	ca       *x509.Certificate
	rekorKey *ecdsa.PrivateKey
	// FulcioPEM is the CA's certificate and RekorPub the log's public
	// key, as a trust Secret holds them (fulcio.crt.pem, rekor.pub).
	FulcioPEM, RekorPub []byte
}

// New makes a Sigstore.
func New() (*Sigstore, error) {
	s := &Sigstore{}
	var err error
	if s.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sigstoretest", Organization: []string{"sigstore.dev"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &s.caKey.PublicKey, s.caKey)
	if err != nil {
		return nil, err
	}
	if s.ca, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	s.FulcioPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if s.rekorKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	if s.RekorPub, err = cryptoutils.MarshalPublicKeyToPEM(&s.rekorKey.PublicKey); err != nil {
		return nil, err
	}
	return s, nil
}

// oidcIssuer is Fulcio's extension naming the OIDC issuer (its v1 form,
// the raw string, which cosign reads).
var oidcIssuer = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}

// Sign signs host/repository@digest as `cosign sign` does keylessly: an
// ephemeral key, a certificate for it naming issuer and subject (an email,
// or a URI), valid for ten minutes, and the log's bundle of the entry.
func (s *Sigstore) Sign(host, repository, digest, issuer, subject string, remoteOpts ...ociremote.Option) error {
	ref, err := name.NewDigest(host + "/" + repository + "@" + digest)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	leaf := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(9 * time.Minute),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		ExtraExtensions: []pkix.Extension{{Id: oidcIssuer, Value: []byte(issuer)}}}
	if strings.Contains(subject, "@") && !strings.Contains(subject, "://") {
		leaf.EmailAddresses = []string{subject}
	} else {
		u, err := url.Parse(subject)
		if err != nil {
			return err
		}
		leaf.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, s.ca, &key.PublicKey, s.caKey)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})

	pl, err := (&payload.Cosign{Image: ref}).MarshalJSON()
	if err != nil {
		return err
	}
	sv, err := signature.LoadECDSASignerVerifier(key, crypto.SHA256)
	if err != nil {
		return err
	}
	sig, err := sv.SignMessage(bytes.NewReader(pl))
	if err != nil {
		return err
	}
	b64sig := base64.StdEncoding.EncodeToString(sig)
	bundle, err := s.bundle(pl, b64sig, certPEM, now)
	if err != nil {
		return err
	}
	ociSig, err := cosignstatic.NewSignature(pl, b64sig, cosignstatic.WithCertChain(certPEM, s.FulcioPEM), cosignstatic.WithBundle(bundle))
	if err != nil {
		return err
	}
	se, err := ociremote.SignedEntity(ref, remoteOpts...)
	if err != nil {
		return err
	}
	signed, err := cosignmutate.AttachSignatureToEntity(se, ociSig)
	if err != nil {
		return err
	}
	return ociremote.WriteSignatures(ref.Repository, signed, remoteOpts...)
}

// bundle is the log's signed entry for a hashedrekord of the payload's
// hash, the signature and the certificate, integrated at when.
func (s *Sigstore) bundle(pl []byte, b64sig string, certPEM []byte, when time.Time) (*cbundle.RekorBundle, error) {
	sum := sha256.Sum256(pl)
	body, err := json.Marshal(map[string]any{
		"apiVersion": "0.0.1", "kind": "hashedrekord",
		"spec": map[string]any{
			"data":      map[string]any{"hash": map[string]any{"algorithm": "sha256", "value": hex.EncodeToString(sum[:])}},
			"signature": map[string]any{"content": b64sig, "publicKey": map[string]any{"content": base64.StdEncoding.EncodeToString(certPEM)}},
		},
	})
	if err != nil {
		return nil, err
	}
	logID, err := cosign.GetTransparencyLogID(&s.rekorKey.PublicKey)
	if err != nil {
		return nil, err
	}
	p := cbundle.RekorPayload{Body: base64.StdEncoding.EncodeToString(body), IntegratedTime: when.Unix(), LogIndex: 1, LogID: logID}
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	canonical, err := jsoncanonicalizer.Transform(raw)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(canonical)
	set, err := ecdsa.SignASN1(rand.Reader, s.rekorKey, digest[:])
	if err != nil {
		return nil, err
	}
	return &cbundle.RekorBundle{SignedEntryTimestamp: set, Payload: p}, nil
}

// WithLogOf is s with o's transparency log: its bundles are signed by a
// log s's verifiers do not trust.
func (s *Sigstore) WithLogOf(o *Sigstore) *Sigstore {
	c := *s
	c.rekorKey, c.RekorPub = o.rekorKey, o.RekorPub
	return &c
}
