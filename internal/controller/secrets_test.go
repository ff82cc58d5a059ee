package controller

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/testutil/kubetest"
)

var env *kubetest.Env

func TestMain(m *testing.M) {
	kubetest.Main(m, kubetest.WithConvergeAPI(kubetest.EnvOptions{}), &env)
}

// countingReader counts the reads that reach the apiserver.
type countingReader struct {
	client.Reader
	gets atomic.Int32
}

func (r *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r.gets.Add(1)
	return r.Reader.Get(ctx, key, obj, opts...)
}

// The agent's own reads of a Secret, present or missing, reach the
// apiserver once until the Secret is made, changed or deleted.
func TestSecretCache_ReadsAgainOnlyWhenTheSecretChanges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := kubetest.Namespace(t, env.Client)
	c, err := NewSecretCache(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	kubetest.Eventually(t, 30*time.Second, "the Secret watch synced", func(context.Context) (bool, error) {
		_, known := c.currentVersion(ns, "x")
		return known, nil
	})
	api := &countingReader{Reader: env.Client}
	r := c.Reader("", api)
	key := client.ObjectKey{Namespace: ns, Name: "creds"}

	// Missing: one read, then NotFound from memory.
	for range 3 {
		if err := r.Get(ctx, key, &corev1.Secret{}); !apierrors.IsNotFound(err) {
			t.Fatalf("missing Secret: %v, want NotFound", err)
		}
	}
	if n := api.gets.Load(); n != 1 {
		t.Fatalf("a missing Secret read 3 times reached the apiserver %d times, want 1", n)
	}

	// Made: the next read after the watch sees it returns it.
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "creds"}, StringData: map[string]string{"token": "one"}}
	if err := env.Client.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	read := func(want string) {
		t.Helper()
		kubetest.Eventually(t, 10*time.Second, "the Secret read as "+want, func(context.Context) (bool, error) {
			got := &corev1.Secret{}
			if err := r.Get(ctx, key, got); err != nil {
				return false, err
			}
			return string(got.Data["token"]) == want, fmt.Errorf("token %q", got.Data["token"])
		})
	}
	read("one")
	before := api.gets.Load()
	for range 3 {
		read("one")
	}
	if n := api.gets.Load() - before; n != 0 {
		t.Fatalf("an unchanged Secret reached the apiserver %d times, want 0", n)
	}

	// Changed, then deleted: each is read anew.
	s.StringData = map[string]string{"token": "two"}
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	read("two")
	if err := env.Client.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, "the deleted Secret NotFound", func(context.Context) (bool, error) {
		err := r.Get(ctx, key, &corev1.Secret{})
		return apierrors.IsNotFound(err), err
	})
}
