package charts

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/tuf"

	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/source"
)

// CosignKeys are the public keys (PEM) an artifact must be signed with,
// by cosign (key-based signatures, stored beside the artifact in its
// registry).
type CosignKeys [][]byte

// CosignKeyless is what a keyless cosign signature must meet: a
// certificate chaining to Roots that names one of Identities, a Rekor
// bundle signed by one of RekorKeys (checked offline: no Sigstore service
// is called) within the certificate's validity, and, when CTLogKeys are
// given, the certificate's SCT.
type CosignKeyless struct {
	// Roots are PEM certificates: self-signed ones are roots, the others
	// intermediates.
	Roots, RekorKeys, CTLogKeys []byte
	Identities                  []KeylessIdentity
}

// KeylessIdentity is a signer's identity, as anchored regular expressions
// over the certificate's OIDC issuer and subject.
type KeylessIdentity struct{ Issuer, Subject string }

func (k *CosignKeyless) identity() string {
	if k == nil {
		return ""
	}
	h := sha256.New()
	for _, part := range [][]byte{k.Roots, k.RekorKeys, k.CTLogKeys} {
		h.Write(part)
		h.Write([]byte{0})
	}
	for _, id := range k.Identities {
		fmt.Fprintf(h, "%s\x00%s\x00", id.Issuer, id.Subject)
	}
	return "keyless:" + hex.EncodeToString(h.Sum(nil)[:8])
}

// verify checks digest's keyless signatures, as CosignKeys.verify does
// keyed ones.
func (k *CosignKeyless) verify(ctx context.Context, repository name.Repository, digest string, opts []remote.Option) error {
	refuse := func(reason string) error {
		return &source.VerificationError{Revision: digest, Object: "OCI artifact", Reason: reason}
	}
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM(k.Roots)
	if err != nil || len(certs) == 0 {
		return refuse("fulcio.crt.pem: no PEM certificates")
	}
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range certs {
		if c.CheckSignatureFrom(c) == nil {
			roots.AddCert(c)
		} else {
			intermediates.AddCert(c)
		}
	}
	rekor, err := transparencyKeys(k.RekorKeys)
	if err != nil || len(rekor.Keys) == 0 {
		return refuse("rekor.pub: no PEM public key")
	}
	co := &cosign.CheckOpts{
		RootCerts: roots, IntermediateCerts: intermediates,
		RekorPubKeys: &rekor, IgnoreSCT: len(k.CTLogKeys) == 0,
		ClaimVerifier:      cosign.SimpleClaimVerifier,
		Offline:            true,
		RegistryClientOpts: []ociremote.Option{ociremote.WithRemoteOptions(opts...)},
	}
	if len(k.CTLogKeys) > 0 {
		ct, err := transparencyKeys(k.CTLogKeys)
		if err != nil || len(ct.Keys) == 0 {
			return refuse("ctfe.pub: no PEM public key")
		}
		co.CTLogPubKeys = &ct
	}
	for _, id := range k.Identities {
		co.Identities = append(co.Identities, cosign.Identity{IssuerRegExp: anchored(id.Issuer), SubjectRegExp: anchored(id.Subject)})
	}
	_, _, err = cosign.VerifyImageSignatures(ctx, repository.Digest(digest), co)
	if err == nil {
		return nil
	}
	var noSig *cosign.ErrNoSignaturesFound
	if errors.As(err, &noSig) {
		return refuse("it is not signed")
	}
	return refuse("no keyless signature by a trusted identity: " + redact.Error(err))
}

// anchored makes a pattern match whole values.
func anchored(re string) string { return "^(?:" + re + ")$" }

// transparencyKeys reads PEM public keys of transparency logs.
func transparencyKeys(data []byte) (cosign.TrustedTransparencyLogPubKeys, error) {
	keys := cosign.NewTrustedTransparencyLogPubKeys()
	for len(data) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if err := keys.AddTransparencyLogPubKey(pem.EncodeToMemory(block), tuf.Active); err != nil {
			return keys, err
		}
	}
	return keys, nil
}

// VerifySignature checks the cosign signatures of digest in repository,
// reached with opts: made by one of keys, if any, and meeting keyless, if
// set. Neither set passes. A failure is a *source.VerificationError.
func VerifySignature(ctx context.Context, repository name.Repository, digest string, opts []remote.Option, keys CosignKeys, keyless *CosignKeyless) error {
	if len(keys) > 0 {
		if err := keys.verify(ctx, repository, digest, opts); err != nil {
			return err
		}
	}
	if keyless != nil {
		return keyless.verify(ctx, repository, digest, opts)
	}
	return nil
}

// VerificationIdentity names what VerifySignature checks against, for
// cache keys.
func VerificationIdentity(keys CosignKeys, keyless *CosignKeyless) string {
	return keys.identity() + "/" + keyless.identity()
}

// identity names the keys in cache keys.
func (k CosignKeys) identity() string {
	if len(k) == 0 {
		return ""
	}
	h := sha256.New()
	for _, key := range k {
		h.Write(key)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// verify checks that digest, in repository, carries a cosign signature
// made by one of the keys, with the signed payload naming that digest. It
// runs before anything of the artifact is extracted; a failure is a
// *source.VerificationError, which retrying does not mend.
func (k CosignKeys) verify(ctx context.Context, repository name.Repository, digest string, opts []remote.Option) error {
	ref := repository.Digest(digest)
	var reasons []error
	for i, pemKey := range k {
		pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemKey)
		if err != nil {
			return &source.VerificationError{Revision: digest, Object: "OCI artifact", Reason: fmt.Sprintf("public key %d: not a PEM public key", i+1)}
		}
		verifier, err := signature.LoadVerifier(pub, crypto.SHA256)
		if err != nil {
			return &source.VerificationError{Revision: digest, Object: "OCI artifact", Reason: fmt.Sprintf("public key %d: %v", i+1, err)}
		}
		_, _, err = cosign.VerifyImageSignatures(ctx, ref, &cosign.CheckOpts{
			SigVerifier:        verifier,
			ClaimVerifier:      cosign.SimpleClaimVerifier,
			IgnoreTlog:         true,
			IgnoreSCT:          true,
			Offline:            true,
			RegistryClientOpts: []ociremote.Option{ociremote.WithRemoteOptions(opts...)},
		})
		if err == nil {
			return nil
		}
		reasons = append(reasons, err)
	}
	reason := "no signature made by a trusted key"
	var noSig *cosign.ErrNoSignaturesFound
	if len(reasons) > 0 && errors.As(reasons[0], &noSig) {
		reason = "it is not signed"
	}
	return &source.VerificationError{Revision: digest, Object: "OCI artifact", Reason: reason}
}
