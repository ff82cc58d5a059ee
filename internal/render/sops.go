package render

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"filippo.io/age"
	agearmor "filippo.io/age/armor"
	"github.com/ProtonMail/go-crypto/openpgp"
	pgparmor "github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	"github.com/getsops/sops/v3/cmd/sops/formats"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/keyservice"
	sopsdotenv "github.com/getsops/sops/v3/stores/dotenv"
	sopsjson "github.com/getsops/sops/v3/stores/json"
	sopsyaml "github.com/getsops/sops/v3/stores/yaml"
	"google.golang.org/grpc"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Decryption holds the keys that open SOPS-encrypted manifests and Helm
// values files (Flux's spec.decryption with provider sops): age
// identities and armored OpenPGP private keys. Decryption happens in the
// render worker, after a file is read and before anything else sees it.
type Decryption struct {
	Age []string `json:"age,omitempty"`
	PGP []string `json:"pgp,omitempty"`
}

// sopsKey is the top-level key SOPS puts its metadata under.
const sopsKey = "sops"

// ErrNotDecrypted is SOPS-encrypted content an app gives no keys for.
var ErrNotDecrypted = errors.New("is SOPS-encrypted, and the Application sets no spec.decryption (provider sops, with a Secret of age or OpenPGP keys)")

// sopsEncrypted says whether a decoded document carries SOPS metadata.
func sopsEncrypted(m map[string]any) bool {
	md, ok := m[sopsKey].(map[string]any)
	if !ok {
		return false
	}
	_, mac := md["mac"]
	return mac
}

// decrypt opens a SOPS-encrypted document (YAML or JSON, as its format
// says) and returns it in plain text, in the same format. The document's
// MAC is checked: a file changed after it was encrypted is refused. Errors
// never hold plain text.
func (d *Decryption) decrypt(data []byte, format formats.Format) ([]byte, error) {
	if d == nil {
		return nil, ErrNotDecrypted
	}
	var store interface {
		LoadEncryptedFile([]byte) (sops.Tree, error)
		EmitPlainFile(sops.TreeBranches) ([]byte, error)
	}
	switch format {
	case formats.Json:
		store = sopsjson.NewStore(&config.JSONStoreConfig{})
	case formats.Dotenv:
		store = sopsdotenv.NewStore(&config.DotenvStoreConfig{})
	default:
		store = sopsyaml.NewStore(&config.YAMLStoreConfig{})
	}
	tree, err := store.LoadEncryptedFile(data)
	if err != nil {
		return nil, fmt.Errorf("reading SOPS metadata: %w", err)
	}
	svc, err := d.keyService()
	if err != nil {
		return nil, err
	}
	key, err := tree.Metadata.GetDataKeyWithKeyServices([]keyservice.KeyServiceClient{svc}, nil)
	if err != nil {
		return nil, fmt.Errorf("no key of spec.decryption opens it; it is encrypted for %s", recipients(tree.Metadata))
	}
	cipher := aes.NewCipher()
	mac, err := tree.Decrypt(key, cipher)
	if err != nil {
		return nil, errors.New("decrypting its values failed: the file is damaged, or was not encrypted with this data key")
	}
	stored, err := cipher.Decrypt(tree.Metadata.MessageAuthenticationCode, key, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil || stored != mac {
		return nil, errors.New("its MAC does not match its content: it was changed after it was encrypted")
	}
	return store.EmitPlainFile(tree.Branches)
}

// sopsFormat says whether a file is SOPS-encrypted and in which format:
// YAML or JSON with top-level SOPS metadata (in any document of a YAML
// stream), or dotenv with sops_mac. Only files that mention SOPS are
// parsed.
func sopsFormat(name string, data []byte) (formats.Format, bool) {
	if !bytes.Contains(data, []byte(sopsKey)) {
		return 0, false
	}
	if strings.HasSuffix(name, ".env") {
		return formats.Dotenv, bytes.HasPrefix(data, []byte("sops_mac=")) || bytes.Contains(data, []byte("\nsops_mac="))
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if err != nil {
			return 0, false
		}
		var m map[string]any
		if yaml.Unmarshal(doc, &m) == nil && sopsEncrypted(m) {
			if bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
				return formats.Json, true
			}
			return formats.Yaml, true
		}
	}
}

// keyService answers SOPS's requests for the data key from the keys held,
// in this process: nothing is asked of a key service or a cloud KMS.
func (d *Decryption) keyService() (keyservice.KeyServiceClient, error) {
	s := &localKeys{}
	for i, k := range d.Age {
		ids, err := age.ParseIdentities(strings.NewReader(k))
		if err != nil {
			return nil, fmt.Errorf("age key %d: %w", i+1, err)
		}
		s.age = append(s.age, ids...)
	}
	for i, k := range d.PGP {
		ring, err := openpgp.ReadArmoredKeyRing(strings.NewReader(k))
		if err != nil {
			return nil, fmt.Errorf("OpenPGP key %d: %w", i+1, err)
		}
		s.pgp = append(s.pgp, ring...)
	}
	return s, nil
}

// localKeys is a SOPS key service holding age identities and OpenPGP
// keys; it decrypts data keys and encrypts none.
type localKeys struct {
	age []age.Identity
	pgp openpgp.EntityList
}

func (s *localKeys) Encrypt(context.Context, *keyservice.EncryptRequest, ...grpc.CallOption) (*keyservice.EncryptResponse, error) {
	return nil, errors.New("converge decrypts only")
}

func (s *localKeys) Decrypt(_ context.Context, req *keyservice.DecryptRequest, _ ...grpc.CallOption) (*keyservice.DecryptResponse, error) {
	var plain []byte
	var err error
	switch k := req.GetKey().GetKeyType().(type) {
	case *keyservice.Key_AgeKey:
		plain, err = s.openAge(req.Ciphertext)
	case *keyservice.Key_PgpKey:
		plain, err = s.openPGP(req.Ciphertext)
	default:
		err = fmt.Errorf("%s key: converge decrypts with age and OpenPGP keys only", keyTypeName(k))
	}
	if err != nil {
		return nil, err
	}
	return &keyservice.DecryptResponse{Plaintext: plain}, nil
}

func (s *localKeys) openAge(ciphertext []byte) ([]byte, error) {
	if len(s.age) == 0 {
		return nil, errors.New("no age identity given")
	}
	r, err := age.Decrypt(agearmor.NewReader(bytes.NewReader(ciphertext)), s.age...)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(r, 1<<10))
}

func (s *localKeys) openPGP(ciphertext []byte) ([]byte, error) {
	if len(s.pgp) == 0 {
		return nil, errors.New("no OpenPGP key given")
	}
	block, err := pgparmor.Decode(bytes.NewReader(ciphertext))
	if err != nil {
		return nil, err
	}
	md, err := openpgp.ReadMessage(block.Body, s.pgp, nil, nil)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(md.UnverifiedBody, 1<<10))
}

// recipients names whom m's data key is encrypted for (public
// identifiers only), and says which kinds converge cannot use.
func recipients(m sops.Metadata) string {
	var names []string
	foreign := false
	for _, g := range m.KeyGroups {
		for _, k := range g {
			kind := k.TypeToIdentifier()
			switch kind {
			case "age", "pgp":
			default:
				foreign = true
			}
			names = append(names, kind+" "+k.ToString())
		}
	}
	out := strings.Join(names, ", ")
	if foreign {
		out += " (converge decrypts with age and OpenPGP keys only)"
	}
	return out
}

func keyTypeName(k any) string {
	switch k.(type) {
	case *keyservice.Key_KmsKey:
		return "AWS KMS"
	case *keyservice.Key_GcpKmsKey:
		return "GCP KMS"
	case *keyservice.Key_AzureKeyvaultKey:
		return "Azure Key Vault"
	case *keyservice.Key_VaultKey:
		return "HashiCorp Vault"
	case *keyservice.Key_HckmsKey:
		return "Huawei Cloud KMS"
	}
	return "this kind of"
}
