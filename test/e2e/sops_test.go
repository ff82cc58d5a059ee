//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
	"converge.dev/converge/internal/testutil/sopstest"
)

// A Flux-shaped repository with a SOPS-encrypted Secret (age, encrypted
// with SOPS's own module as the sops CLI does, data and stringData only)
// under a kustomization that moves it to a namespace: without the key the
// app fails naming the file and applies nothing; once the key is in the
// Secret spec.decryption names, it syncs at once. The plaintext then
// appears nowhere: status, events, history, diff, the agent's log.
func TestCompat_SOPSEncryptedSecretSyncsAndPlaintextLeaksNowhere(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	value := plaintext(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	secret := fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\nstringData:\n  password: %s\n", value)
	enc, err := sopstest.Encrypt([]byte(secret), "yaml", sopstest.Options{Age: []string{id.Recipient().String()}, EncryptedRegex: "^(data|stringData)$"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(enc), value) {
		t.Fatal("the plaintext is in the encrypted file")
	}
	repo, err := a.git.NewRepo(ns + "-sops")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{
		"apps/shop/kustomization.yaml": "namespace: " + ns + "\nresources: [db.enc.yaml, cm.yaml]\n",
		"apps/shop/db.enc.yaml":        string(enc),
		"apps/shop/cm.yaml":            fmt.Sprintf(agentCM, "x"),
	}); err != nil {
		t.Fatal(err)
	}
	rev, err := repo.Commit("main", "add the encrypted db password")
	if err != nil {
		t.Fatal(err)
	}
	// The key Secret exists, with the wrong key first.
	other, _ := age.GenerateX25519Identity()
	keys := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sops-age", Namespace: ns}, Data: map[string][]byte{"age.agekey": []byte(other.String())}}
	if err := cluster.Client.Create(ctx, keys); err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "sops", Namespace: ns}, Spec: v1alpha1.ApplicationSpec{
		Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "apps/shop"},
		SyncPolicy: automated(true, true),
		Decryption: &v1alpha1.Decryption{Provider: "sops", SecretRef: v1alpha1.LocalObjectReference{Name: "sops-age"}},
	}}
	if err := a.client.Create(ctx, app); err != nil {
		t.Fatal(err)
	}
	a.waitApp(t, ns, "sops", 30*time.Second, "RenderFailed naming the file", func(app *v1alpha1.Application) bool {
		c := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		return c != nil && c.Reason == v1alpha1.ReasonRenderFailed && strings.Contains(c.Message, "apps/shop/db.enc.yaml") && strings.Contains(c.Message, "no key of spec.decryption opens it")
	})
	if v := secretValue(t, ns, "db"); !strings.Contains(v, "not found") {
		t.Fatalf("Secret db exists before it could be decrypted: %q", v)
	}
	var cm corev1.ConfigMap
	if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "settings"}, &cm); err == nil {
		t.Fatal("the ConfigMap beside the encrypted Secret was applied: a failed render applies nothing")
	}

	keys.Data = map[string][]byte{"age.agekey": []byte("# created by age-keygen\n" + id.String() + "\n")}
	if err := cluster.Client.Update(ctx, keys); err != nil {
		t.Fatal(err)
	}
	// A change to the keys is not a change to the Application: a request
	// (what a person or CI does after fixing a key) syncs it at once.
	converge(t, "sync", "sops", "-n", ns, "--wait", "--timeout", "30s")
	got := a.waitApp(t, ns, "sops", 30*time.Second, "synced and healthy", func(app *v1alpha1.Application) bool {
		return strings.HasPrefix(app.Status.Sync.Revision, rev+"+keys:") && app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.Health.Status == v1alpha1.HealthHealthy
	})
	if v := secretValue(t, ns, "db"); v != value {
		t.Fatalf("Secret db password = %q, want the decrypted value", v)
	}

	diff := converge(t, "diff", "sops", "-n", ns)
	history := converge(t, "history", "sops", "-n", ns, "-o", "json")
	status, _ := yaml.Marshal(got.Status)
	noPlaintext(t, ns, value, map[string]string{"diff": diff.output(), "history": history.output(), "status": string(status)})
	if diff.code != 0 {
		t.Errorf("diff after the sync: exit %d\n%s", diff.code, diff.output())
	}
}
