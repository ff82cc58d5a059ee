package seal

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"
)

var (
	keyOnce  sync.Once
	testKeys [2]*KeyPair
)

func keys(t testing.TB) (*KeyPair, *KeyPair) {
	t.Helper()
	keyOnce.Do(func() {
		for i := range testKeys {
			k, err := GenerateKey(nil, KeyBits, time.Date(2026, 1, 1+i, 0, 0, 0, 0, time.UTC))
			if err != nil {
				panic(err)
			}
			testKeys[i] = k
		}
	})
	return testKeys[0], testKeys[1]
}

func TestSeal_OpensOnlyInItsScope(t *testing.T) {
	k, _ := keys(t)
	ring := NewKeyring(k)
	secret := []byte("hunter2-plaintext")
	for _, tc := range []struct {
		scope   Scope
		opensIn [][2]string
		refused map[[2]string]error
	}{
		{Strict, [][2]string{{"shop", "db"}},
			map[[2]string]error{{"shop", "other"}: ErrWrongSecret, {"other", "db"}: ErrWrongSecret}},
		{NamespaceWide, [][2]string{{"shop", "db"}, {"shop", "other"}},
			map[[2]string]error{{"other", "db"}: ErrWrongSecret}},
		{ClusterWide, [][2]string{{"shop", "db"}, {"other", "x"}}, nil},
	} {
		env, err := Seal(nil, &k.Private.PublicKey, tc.scope, "shop", "db", secret)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(env, secret) {
			t.Fatal("plaintext visible in the envelope")
		}
		for _, at := range tc.opensIn {
			got, err := ring.Open(env, tc.scope, at[0], at[1])
			if err != nil || !bytes.Equal(got, secret) {
				t.Errorf("%s scope at %v: %q, %v", tc.scope, at, got, err)
			}
		}
		for at, want := range tc.refused {
			if _, err := ring.Open(env, tc.scope, at[0], at[1]); !errors.Is(err, want) {
				t.Errorf("%s scope at %v: got %v, want %v", tc.scope, at, err, want)
			}
		}
		// Claiming another scope is refused too.
		other := ClusterWide
		if tc.scope == ClusterWide {
			other = Strict
		}
		if _, err := ring.Open(env, other, "shop", "db"); !errors.Is(err, ErrWrongScope) {
			t.Errorf("%s sealed, opened as %s: %v", tc.scope, other, err)
		}
	}
}

func TestSeal_AnyFlippedByteIsRejected(t *testing.T) {
	k, _ := keys(t)
	ring := NewKeyring(k)
	env, err := Seal(nil, &k.Private.PublicKey, Strict, "shop", "db", []byte("value"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range env {
		bad := bytes.Clone(env)
		bad[i] ^= 0x01
		if got, err := ring.Open(bad, Strict, "shop", "db"); err == nil {
			t.Fatalf("byte %d flipped: opened to %q", i, got)
		}
	}
	if _, err := ring.Open(env[:len(env)-1], Strict, "shop", "db"); err == nil {
		t.Fatal("truncated envelope opened")
	}
}

func TestKeyring_OldKeysOpenNewestSeals(t *testing.T) {
	old, cur := keys(t)
	ring := NewKeyring(old, cur)
	if ring.Newest().ID != cur.ID {
		t.Fatalf("newest = %s, want %s", ring.Newest().ID, cur.ID)
	}
	env, err := Seal(nil, &old.Private.PublicKey, NamespaceWide, "shop", "", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	moved, err := ring.Reseal(env, NamespaceWide, "shop", "x")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(moved)
	if err != nil || p.KeyID != cur.ID {
		t.Fatalf("resealed with %v, %v; want %s", p, err, cur.ID)
	}
	if got, err := NewKeyring(cur).Open(moved, NamespaceWide, "shop", "y"); err != nil || string(got) != "v" {
		t.Fatalf("resealed value: %q %v", got, err)
	}
	if _, err := NewKeyring(cur).Open(env, NamespaceWide, "shop", "y"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old envelope without the old key: %v", err)
	}
}

func TestKeyPair_PEMRoundTrip(t *testing.T) {
	k, _ := keys(t)
	keyPEM, err := k.PrivatePEM()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseKeyPair(keyPEM, k.CertPEM, k.Created)
	if err != nil || back.ID != k.ID {
		t.Fatalf("%v %v", back, err)
	}
	_, other := keys(t)
	if _, err := ParseKeyPair(keyPEM, other.CertPEM, k.Created); err == nil {
		t.Fatal("mismatched certificate accepted")
	}
}

func FuzzOpen(f *testing.F) {
	k, _ := keys(f)
	ring := NewKeyring(k)
	env, err := Seal(nil, &k.Private.PublicKey, Strict, "ns", "n", []byte("seed"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(env)
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ring.Open(data, Strict, "ns", "n")
		if err == nil && !bytes.Equal(data, env) {
			t.Fatalf("a modified envelope opened to %q", got)
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	k, _ := keys(b)
	value := bytes.Repeat([]byte("x"), 1024)
	b.ResetTimer()
	for range b.N {
		if _, err := Seal(nil, &k.Private.PublicKey, Strict, "shop", "db", value); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	k, _ := keys(b)
	ring := NewKeyring(k)
	env, err := Seal(nil, &k.Private.PublicKey, Strict, "shop", "db", bytes.Repeat([]byte("x"), 1024))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := ring.Open(env, Strict, "shop", "db"); err != nil {
			b.Fatal(err)
		}
	}
}
