package seal

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	ssv1 "github.com/bitnami-labs/sealed-secrets/pkg/apis/sealedsecrets/v1alpha1"
	sscrypto "github.com/bitnami-labs/sealed-secrets/pkg/crypto"
)

// bitnamiKey is a key made as the sealed-secrets controller makes its own,
// in the Secret shape it stores (PKCS#1 key, certificate), read as
// `converge keys import --from-sealed-secrets` reads it.
func bitnamiKey(t *testing.T) (*rsa.PrivateKey, *KeyPair) {
	t.Helper()
	priv, cert, err := sscrypto.GeneratePrivateKeyAndCert(2048, time.Hour, "sealed-secret")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509PKCS1(priv)})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	kp, err := ParseKeyPair(keyPEM, certPEM, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return priv, kp
}

// Wire compatibility with Bitnami's Sealed Secrets, both ways, against the
// sealed-secrets project's own Go module: what kubeseal seals, converge
// opens in every scope; what converge seals in Bitnami's format, the
// sealed-secrets controller's code opens; and neither opens outside the
// scope it was sealed for.
func TestBitnami_WireCompatibleBothWays(t *testing.T) {
	priv, kp := bitnamiKey(t)
	_, other := bitnamiKey(t)
	ring := NewKeyring(other, kp)
	for _, tc := range []struct {
		scope   Scope
		theirs  ssv1.SealingScope
		ns, sec string
	}{
		{Strict, ssv1.StrictScope, "shop", "db"},
		{NamespaceWide, ssv1.NamespaceWideScope, "shop", "db"},
		{ClusterWide, ssv1.ClusterWideScope, "shop", "db"},
	} {
		theirLabel := ssv1.EncryptionLabel(tc.ns, tc.sec, tc.theirs)
		sealed, err := sscrypto.HybridEncrypt(rand.Reader, &priv.PublicKey, []byte("hunter2"), theirLabel)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ring.OpenBitnami(sealed, tc.scope, tc.ns, tc.sec)
		if err != nil || string(got) != "hunter2" {
			t.Errorf("%s: converge opens kubeseal's value: %q, %v", tc.scope, got, err)
		}
		ours, err := SealBitnami(nil, &kp.Private.PublicKey, tc.scope, tc.ns, tc.sec, []byte("hunter2"))
		if err != nil {
			t.Fatal(err)
		}
		got, err = sscrypto.HybridDecrypt(rand.Reader, map[string]*rsa.PrivateKey{"k": priv}, ours, theirLabel)
		if err != nil || string(got) != "hunter2" {
			t.Errorf("%s: the sealed-secrets controller opens converge's value: %q, %v", tc.scope, got, err)
		}
		if tc.scope != ClusterWide {
			if _, err := ring.OpenBitnami(sealed, tc.scope, "elsewhere", tc.sec); !errors.Is(err, ErrUnknownKey) {
				t.Errorf("%s: opened in another namespace: %v", tc.scope, err)
			}
		}
	}
	strict, _ := sscrypto.HybridEncrypt(rand.Reader, &priv.PublicKey, []byte("hunter2"), ssv1.EncryptionLabel("shop", "db", ssv1.StrictScope))
	if _, err := ring.OpenBitnami(strict, Strict, "shop", "renamed"); err == nil {
		t.Error("a strict value opened under another name")
	}
	if _, err := NewKeyring(other).OpenBitnami(strict, Strict, "shop", "db"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("opened without its key: %v", err)
	}
	tampered := append([]byte(nil), strict...)
	tampered[len(tampered)-1] ^= 1
	if _, err := ring.OpenBitnami(tampered, Strict, "shop", "db"); !errors.Is(err, ErrTampered) {
		t.Errorf("tampered: %v, want ErrTampered", err)
	}
}

func x509PKCS1(k *rsa.PrivateKey) []byte { return x509.MarshalPKCS1PrivateKey(k) }
