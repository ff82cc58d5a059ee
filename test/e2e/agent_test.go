//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/cli"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
)

const webhookSecret = "e2e-webhook-secret"

// agentEnv is one agent, one git server and the Application API, shared by
// the agent tests.
type agentEnv struct {
	git     *gitserver.Server
	client  client.Client
	webhook string
	// sealing is the base URL of the sealing endpoints.
	sealing string
	// ui is the base URL of the agent's web UI.
	ui string
	// logs is the agent's log file.
	logs string
}

var (
	agentOnce sync.Once
	agent     *agentEnv
	agentErr  error
)

func startAgent(t *testing.T) *agentEnv {
	t.Helper()
	agentOnce.Do(func() { agent, agentErr = newAgentEnv(t) })
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agent
}

func newAgentEnv(t *testing.T) (*agentEnv, error) {
	root, err := kubetest.RepoRoot()
	if err != nil {
		return nil, err
	}
	if r := converge(t, "sync", filepath.Join(root, "config/crd"), "--app", "converge-crds", "-n", "default", "--wait"); r.code != 0 {
		return nil, fmt.Errorf("installing CRDs: %s", r.output())
	}
	// Bitnami's SealedSecret CRD, from the sealed-secrets module itself,
	// served before the agent starts (it looks once).
	bitnami, err := bitnamiCRDDir()
	if err != nil {
		return nil, err
	}
	if r := converge(t, "sync", bitnami, "--app", "bitnami-crds", "-n", "default", "--wait"); r.code != 0 {
		return nil, fmt.Errorf("installing Bitnami's SealedSecret CRD: %s", r.output())
	}
	env, err := kubetest.LocalCluster(v1alpha1.AddToScheme)
	if err != nil {
		return nil, err
	}
	// The agent keeps its sealing keys in its own namespace.
	sys := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cli.DefaultSystemNamespace}}
	if err := env.Client.Create(context.Background(), sys); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	gitRoot, err := os.MkdirTemp("", "converge-e2e-git-")
	if err != nil {
		return nil, err
	}
	git, err := gitserver.New(gitRoot)
	if err != nil {
		return nil, err
	}
	if err := git.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	ls, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sealingAddr := ls.Addr().String()
	ls.Close()
	lu, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	uiAddr := lu.Addr().String()
	lu.Close()
	kubeconfig, _ := kubetest.LocalKubeconfig()
	secretFile := filepath.Join(gitRoot, "webhook-secret")
	if err := os.WriteFile(secretFile, []byte(webhookSecret), 0o600); err != nil {
		return nil, err
	}
	logs, err := os.Create(filepath.Join(os.TempDir(), "converge-e2e-agent.log"))
	if err != nil {
		return nil, err
	}
	args := []string{"agent", "--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--webhook-bind-address", addr, "--sealing-bind-address", sealingAddr, "--ui-bind-address", uiAddr, "--webhook-secret-file", secretFile, "--cache-dir", filepath.Join(gitRoot, "cache"), "--verbose",
		// A stalling server fails within seconds (TestFaults_*).
		"--git-timeout", "5s",
		// Applications labelled for the multi-tenant agent of the
		// tenancy tests are that agent's alone.
		"--watch-label-selector", "!" + strictAgentLabel}
	// Single sign-on through the issuer the local cluster trusts, served
	// by TestUI_SingleSignOn* (a cluster from before has none: that test
	// says so).
	if oidc, err := kubetest.LocalOIDC(); err == nil {
		oidcSecretFile := filepath.Join(gitRoot, "oidc-secret")
		if err := os.WriteFile(oidcSecretFile, []byte(oidcClientSecret), 0o600); err != nil {
			return nil, err
		}
		args = append(args, "--ui-oidc-issuer", oidc.Issuer, "--ui-oidc-client-id", oidc.ClientID, "--ui-oidc-client-secret-file", oidcSecretFile,
			"--ui-oidc-ca-file", oidc.CAFile, "--ui-oidc-redirect-url", "http://"+uiAddr+"/auth/callback", "--ui-oidc-name", "the test provider")
	}
	go func() {
		code := cli.Execute(context.Background(), cli.Streams{In: strings.NewReader(""), Out: io.Discard, ErrOut: logs}, args)
		fmt.Fprintf(logs, "agent exited with %d\n", code)
	}()
	if err := kubetest.WaitFor(context.Background(), 30*time.Second, func(ctx context.Context) (bool, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false, err
		}
		c.Close()
		return true, nil
	}); err != nil {
		return nil, fmt.Errorf("agent webhook not listening (logs: %s): %w", logs.Name(), err)
	}
	return &agentEnv{git: git, client: env.Client, webhook: "http://" + addr + "/hooks/git", sealing: "http://" + sealingAddr,
		ui: "http://" + uiAddr, logs: logs.Name()}, nil
}

const agentCM = `apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: %s
`

// newApp creates a repository with one ConfigMap and an Application for it.
func (a *agentEnv) newApp(t *testing.T, ns, name string, policy v1alpha1.SyncPolicy) (*gitserver.Repo, string) {
	t.Helper()
	repo, err := a.git.NewRepo(ns + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "first")}); err != nil {
		t.Fatal(err)
	}
	sha, err := repo.Commit("main", "first")
	if err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
			SyncPolicy: policy,
		},
	}
	if err := a.client.Create(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.client.Delete(context.Background(), app) })
	return repo, sha
}

func (a *agentEnv) waitApp(t *testing.T, ns, name string, timeout time.Duration, what string, ok func(*v1alpha1.Application) bool) *v1alpha1.Application {
	t.Helper()
	return waitAppIn(t, a.client, ns, name, timeout, what, ok)
}

// pushRequest is a signed GitHub push delivery for repo and ref.
func (a *agentEnv) pushRequest(repo *gitserver.Repo, ref string) *http.Request {
	body := fmt.Sprintf(`{"ref":%q,"repository":{"clone_url":%q}}`, ref, a.git.URL(repo.Name))
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	mac.Write([]byte(body))
	req, _ := http.NewRequest(http.MethodPost, a.webhook, bytes.NewBufferString(body))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	return req
}

func (a *agentEnv) push(t *testing.T, repo *gitserver.Repo, ref string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(a.pushRequest(repo, ref))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook answered %s: %s", resp.Status, out)
	}
}

func automated(prune, selfHeal bool) v1alpha1.SyncPolicy {
	return v1alpha1.SyncPolicy{
		Automated: &v1alpha1.AutomatedSync{Prune: prune, SelfHeal: selfHeal},
		Interval:  &metav1.Duration{Duration: time.Hour},
	}
}

func synced(rev string) func(*v1alpha1.Application) bool {
	return func(a *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(a.Status.Conditions, v1alpha1.ConditionReady)
		return a.Status.Sync.Status == v1alpha1.SyncStatusSynced && a.Status.Sync.Revision == rev && ready != nil && ready.Status == metav1.ConditionTrue
	}
}

func configMapMode(t *testing.T, ns string) string {
	t.Helper()
	var cm corev1.ConfigMap
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "settings"}, &cm); err != nil {
		return "<" + err.Error() + ">"
	}
	return cm.Data["mode"]
}

func TestAgent_WebhookPushIsSyncedWithinThreeSeconds(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, first := a.newApp(t, ns, "web", automated(true, true))
	a.waitApp(t, ns, "web", 30*time.Second, "first revision synced", synced(first))

	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "second")}); err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit("main", "second")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "web", 3*time.Second, "second revision synced after the webhook", synced(second))
	t.Logf("webhook to Synced: %s", time.Since(start))
	if got := configMapMode(t, ns); got != "second" {
		t.Errorf("ConfigMap mode = %q after the push, want second", got)
	}
}

func TestAgent_SelfHealRevertsEditAndDeletionWithinASecond(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	_, first := a.newApp(t, ns, "heal", automated(true, true))
	a.waitApp(t, ns, "heal", 30*time.Second, "synced", synced(first))

	var cm corev1.ConfigMap
	key := client.ObjectKey{Namespace: ns, Name: "settings"}
	if err := cluster.Client.Get(context.Background(), key, &cm); err != nil {
		t.Fatal(err)
	}
	cm.Data["mode"] = "edited-by-hand"
	if err := cluster.Client.Update(context.Background(), &cm); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	kubetest.Eventually(t, time.Second, "the edit reverted", func(context.Context) (bool, error) {
		return configMapMode(t, ns) == "first", fmt.Errorf("mode is %q", configMapMode(t, ns))
	})
	t.Logf("edit reverted in %s", time.Since(start))

	if err := cluster.Client.Delete(context.Background(), &cm); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	kubetest.Eventually(t, time.Second, "the deleted ConfigMap recreated", func(context.Context) (bool, error) {
		return configMapMode(t, ns) == "first", fmt.Errorf("mode is %q", configMapMode(t, ns))
	})
	t.Logf("deletion reverted in %s", time.Since(start))
}

func TestAgent_WithoutSelfHealDriftIsReportedNotReverted(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	_, first := a.newApp(t, ns, "watch", automated(true, false))
	a.waitApp(t, ns, "watch", 30*time.Second, "synced", synced(first))

	var cm corev1.ConfigMap
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "settings"}, &cm); err != nil {
		t.Fatal(err)
	}
	cm.Data["mode"] = "edited-by-hand"
	if err := cluster.Client.Update(context.Background(), &cm); err != nil {
		t.Fatal(err)
	}
	app := a.waitApp(t, ns, "watch", 5*time.Second, "OutOfSync", func(a *v1alpha1.Application) bool {
		return a.Status.Sync.Status == v1alpha1.SyncStatusOutOfSync
	})
	if got := configMapMode(t, ns); got != "edited-by-hand" {
		t.Errorf("ConfigMap mode = %q; without selfHeal the live edit must stay", got)
	}
	ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != v1alpha1.ReasonOutOfSync {
		t.Errorf("Ready = %+v, want False/OutOfSync", ready)
	}
}

func TestAgent_InvalidCommitKeepsStateRetriesAndRecovers(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	policy := automated(true, true)
	policy.Retry = &v1alpha1.RetryPolicy{Backoff: &v1alpha1.Backoff{Duration: &metav1.Duration{Duration: 200 * time.Millisecond}}}
	repo, first := a.newApp(t, ns, "flaky", policy)
	a.waitApp(t, ns, "flaky", 30*time.Second, "synced", synced(first))

	if err := repo.Write(map[string]string{
		"deploy/cm.yaml":  fmt.Sprintf(agentCM, "second"),
		"deploy/bad.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\nspec:\n  replicas: -1\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: x}]}\n",
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "broken"); err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	app := a.waitApp(t, ns, "flaky", 10*time.Second, "Ready=False naming the object, retried", func(a *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(a.Status.Conditions, v1alpha1.ConditionReady)
		return ready != nil && ready.Status == metav1.ConditionFalse && strings.Contains(ready.Message, "Deployment/"+ns+"/bad") && a.Status.Attempts >= 2
	})
	if !strings.Contains(app.Status.LastError, "spec.replicas") {
		t.Errorf("lastError %q does not name the field", app.Status.LastError)
	}
	if got := configMapMode(t, ns); got != "first" {
		t.Errorf("a failed commit changed the cluster: mode = %q", got)
	}

	if err := repo.Write(map[string]string{"deploy/bad.yaml": ""}); err != nil {
		t.Fatal(err)
	}
	fixed, err := repo.Commit("main", "fixed")
	if err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "flaky", 10*time.Second, "recovered", synced(fixed))
	if got := configMapMode(t, ns); got != "second" {
		t.Errorf("mode = %q after the fix, want second", got)
	}
}

func TestAgent_GitServerDownKeepsStateAndSaysWhy(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, first := a.newApp(t, ns, "offline", automated(true, true))
	a.waitApp(t, ns, "offline", 30*time.Second, "synced", synced(first))

	// Take the git server down, then ask for a sync: the fetch must fail.
	a.git.Stop()
	t.Cleanup(func() {
		if err := a.git.Start(""); err != nil {
			t.Errorf("restarting the git server: %v", err)
		}
	})
	if r := converge(t, "sync", "offline", "-n", ns); r.code != 0 {
		t.Fatalf("sync request: %s", r.output())
	}
	got := a.waitApp(t, ns, "offline", 10*time.Second, "FetchFailed", func(a *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(a.Status.Conditions, v1alpha1.ConditionReady)
		return ready != nil && ready.Reason == v1alpha1.ReasonFetchFailed
	})
	if !strings.Contains(got.Status.LastError, a.git.URL(repo.Name)) {
		t.Errorf("lastError %q does not name the repository", got.Status.LastError)
	}
	if got.Status.Sync.Revision != first {
		t.Errorf("revision %s, want the last synced %s", got.Status.Sync.Revision, first)
	}
	if mode := configMapMode(t, ns); mode != "first" {
		t.Errorf("the last synced state did not stay: mode = %q", mode)
	}
}

func TestAgent_SyncsOverSSHWithCredentialsFromASecret(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ssh, err := a.git.StartSSH(t.TempDir())
	if errors.Is(err, gitserver.ErrNoSSHD) {
		t.Skip("openssh-server is not installed; .ci/run installs it")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ssh.Stop)
	repo, err := a.git.NewRepo(ns + "-ssh")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "over-ssh")}); err != nil {
		t.Fatal(err)
	}
	rev, err := repo.Commit("main", "over ssh")
	if err != nil {
		t.Fatal(err)
	}
	creds := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git-ssh", Namespace: ns},
		Data:       map[string][]byte{"identity": ssh.ClientKey, "known_hosts": ssh.KnownHosts},
	}
	if err := cluster.Client.Create(context.Background(), creds); err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "ssh", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source: v1alpha1.ApplicationSource{RepoURL: ssh.URL(repo.Name), Path: "deploy",
				SecretRef: &v1alpha1.LocalObjectReference{Name: "git-ssh"}},
			SyncPolicy: automated(true, true),
		},
	}
	if err := a.client.Create(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.client.Delete(context.Background(), app) })
	got := a.waitApp(t, ns, "ssh", 30*time.Second, "synced over SSH", synced(rev))
	if mode := configMapMode(t, ns); mode != "over-ssh" {
		t.Errorf("mode = %q", mode)
	}
	if strings.Contains(got.Status.LastError+fmt.Sprint(got.Status.Conditions), "PRIVATE KEY") {
		t.Error("status leaks the private key")
	}
}
