//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/cli"
	"converge.dev/converge/internal/seal"
	"converge.dev/converge/internal/testutil/kubetest"
)

func plaintext(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "pw-" + hex.EncodeToString(b)
}

func secretManifest(ns, name, value string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\n  labels: {team: shop}\ntype: Opaque\nstringData:\n  password: %s\n", name, ns, value)
}

// fetchCert waits for the agent to publish its certificate and saves it.
func fetchCert(t *testing.T) string {
	t.Helper()
	var pemData string
	kubetest.Eventually(t, 60*time.Second, "the sealing certificate published", func(context.Context) (bool, error) {
		r := converge(t, "seal", "--fetch-cert")
		pemData = r.stdout
		return r.code == 0, fmt.Errorf("%s", r.stderr)
	})
	path := filepath.Join(t.TempDir(), "cert.pem")
	writeFile(t, path, pemData)
	return path
}

func sealFile(t *testing.T, cert, manifest string, args ...string) *v1alpha1.SealedSecret {
	t.Helper()
	in := filepath.Join(t.TempDir(), "secret.yaml")
	writeFile(t, in, manifest)
	r := converge(t, append([]string{"seal", in, "--cert", cert}, args...)...)
	if r.code != 0 {
		t.Fatalf("seal: %s", r.output())
	}
	var ss v1alpha1.SealedSecret
	if err := yaml.Unmarshal([]byte(r.stdout), &ss); err != nil {
		t.Fatalf("seal output: %v\n%s", err, r.stdout)
	}
	return &ss
}

func keyIDOf(t *testing.T, ss *v1alpha1.SealedSecret, key string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(ss.Spec.EncryptedData[key])
	if err != nil {
		t.Fatal(err)
	}
	p, err := seal.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return p.KeyID.String()
}

func waitSealed(t *testing.T, ns, name, reason string) *v1alpha1.SealedSecret {
	t.Helper()
	ss := &v1alpha1.SealedSecret{}
	kubetest.Eventually(t, 15*time.Second, "SealedSecret "+name+" Ready reason "+reason, func(ctx context.Context) (bool, error) {
		if err := agent.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ss); err != nil {
			return false, err
		}
		c := apimeta.FindStatusCondition(ss.Status.Conditions, v1alpha1.ConditionReady)
		return c != nil && c.Reason == reason && c.ObservedGeneration == ss.Generation, fmt.Errorf("Ready = %+v", c)
	})
	return ss
}

func secretValue(t *testing.T, ns, name string) string {
	t.Helper()
	var s corev1.Secret
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		return "<" + err.Error() + ">"
	}
	return string(s.Data["password"])
}

func apply(t *testing.T, ss *v1alpha1.SealedSecret) {
	t.Helper()
	ss = ss.DeepCopy()
	ss.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("SealedSecret"))
	ss.ResourceVersion, ss.UID, ss.CreationTimestamp = "", "", metav1.Time{}
	ss.Status = v1alpha1.SealedSecretStatus{}
	var live v1alpha1.SealedSecret
	err := agent.client.Get(context.Background(), client.ObjectKeyFromObject(ss), &live)
	if err == nil {
		live.Spec = ss.Spec
		err = agent.client.Update(context.Background(), &live)
	} else {
		err = agent.client.Create(context.Background(), ss)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestSeal_SealedInGitSyncsAndPlaintextLeaksNowhere(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	cert := fetchCert(t)
	value := plaintext(t)
	ss := sealFile(t, cert, secretManifest(ns, "db", value))
	out, _ := yaml.Marshal(ss)
	if bytes.Contains(out, []byte(value)) {
		t.Fatal("the plaintext is in the SealedSecret")
	}

	repo, err := a.git.NewRepo(ns + "-sealed")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{"deploy/db-sealed.yaml": string(out), "deploy/cm.yaml": fmt.Sprintf(agentCM, "x")}); err != nil {
		t.Fatal(err)
	}
	rev, err := repo.Commit("main", "add sealed db password")
	if err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "sealed", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
			SyncPolicy: automated(true, true),
		},
	}
	if err := a.client.Create(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	a.waitApp(t, ns, "sealed", 30*time.Second, "synced and healthy", func(app *v1alpha1.Application) bool {
		return synced(rev)(app) && app.Status.Health.Status == v1alpha1.HealthHealthy
	})
	got := waitSealed(t, ns, "db", v1alpha1.ReasonUnsealed)
	if v := secretValue(t, ns, "db"); v != value {
		t.Fatalf("Secret db password = %q, want the sealed value", v)
	}
	var s corev1.Secret
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "db"}, &s); err != nil {
		t.Fatal(err)
	}
	if s.Labels["team"] != "shop" || s.Type != corev1.SecretTypeOpaque || !metav1.IsControlledBy(&s, got) {
		t.Errorf("Secret labels %v, type %s, owners %v", s.Labels, s.Type, s.OwnerReferences)
	}

	// Deleting the Secret brings it back.
	if err := cluster.Client.Delete(context.Background(), &s); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, "the Secret recreated", func(context.Context) (bool, error) {
		return secretValue(t, ns, "db") == value, fmt.Errorf("value %q", secretValue(t, ns, "db"))
	})

	// So does an edit of its data.
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "db"}, &s); err != nil {
		t.Fatal(err)
	}
	s.Data["password"] = []byte("edited-by-hand")
	if err := cluster.Client.Update(context.Background(), &s); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, "the edit reverted", func(context.Context) (bool, error) {
		return secretValue(t, ns, "db") == value, fmt.Errorf("value %q", secretValue(t, ns, "db"))
	})

	// Grep everywhere the plaintext could leak.
	diff := converge(t, "diff", "sealed", "-n", ns)
	status, _ := yaml.Marshal(got.Status)
	noPlaintext(t, ns, value, map[string]string{"diff": diff.output(), "status": string(status)})
}

// noPlaintext fails when value (or its base64) appears in places, in the
// events of ns or in the agent's log.
func noPlaintext(t *testing.T, ns, value string, places map[string]string) {
	t.Helper()
	var events corev1.EventList
	if err := cluster.Client.List(context.Background(), &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	evText, _ := yaml.Marshal(events)
	logs, err := os.ReadFile(filepath.Join(os.TempDir(), "converge-e2e-agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	places["events"], places["agent log"] = string(evText), string(logs)
	b64 := base64.StdEncoding.EncodeToString([]byte(value))
	for where, text := range places {
		if strings.Contains(text, value) || strings.Contains(text, b64) {
			t.Errorf("the plaintext appears in the %s", where)
		}
	}
}

func TestSeal_ScopesBindNamespaceAndName(t *testing.T) {
	startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	other := kubetest.Namespace(t, cluster.Client)
	cert := fetchCert(t)
	value := plaintext(t)

	strict := sealFile(t, cert, secretManifest(ns, "strict", value))
	apply(t, strict)
	waitSealed(t, ns, "strict", v1alpha1.ReasonUnsealed)

	moved := strict.DeepCopy()
	moved.Namespace = other
	apply(t, moved)
	bad := waitSealed(t, other, "strict", v1alpha1.ReasonWrongScope)
	if c := apimeta.FindStatusCondition(bad.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, "password") || !strings.Contains(c.Message, "namespace or name") {
		t.Errorf("condition message %q does not say which key and why", c.Message)
	}
	renamed := strict.DeepCopy()
	renamed.Name = "renamed"
	apply(t, renamed)
	waitSealed(t, ns, "renamed", v1alpha1.ReasonWrongScope)
	for _, n := range [][2]string{{other, "strict"}, {ns, "renamed"}} {
		if v := secretValue(t, n[0], n[1]); !strings.Contains(v, "not found") {
			t.Errorf("a refused SealedSecret wrote Secret %s/%s", n[0], n[1])
		}
	}

	// Namespace-wide: any name in the namespace, no other namespace.
	nsWide := sealFile(t, cert, secretManifest(ns, "wide", value), "--scope", "namespace")
	nsWide.Name = "any-name"
	apply(t, nsWide)
	waitSealed(t, ns, "any-name", v1alpha1.ReasonUnsealed)
	nsWide.Namespace = other
	apply(t, nsWide)
	waitSealed(t, other, "any-name", v1alpha1.ReasonWrongScope)

	// Cluster-wide: anywhere.
	cw := sealFile(t, cert, secretManifest(ns, "cw", value), "--scope", "cluster")
	cw.Namespace, cw.Name = other, "elsewhere"
	apply(t, cw)
	waitSealed(t, other, "elsewhere", v1alpha1.ReasonUnsealed)
	if v := secretValue(t, other, "elsewhere"); v != value {
		t.Errorf("cluster-wide value = %q", v)
	}
	// Claiming another scope than it was sealed with is refused.
	claimed := cw.DeepCopy()
	claimed.Name, claimed.Spec.Scope = "claims-strict", "strict"
	apply(t, claimed)
	waitSealed(t, other, "claims-strict", v1alpha1.ReasonWrongScope)
}

func TestSeal_TamperedCiphertextChangesNothing(t *testing.T) {
	startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	cert := fetchCert(t)
	value := plaintext(t)
	ss := sealFile(t, cert, secretManifest(ns, "db", value))
	apply(t, ss)
	waitSealed(t, ns, "db", v1alpha1.ReasonUnsealed)

	raw, _ := base64.StdEncoding.DecodeString(ss.Spec.EncryptedData["password"])
	raw[len(raw)-5] ^= 0x01
	ss.Spec.EncryptedData["password"] = base64.StdEncoding.EncodeToString(raw)
	apply(t, ss)
	got := waitSealed(t, ns, "db", v1alpha1.ReasonTampered)
	if st := apimeta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionStalled); st == nil || st.Status != metav1.ConditionTrue {
		t.Errorf("Stalled = %+v", st)
	}
	if v := secretValue(t, ns, "db"); v != value {
		t.Fatalf("the tampered SealedSecret changed the Secret: %q", v)
	}
}

func TestSeal_RefusesToOverwriteAnUnownedSecret(t *testing.T) {
	startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	cert := fetchCert(t)
	existing := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: ns}, StringData: map[string]string{"password": "original"}}
	if err := cluster.Client.Create(context.Background(), existing); err != nil {
		t.Fatal(err)
	}
	value := plaintext(t)
	apply(t, sealFile(t, cert, secretManifest(ns, "taken", value)))
	waitSealed(t, ns, "taken", v1alpha1.ReasonSecretNotOwned)
	if v := secretValue(t, ns, "taken"); v != "original" {
		t.Fatalf("unowned Secret overwritten: %q", v)
	}
	if err := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(existing), existing); err != nil {
		t.Fatal(err)
	}
	existing.Annotations = map[string]string{v1alpha1.AnnotationSealedSecretManaged: "true"}
	if err := cluster.Client.Update(context.Background(), existing); err != nil {
		t.Fatal(err)
	}
	// Any change to the SealedSecret makes the agent look again.
	ss := &v1alpha1.SealedSecret{}
	if err := agent.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "taken"}, ss); err != nil {
		t.Fatal(err)
	}
	ss.Spec.Template.Metadata.Annotations = map[string]string{"retry": "1"}
	if err := agent.client.Update(context.Background(), ss); err != nil {
		t.Fatal(err)
	}
	waitSealed(t, ns, "taken", v1alpha1.ReasonUnsealed)
	if v := secretValue(t, ns, "taken"); v != value {
		t.Fatalf("annotated Secret not taken over: %q", v)
	}
}

func TestSeal_RotationKeepsOldValuesAndReEncryptMovesThem(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	oldCert := fetchCert(t)
	value := plaintext(t)
	old := sealFile(t, oldCert, secretManifest(ns, "db", value))
	oldID := keyIDOf(t, old, "password")

	if r := converge(t, "keys", "rotate"); r.code != 0 {
		t.Fatalf("keys rotate: %s", r.output())
	}
	newCert := fetchCert(t)
	fresh := sealFile(t, newCert, secretManifest(ns, "fresh", value))
	newID := keyIDOf(t, fresh, "password")
	if newID == oldID {
		t.Fatalf("after rotation new seals still use key %s", oldID)
	}
	apply(t, old)
	apply(t, fresh)
	waitSealed(t, ns, "db", v1alpha1.ReasonUnsealed)
	waitSealed(t, ns, "fresh", v1alpha1.ReasonUnsealed)
	if secretValue(t, ns, "db") != value || secretValue(t, ns, "fresh") != value {
		t.Fatal("values differ after rotation")
	}

	in := filepath.Join(t.TempDir(), "old.yaml")
	data, _ := yaml.Marshal(old)
	writeFile(t, in, string(data))
	r := converge(t, "seal", "--re-encrypt", in, "--controller-url", a.sealing)
	if r.code != 0 {
		t.Fatalf("re-encrypt: %s", r.output())
	}
	var moved v1alpha1.SealedSecret
	if err := yaml.Unmarshal([]byte(r.stdout), &moved); err != nil {
		t.Fatal(err)
	}
	if id := keyIDOf(t, &moved, "password"); id != newID {
		t.Fatalf("re-encrypted with key %s, want the newest %s", id, newID)
	}
	if strings.Contains(r.output(), value) {
		t.Fatal("re-encryption printed the plaintext")
	}
	apply(t, &moved)
	got := waitSealed(t, ns, "db", v1alpha1.ReasonUnsealed)
	if len(got.Status.KeyIDs) != 1 || got.Status.KeyIDs[0] != newID || secretValue(t, ns, "db") != value {
		t.Fatalf("after re-encryption: key ids %v, value ok %v", got.Status.KeyIDs, secretValue(t, ns, "db") == value)
	}

	// --merge-into adds a key to the existing file.
	extra := filepath.Join(t.TempDir(), "extra.yaml")
	writeFile(t, extra, "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {user: admin}\n")
	if r := converge(t, "seal", extra, "--cert", newCert, "--merge-into", in); r.code != 0 {
		t.Fatalf("merge-into: %s", r.output())
	}
	merged, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	var m v1alpha1.SealedSecret
	if err := yaml.Unmarshal(merged, &m); err != nil || len(m.Spec.EncryptedData) != 2 || m.Spec.EncryptedData["password"] != old.Spec.EncryptedData["password"] {
		t.Fatalf("merged file: %v %+v", err, m.Spec.EncryptedData)
	}
}

func TestSeal_KeysSurviveDisasterRecoveryIntoAFreshCluster(t *testing.T) {
	startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	cert := fetchCert(t)
	value := plaintext(t)
	ss := sealFile(t, cert, secretManifest(ns, "db", value))

	backup := converge(t, "keys", "export")
	if backup.code != 0 || !strings.Contains(backup.stdout, "tls.key") {
		t.Fatalf("keys export: %s", backup.stderr)
	}
	keysFile := filepath.Join(t.TempDir(), "keys.yaml")
	writeFile(t, keysFile, backup.stdout)

	// A fresh control plane: its own etcd, nothing in it.
	root, err := kubetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := kubetest.StartEnv(kubetest.EnvOptions{CRDDirectoryPaths: []string{filepath.Join(root, "config/crd")}, AddToScheme: []func(*runtime.Scheme) error{v1alpha1.AddToScheme}})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Stop()
	kubeconfig := filepath.Join(t.TempDir(), "fresh.kubeconfig")
	if err := fresh.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := fresh.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// Import before the agent ever ran: the agent's namespace is made too.
	imp := convergeWith(t, kubeconfig, "keys", "import", keysFile)
	if imp.code != 0 || !strings.Contains(imp.stderr, "created namespace "+cli.DefaultSystemNamespace) {
		t.Fatalf("keys import: %s", imp.output())
	}

	// The real agent binary, against the fresh control plane.
	bin := filepath.Join(t.TempDir(), "converge")
	build := exec.Command("go", "build", "-o", bin, "./cmd/converge")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	agentCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var logs bytes.Buffer
	cmd := exec.CommandContext(agentCtx, bin, "agent", "--kubeconfig", kubeconfig, "--metrics-bind-address", "0",
		"--health-probe-bind-address", "0", "--webhook-bind-address", "", "--cache-dir", t.TempDir())
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()

	ss = ss.DeepCopy()
	ss.ResourceVersion, ss.UID = "", ""
	if err := fresh.Client.Create(ctx, ss); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 60*time.Second, "the SealedSecret opened in the fresh cluster", func(ctx context.Context) (bool, error) {
		var s corev1.Secret
		if err := fresh.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "db"}, &s); err != nil {
			return false, fmt.Errorf("%v; agent log tail: %s", err, tail(logs.String(), 600))
		}
		return string(s.Data["password"]) == value, fmt.Errorf("wrong value")
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
