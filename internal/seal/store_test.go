package seal

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/testutil/kubetest"
)

var env *kubetest.Env

func TestMain(m *testing.M) { kubetest.Main(m, kubetest.EnvOptions{}, &env) }

func TestStore_MakesRotatesAndPublishesKeys(t *testing.T) {
	ctx := context.Background()
	ns := fmt.Sprintf("sealing-%d", time.Now().UnixNano()%1e9) // made by Ensure
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &Store{Client: env.Client, Namespace: ns, Rotation: 30 * 24 * time.Hour, Bits: 2048, Now: func() time.Time { return now }}

	ring, err := s.Ensure(ctx) // the namespace does not exist yet
	if err != nil {
		t.Fatal(err)
	}
	first := ring.Newest()
	if ring.Len() != 1 || first == nil {
		t.Fatalf("%d keys after the first start", ring.Len())
	}
	cert := func() string {
		var cm corev1.ConfigMap
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: CertConfigMap}, &cm); err != nil {
			t.Fatal(err)
		}
		return cm.Data[CertKey]
	}
	if cert() != string(first.CertPEM) {
		t.Fatal("the published certificate is not the key's")
	}

	now = now.Add(29 * 24 * time.Hour)
	if ring, err = s.Ensure(ctx); err != nil || ring.Len() != 1 {
		t.Fatalf("before the period: %d keys, %v", ring.Len(), err)
	}
	now = now.Add(2 * 24 * time.Hour)
	if ring, err = s.Ensure(ctx); err != nil || ring.Len() != 2 {
		t.Fatalf("after the period: %d keys, %v", ring.Len(), err)
	}
	second := ring.Newest()
	if second.ID == first.ID || cert() != string(second.CertPEM) {
		t.Fatal("the newest key does not seal, or its certificate is not published")
	}
	// A restarted agent reads the same keys back.
	fresh := &Store{Client: env.Client, Namespace: ns}
	back, err := fresh.Load(ctx)
	if err != nil || back.Len() != 2 || back.Newest().ID != second.ID {
		t.Fatalf("reloaded: %v, %v", back, err)
	}
}
