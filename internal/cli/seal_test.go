package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/seal"
)

func runIn(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Execute(context.Background(), Streams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}, args)
	return out.String(), errOut.String(), code
}

// offlineKey writes a certificate for offline sealing (2048 bits: the
// format does not depend on the size, and tests stay fast).
func offlineKey(t *testing.T) (*seal.Keyring, string) {
	t.Helper()
	k, err := seal.GenerateKey(nil, 2048, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(cert, k.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return seal.NewKeyring(k), cert
}

func openValue(t *testing.T, ring *seal.Keyring, ss *v1alpha1.SealedSecret, key string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(ss.Spec.EncryptedData[key])
	if err != nil {
		t.Fatal(err)
	}
	scope, _ := seal.ParseScope(ss.Spec.Scope)
	v, err := ring.Open(raw, scope, ss.Namespace, ss.Name)
	if err != nil {
		t.Fatalf("opening %s: %v", key, err)
	}
	return string(v)
}

func TestSeal_OfflineFromJSONOnStdin(t *testing.T) {
	ring, cert := offlineKey(t)
	in := `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db","namespace":"shop","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":\"leak\"}"}},"type":"kubernetes.io/basic-auth","data":{"password":"aHVudGVyMg=="},"stringData":{"username":"admin"}}`
	stdout, stderr, code := runIn(t, in, "seal", "--cert", cert)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout, "hunter2") || strings.Contains(stdout, "aHVudGVyMg==") || strings.Contains(stdout, "leak") || strings.Contains(stdout, "admin") {
		t.Fatalf("plaintext in the output:\n%s", stdout)
	}
	var ss v1alpha1.SealedSecret
	if err := yaml.Unmarshal([]byte(stdout), &ss); err != nil {
		t.Fatal(err)
	}
	if ss.Kind != "SealedSecret" || ss.Namespace != "shop" || ss.Spec.Scope != "strict" || ss.Spec.Template.Type != "kubernetes.io/basic-auth" {
		t.Fatalf("got %+v", ss)
	}
	if openValue(t, ring, &ss, "password") != "hunter2" || openValue(t, ring, &ss, "username") != "admin" {
		t.Fatal("values do not open to the input")
	}

	// --merge-into replaces one key and keeps the other.
	file := filepath.Join(t.TempDir(), "sealed.yaml")
	if err := os.WriteFile(file, []byte(stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	before := ss.Spec.EncryptedData["username"]
	_, stderr, code = runIn(t, "apiVersion: v1\nkind: Secret\nmetadata: {name: ignored}\nstringData: {password: rotated}\n", "seal", "--cert", cert, "--merge-into", file)
	if code != ExitOK {
		t.Fatalf("merge: exit %d: %s", code, stderr)
	}
	data, _ := os.ReadFile(file)
	var merged v1alpha1.SealedSecret
	if err := yaml.Unmarshal(data, &merged); err != nil {
		t.Fatal(err)
	}
	if openValue(t, ring, &merged, "password") != "rotated" || merged.Spec.EncryptedData["username"] != before || merged.Name != "db" {
		t.Fatalf("merged: %+v", merged.Spec.EncryptedData)
	}
}

func TestSeal_RawAndErrors(t *testing.T) {
	ring, cert := offlineKey(t)
	stdout, stderr, code := runIn(t, "s3cret", "seal", "--raw", "--cert", cert, "--name", "db", "-n", "shop")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(stdout))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := ring.Open(raw, seal.Strict, "shop", "db"); err != nil || string(v) != "s3cret" {
		t.Fatalf("raw value opens to %q, %v", v, err)
	}
	for name, tc := range map[string]struct {
		stdin string
		args  []string
		want  string
	}{
		"raw without name": {"x", []string{"--raw", "-n", "shop"}, "needs --name"},
		"not a Secret":     {"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", nil, "expected a v1 Secret"},
		"no namespace":     {"apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nstringData: {a: b}\n", []string{"--kubeconfig", "/nonexistent/kubeconfig"}, "names no namespace"},
		"bad base64":       {"apiVersion: v1\nkind: Secret\nmetadata: {name: x, namespace: y}\ndata: {a: '!!notbase64-secretvalue'}\n", nil, "not valid base64"},
		"bad scope":        {"apiVersion: v1\nkind: Secret\nmetadata: {name: x, namespace: y}\n", []string{"--scope", "galaxy"}, "unknown scope"},
		"empty input":      {"", nil, "is empty"},
	} {
		_, stderr, code := runIn(t, tc.stdin, append([]string{"seal", "--cert", cert}, tc.args...)...)
		if code != ExitFailure || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "secretvalue") {
			t.Errorf("%s: exit %d, stderr %q; want %q", name, code, stderr, tc.want)
		}
	}
}

func TestKeySecrets_AcceptsExportAndRefusesOthers(t *testing.T) {
	k, err := seal.GenerateKey(nil, 2048, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.KeySecret(k, "")
	if err != nil {
		t.Fatal(err)
	}
	list, _ := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": []any{s}})
	got, err := keySecrets(list)
	if err != nil || len(got) != 1 {
		t.Fatalf("%v %v", got, err)
	}
	if back, err := seal.KeyFromSecret(got[0]); err != nil || back.ID != k.ID {
		t.Fatalf("%v %v", back, err)
	}
	if _, err := keySecrets([]byte("apiVersion: v1\nkind: Secret\nmetadata: {name: random}\n")); err == nil {
		t.Fatal("a Secret without the sealing-key label was accepted")
	}
}
