package charts

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"converge.dev/converge/internal/source"
)

// CosignKeys are the public keys (PEM) an artifact must be signed with,
// by cosign (key-based signatures, stored beside the artifact in its
// registry). Keyless signatures need Sigstore's public services, which a
// verification here never calls: they are not supported.
type CosignKeys [][]byte

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
