//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ssv1 "github.com/bitnami-labs/sealed-secrets/pkg/apis/sealedsecrets/v1alpha1"
	sscrypto "github.com/bitnami-labs/sealed-secrets/pkg/crypto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/internal/testutil/kubetest"
)

// bitnamiCRDDir is the CRD directory of the sealed-secrets module.
func bitnamiCRDDir() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/bitnami-labs/sealed-secrets").Output()
	if err != nil {
		return "", fmt.Errorf("finding the sealed-secrets module: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "helm", "sealed-secrets", "crds"), nil
}

// bitnamiKeySecret is a key pair made by the sealed-secrets module, in the
// Secret its controller keeps it in.
func bitnamiKeySecret(t *testing.T, namespace, name string) (*rsa.PrivateKey, []byte, *corev1.Secret) {
	t.Helper()
	priv, cert, err := sscrypto.GeneratePrivateKeyAndCert(2048, time.Hour, "sealed-secret")
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	return priv, certPEM, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"sealedsecrets.bitnami.com/sealed-secrets-key": "active"}},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}),
			corev1.TLSCertKey:       certPEM,
		},
	}
}

// createBitnami creates a SealedSecret the sealed-secrets module made.
func createBitnami(t *testing.T, ss *ssv1.SealedSecret) {
	t.Helper()
	data, err := json.Marshal(ss)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(data, &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetAPIVersion("bitnami.com/v1alpha1")
	u.SetKind("SealedSecret")
	if err := cluster.Client.Create(context.Background(), u); err != nil {
		t.Fatal(err)
	}
}

func bitnamiSynced(t *testing.T, ns, name string) (string, string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("bitnami.com/v1alpha1")
	u.SetKind("SealedSecret")
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		return "", err.Error()
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Synced" {
			return fmt.Sprint(m["status"]), fmt.Sprint(m["message"])
		}
	}
	return "", "no Synced condition"
}

// A team moving in from Bitnami's Sealed Secrets: its controller's keys
// (two, one rotated out of use for sealing) are imported with `converge
// keys import --from-sealed-secrets`, and the SealedSecrets that kubeseal
// sealed (the sealed-secrets module's own code) open: strict,
// namespace-wide with the older key, and one whose template builds a
// value from the others. One moved to another name does not open. What
// `converge seal --format bitnami` writes opens with the sealed-secrets
// module.
func TestSeal_BitnamiSealedSecretsOpenWithImportedKeys(t *testing.T) {
	startAgent(t)
	ctx := context.Background()
	ns := kubetest.Namespace(t, cluster.Client)
	keysNS := kubetest.Namespace(t, cluster.Client)
	oldPriv, oldCert, oldKey := bitnamiKeySecret(t, keysNS, "sealed-secrets-keyold")
	priv, _, key := bitnamiKeySecret(t, keysNS, "sealed-secrets-keynew")
	for _, s := range []*corev1.Secret{oldKey, key} {
		if err := cluster.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	r := converge(t, "keys", "import", "--from-sealed-secrets", "--sealed-secrets-namespace", keysNS)
	if r.code != 0 || !strings.Contains(r.stderr, "Imported 2 of 2") {
		t.Fatalf("keys import: exit %d\n%s", r.code, r.output())
	}

	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = ssv1.AddToScheme(scheme)
	codecs := serializer.NewCodecFactory(scheme)
	seal := func(pub *rsa.PublicKey, s *corev1.Secret) *ssv1.SealedSecret {
		t.Helper()
		ss, err := ssv1.NewSealedSecret(codecs, pub, s)
		if err != nil {
			t.Fatal(err)
		}
		return ss
	}
	value := plaintext(t)
	strict := seal(&priv.PublicKey, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns, Labels: map[string]string{"team": "shop"}},
		Data: map[string][]byte{"password": []byte(value)}})
	wide := seal(&oldPriv.PublicKey, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns,
		Annotations: map[string]string{ssv1.SealedSecretNamespaceWideAnnotation: "true"}}, Data: map[string][]byte{"token": []byte(value)}})
	templated := seal(&priv.PublicKey, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "dsn", Namespace: ns}, Data: map[string][]byte{"password": []byte(value)}})
	templated.Spec.Template.Data = map[string]string{"url": `postgres://app:{{ index . "password" }}@db:5432/app`}
	moved := seal(&priv.PublicKey, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns}, Data: map[string][]byte{"password": []byte(value)}})
	moved.Name = "stolen"
	for _, ss := range []*ssv1.SealedSecret{strict, wide, templated, moved} {
		createBitnami(t, ss)
	}
	kubetest.Eventually(t, 30*time.Second, "the Bitnami SealedSecrets opened", func(context.Context) (bool, error) {
		for _, name := range []string{"db", "api", "dsn"} {
			if st, msg := bitnamiSynced(t, ns, name); st != "True" {
				return false, fmt.Errorf("%s: %s %s", name, st, msg)
			}
		}
		st, msg := bitnamiSynced(t, ns, "stolen")
		return st == "False", fmt.Errorf("stolen: %s %s", st, msg)
	})
	get := func(name string) *corev1.Secret {
		var s corev1.Secret
		if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}
	if db := get("db"); string(db.Data["password"]) != value || db.Labels["team"] != "shop" || len(db.OwnerReferences) != 1 || db.OwnerReferences[0].Kind != "SealedSecret" || db.OwnerReferences[0].APIVersion != "bitnami.com/v1alpha1" {
		t.Errorf("Secret db: labels %v, owners %v, password ok %v", db.Labels, db.OwnerReferences, string(db.Data["password"]) == value)
	}
	if api := get("api"); string(api.Data["token"]) != value {
		t.Error("the namespace-wide SealedSecret, sealed with the older key, did not open")
	}
	if dsn := get("dsn"); string(dsn.Data["url"]) != "postgres://app:"+value+"@db:5432/app" {
		t.Error("the template's data was not filled from the opened values")
	}
	var stolen corev1.Secret
	if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "stolen"}, &stolen); err == nil {
		t.Error("a strict SealedSecret moved to another name made a Secret")
	}
	if _, msg := bitnamiSynced(t, ns, "stolen"); strings.Contains(msg, value) {
		t.Error("the plaintext is in the status")
	}

	// converge seal --format bitnami, with the sealed-secrets controller's
	// certificate: the module's own Unseal opens it.
	certFile := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(certFile, oldCert, 0o600); err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(t.TempDir(), "secret.yaml")
	writeFile(t, input, fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata:\n  name: cache\n  namespace: %s\nstringData:\n  password: %s\n", ns, value))
	out := convergeOffline(t, "seal", input, "--format", "bitnami", "--cert", certFile)
	if out.code != 0 || strings.Contains(out.stdout, value) {
		t.Fatalf("converge seal --format bitnami: exit %d\n%s", out.code, out.stderr)
	}
	var ours ssv1.SealedSecret
	if err := yaml.UnmarshalStrict([]byte(out.stdout), &ours); err != nil {
		t.Fatalf("not a Bitnami SealedSecret: %v\n%s", err, out.stdout)
	}
	ours.SetGroupVersionKind(ssv1.SchemeGroupVersion.WithKind("SealedSecret"))
	opened, err := ours.Unseal(codecs, map[string]*rsa.PrivateKey{"k": oldPriv})
	if err != nil || string(opened.Data["password"]) != value {
		t.Fatalf("the sealed-secrets module opens converge's seal: %v", err)
	}
	// And the agent opens it too.
	createBitnami(t, &ours)
	kubetest.Eventually(t, 30*time.Second, "converge's Bitnami seal opened by the agent", func(context.Context) (bool, error) {
		st, msg := bitnamiSynced(t, ns, "cache")
		return st == "True" && bytes.Equal(get("cache").Data["password"], []byte(value)), fmt.Errorf("%s %s", st, msg)
	})
}
