// Package sopstest writes SOPS-encrypted files with SOPS's own Go module,
// as the sops CLI would, for tests: age recipients through SOPS's age key
// source, OpenPGP recipients by encrypting the data key to an entity.
package sopstest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/cmd/sops/common"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/keys"
	"github.com/getsops/sops/v3/kms"
	"github.com/getsops/sops/v3/pgp"
	sopsdotenv "github.com/getsops/sops/v3/stores/dotenv"
	sopsjson "github.com/getsops/sops/v3/stores/json"
	sopsyaml "github.com/getsops/sops/v3/stores/yaml"
)

// Options say whom to encrypt for and what.
type Options struct {
	// Age are age recipients (age1...).
	Age []string
	// PGP are OpenPGP entities (public keys) to encrypt for.
	PGP []*openpgp.Entity
	// KMS are AWS KMS key ARNs, whose data keys this package cannot
	// encrypt: the file names them, and only they could open it.
	KMS []string
	// EncryptedRegex, as .sops.yaml's encrypted_regex; Flux's guides use
	// "^(data|stringData)$".
	EncryptedRegex string
}

type store interface {
	LoadPlainFile([]byte) (sops.TreeBranches, error)
	EmitEncryptedFile(sops.Tree) ([]byte, error)
}

// Encrypt encrypts plain, a YAML, JSON or dotenv ("yaml", "json",
// "dotenv") file, as `sops --encrypt` does.
func Encrypt(plain []byte, format string, o Options) ([]byte, error) {
	var st store
	switch format {
	case "json":
		st = sopsjson.NewStore(&config.JSONStoreConfig{})
	case "dotenv":
		st = sopsdotenv.NewStore(&config.DotenvStoreConfig{})
	default:
		st = sopsyaml.NewStore(&config.YAMLStoreConfig{})
	}
	branches, err := st.LoadPlainFile(plain)
	if err != nil {
		return nil, err
	}
	dataKey := make([]byte, 32)
	if _, err := rand.Read(dataKey); err != nil {
		return nil, err
	}
	var group sops.KeyGroup
	for _, r := range o.Age {
		k, err := sopsage.MasterKeyFromRecipient(r)
		if err != nil {
			return nil, err
		}
		if err := k.Encrypt(dataKey); err != nil {
			return nil, err
		}
		group = append(group, k)
	}
	for _, e := range o.PGP {
		k, err := pgpKey(e, dataKey)
		if err != nil {
			return nil, err
		}
		group = append(group, k)
	}
	for _, arn := range o.KMS {
		group = append(group, &kms.MasterKey{Arn: arn, EncryptedKey: "AQICAHh0bm90IGEgcmVhbCBrZXk=", CreationDate: time.Now().UTC()})
	}
	tree := sops.Tree{Branches: branches, Metadata: sops.Metadata{
		KeyGroups: []sops.KeyGroup{group}, EncryptedRegex: o.EncryptedRegex, Version: "3.13.3",
	}}
	if o.EncryptedRegex == "" {
		tree.Metadata.UnencryptedSuffix = "_unencrypted"
	}
	if err := common.EncryptTree(common.EncryptTreeOpts{Tree: &tree, Cipher: aes.NewCipher(), DataKey: dataKey}); err != nil {
		return nil, err
	}
	return st.EmitEncryptedFile(tree)
}

// pgpKey is SOPS's OpenPGP master key for e, holding dataKey encrypted to
// it (armored, as SOPS writes it).
func pgpKey(e *openpgp.Entity, dataKey []byte) (keys.MasterKey, error) {
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, "PGP MESSAGE", nil)
	if err != nil {
		return nil, err
	}
	pt, err := openpgp.Encrypt(w, []*openpgp.Entity{e}, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	if _, err := pt.Write(dataKey); err != nil {
		return nil, err
	}
	if err := pt.Close(); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return &pgp.MasterKey{Fingerprint: fmt.Sprintf("%X", e.PrimaryKey.Fingerprint), EncryptedKey: buf.String(), CreationDate: time.Now().UTC()}, nil
}
