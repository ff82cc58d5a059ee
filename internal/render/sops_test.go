package render

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"converge.dev/converge/internal/testutil/sopstest"
)

const secretPlain = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\nstringData:\n  password: hunter2-plaintext\n"

func writeFiles(t *testing.T, root string, files map[string][]byte) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func encrypt(t *testing.T, plain, format string, o sopstest.Options) []byte {
	t.Helper()
	if o.EncryptedRegex == "" && format == "yaml" {
		o.EncryptedRegex = "^(data|stringData)$"
	}
	out, err := sopstest.Encrypt([]byte(plain), format, o)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("hunter2")) {
		t.Fatalf("the encrypted file holds the plain text:\n%s", out)
	}
	return out
}

func renderObjects(t *testing.T, opts Options) map[string]Object {
	t.Helper()
	res, err := Render(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Object{}
	for _, o := range res.Objects {
		out[o.GetKind()+"/"+o.GetName()] = o
	}
	return out
}

// Files encrypted by SOPS (its own Go module, as the sops CLI writes
// them) are decrypted as they are read: a plain manifest, a Kustomize
// overlay that changes the Secret and generates one from an encrypted
// .env file, and a Helm values file; age and OpenPGP keys alike.
func TestRender_SOPSFilesAreDecryptedAsTheyAreRead(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	pgpKey, armoredPrivate := pgpEntity(t)
	root := t.TempDir()
	writeFiles(t, root, map[string][]byte{
		"plain/secret.yaml": encrypt(t, secretPlain, "yaml", sopstest.Options{Age: []string{id.Recipient().String()}}),
		"plain/pgp.yaml":    encrypt(t, strings.Replace(secretPlain, "name: db", "name: db-pgp", 1), "yaml", sopstest.Options{PGP: []*openpgp.Entity{pgpKey}}),
		"kust/kustomization.yaml": []byte("namespace: shop\ncommonLabels: {team: a}\nresources: [secret.yaml]\n" +
			"secretGenerator:\n- name: env\n  envs: [app.env]\n  options: {disableNameSuffixHash: true}\n"),
		"kust/secret.yaml":       encrypt(t, secretPlain, "yaml", sopstest.Options{Age: []string{id.Recipient().String()}}),
		"kust/app.env":           encrypt(t, "API_TOKEN=hunter2-env\n", "dotenv", sopstest.Options{Age: []string{id.Recipient().String()}}),
		"chart/Chart.yaml":       []byte("apiVersion: v2\nname: c\nversion: 0.1.0\n"),
		"chart/values.yaml":      []byte("password: none\n"),
		"chart/secrets.yaml":     encrypt(t, "password: hunter2-values\n", "yaml", sopstest.Options{Age: []string{id.Recipient().String()}, EncryptedRegex: "^password$"}),
		"chart/templates/s.yaml": []byte("apiVersion: v1\nkind: Secret\nmetadata:\n  name: from-values\nstringData:\n  password: {{ .Values.password }}\n"),
	})
	keys := &Decryption{Age: []string{"# a comment, as age-keygen writes\n" + id.String() + "\n"}, PGP: []string{armoredPrivate}}

	plain := renderObjects(t, Options{Root: root, Path: "plain", Isolation: "sops", Decryption: keys})
	for _, name := range []string{"Secret/db", "Secret/db-pgp"} {
		o := plain[name]
		if o.Unstructured == nil || o.Object["stringData"].(map[string]any)["password"] != "hunter2-plaintext" || o.Object["sops"] != nil {
			t.Errorf("%s = %v, want decrypted, without SOPS metadata", name, o.Object)
		}
	}
	kust := renderObjects(t, Options{Root: root, Path: "kust", Isolation: "sops", Decryption: keys})
	if db := kust["Secret/db"]; db.GetNamespace() != "shop" || db.GetLabels()["team"] != "a" || db.Object["stringData"].(map[string]any)["password"] != "hunter2-plaintext" {
		t.Errorf("kustomized Secret = %v", db.Object)
	}
	if env := kust["Secret/env"]; env.Unstructured == nil || env.Object["data"].(map[string]any)["API_TOKEN"] != "aHVudGVyMi1lbnY=" {
		t.Errorf("generated Secret = %v, want API_TOKEN from the decrypted .env", kust["Secret/env"].Object)
	}
	chart := renderObjects(t, Options{Root: root, Path: "chart", Isolation: "sops", Decryption: keys, Helm: HelmOptions{ReleaseName: "r", ValuesFiles: []string{"secrets.yaml"}}})
	if got := chart["Secret/from-values"].Object["stringData"].(map[string]any)["password"]; got != "hunter2-values" {
		t.Errorf("password from the encrypted values file = %v", got)
	}
}

// What cannot be decrypted is an error naming the file and the cause, and
// never holding plain text: no keys given, keys that do not fit, a file
// changed after it was encrypted, a file only a cloud KMS opens.
func TestRender_SOPSRefusesWhatItCannotOpen(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	other, _ := age.GenerateX25519Identity()
	enc := encrypt(t, secretPlain, "yaml", sopstest.Options{Age: []string{id.Recipient().String()}})
	root := t.TempDir()
	writeFiles(t, root, map[string][]byte{
		"a/secret.yaml":        enc,
		"tampered/secret.yaml": bytes.Replace(enc, []byte("name: db"), []byte("name: dc"), 1),
		"kms/secret.yaml":      encrypt(t, secretPlain, "yaml", sopstest.Options{KMS: []string{"arn:aws:kms:eu-west-1:111122223333:key/example"}}),
	})
	mine := &Decryption{Age: []string{id.String()}}
	for name, tc := range map[string]struct {
		path string
		keys *Decryption
		want string
	}{
		"no keys":        {"a", nil, "spec.decryption"},
		"another key":    {"a", &Decryption{Age: []string{other.String()}}, "no key of spec.decryption opens it"},
		"tampered":       {"tampered", mine, "MAC does not match"},
		"only a KMS key": {"kms", mine, "kms arn:aws:kms:eu-west-1:111122223333:key/example (converge decrypts with age and OpenPGP keys only)"},
	} {
		_, err := Render(context.Background(), Options{Root: root, Path: tc.path, Isolation: "sops", Decryption: tc.keys})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "secret.yaml") {
			t.Errorf("%s: error %v, want one naming secret.yaml and %q", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error holds the plain text: %v", name, err)
		}
	}
}

func pgpEntity(t *testing.T) (*openpgp.Entity, string) {
	t.Helper()
	e, err := openpgp.NewEntity("flux", "", "flux@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SerializePrivate(w, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return e, buf.String()
}
