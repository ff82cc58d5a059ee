//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
)

// Bootstrap onto the second local cluster (no converge there yet): the
// manifests land in Git and in the cluster, the agent (a process here,
// watching its own Deployment object) takes its own Application over, an
// upgrade is a commit, and a bad upgrade shows on the Application and is
// rolled back in Git.
func TestBootstrap_TheAgentManagesItselfFromGitUpgradesAndRollsBack(t *testing.T) {
	b := startClusterB(t)
	const ns = "converge-system"
	cleanupBootstrap(t, b, ns)
	bc := b.typedClient(t)

	git, repo := fleetRepo(t, "fleet", map[string]string{"README.md": "the fleet\n", "clusters/b/apps/README.md": "apps\n"})
	url := git.URL(repo.Name)
	bootstrap := func(image string) string {
		t.Helper()
		r := convergeWith(t, b.kubeconfig, "bootstrap", "git", "--url", url, "--path", "clusters/b", "--image", image, "--interval", "5s")
		if r.code != 0 {
			t.Fatalf("bootstrap: %s", r.output())
		}
		return strings.TrimSpace(r.stdout)
	}

	first := bootstrap("example.com/converge:v1")
	files := gitFiles(t, url, first)
	for _, f := range []string{"clusters/b/converge-system/crds.yaml", "clusters/b/converge-system/agent.yaml", "clusters/b/converge-system/application.yaml", "README.md", "clusters/b/apps/README.md"} {
		if _, ok := files[f]; !ok {
			t.Errorf("the bootstrap commit has no %s (it has %v)", f, slices.Sorted(maps.Keys(files)))
		}
	}
	if !strings.Contains(files["clusters/b/converge-system/agent.yaml"], "image: example.com/converge:v1") {
		t.Error("agent.yaml does not name the image")
	}
	if got := deploymentImage(t, b, ns); got != "example.com/converge:v1" {
		t.Fatalf("after bootstrap, the agent's Deployment runs %q", got)
	}

	// The agent, watching its own Deployment, takes over its Application.
	agentProcess(t, "bootstrap", b.kubeconfig, "--system-namespace", ns)
	waitAppIn(t, bc, ns, "converge-install", 90*time.Second, "the agent synced itself", func(app *v1alpha1.Application) bool {
		return synced(first)(app) && app.Status.Health.Status == v1alpha1.HealthHealthy
	})

	// Upgrading is a commit: bootstrap again with a newer image.
	second := bootstrap("example.com/converge:v2")
	if second == first {
		t.Fatal("the upgrade made no commit")
	}
	waitAppIn(t, bc, ns, "converge-install", 90*time.Second, "the upgrade synced", func(app *v1alpha1.Application) bool {
		return synced(second)(app) && app.Status.Health.Status == v1alpha1.HealthHealthy
	})
	if got := deploymentImage(t, b, ns); got != "example.com/converge:v2" {
		t.Fatalf("after the upgrade, the Deployment runs %q", got)
	}

	// A bad upgrade: the new agent never becomes Ready (its pods fit no
	// node; a short progress deadline stands for a crash-looping image).
	bad := editAgentDeployment(t, url, func(d map[string]any) {
		spec := d["spec"].(map[string]any)
		spec["progressDeadlineSeconds"] = int64(5)
		pod := spec["template"].(map[string]any)["spec"].(map[string]any)
		pod["nodeSelector"] = map[string]any{"converge.dev/no-such-node": "true"}
		pod["containers"].([]any)[0].(map[string]any)["image"] = "example.com/converge:v3-broken"
	})
	app := waitAppIn(t, bc, ns, "converge-install", 2*time.Minute, "the bad upgrade reported", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Revision == bad && app.Status.Health.Status == v1alpha1.HealthDegraded
	})
	if !strings.Contains(app.Status.Health.Message, "converge-agent") {
		t.Errorf("the Degraded health does not name the agent's Deployment: %q", app.Status.Health.Message)
	}
	// The old agent's pods still run: the rollout cannot finish.
	if d := deployment(t, b, ns); d.Status.AvailableReplicas < 1 {
		t.Errorf("no agent available during the bad rollout: %+v", d.Status)
	}

	// converge rollback brings the previous version back, in Git.
	if r := convergeWith(t, b.kubeconfig, "rollback", "converge-install", "-n", ns, "--timeout", "2m"); r.code != 0 {
		t.Fatalf("rollback: %s", r.output())
	}
	app = waitAppIn(t, bc, ns, "converge-install", 2*time.Minute, "rolled back and healthy", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Revision != bad && app.Status.Health.Status == v1alpha1.HealthHealthy
	})
	if got := deploymentImage(t, b, ns); got != "example.com/converge:v2" {
		t.Errorf("after the rollback, the Deployment runs %q", got)
	}
	if files := gitFiles(t, url, app.Status.Sync.Revision); !strings.Contains(files["clusters/b/converge-system/agent.yaml"], "image: example.com/converge:v2") {
		t.Errorf("the rollback commit's agent.yaml:\n%s", files["clusters/b/converge-system/agent.yaml"])
	}
}

// cleanupBootstrap removes, when the test ends, what bootstrap installs
// in B (its cluster-scoped objects included), after the agent stopped.
func cleanupBootstrap(t *testing.T, b *clusterB, ns string) {
	t.Helper()
	r := convergeOffline(t, "install", "--agent-namespace", ns)
	if r.code != 0 {
		t.Fatalf("install: %s", r.output())
	}
	var objs []*unstructured.Unstructured
	for _, doc := range strings.Split(r.stdout, "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil || len(u.Object) == 0 {
			continue
		}
		objs = append(objs, u)
	}
	remove := func() {
		ctx := context.Background()
		// Applications first, their finalizers released: no agent is
		// left to act on them.
		var apps v1alpha1.ApplicationList
		if c := b.typedClient(t); c.List(ctx, &apps, client.InNamespace(ns)) == nil {
			for i := range apps.Items {
				a := &apps.Items[i]
				_ = c.Patch(ctx, a, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
				_ = c.Delete(ctx, a)
			}
		}
		for _, u := range objs {
			if err := b.client.Delete(ctx, u); err != nil && !apierrors.IsNotFound(err) && !apimeta.IsNoMatchError(err) {
				t.Logf("cleanup: %s %s: %v", u.GetKind(), u.GetName(), err)
			}
		}
		// Gone, not going: a namespace or CRD still terminating refuses
		// what the next bootstrap creates.
		err := kubetest.WaitFor(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
			for _, u := range objs {
				if k := u.GetKind(); k != "Namespace" && k != "CustomResourceDefinition" {
					continue
				}
				live := &unstructured.Unstructured{}
				live.SetGroupVersionKind(u.GroupVersionKind())
				if err := b.client.Get(ctx, client.ObjectKeyFromObject(u), live); !apierrors.IsNotFound(err) {
					return false, fmt.Errorf("%s %s still there (%v)", u.GetKind(), u.GetName(), err)
				}
			}
			return true, nil
		})
		if err != nil {
			t.Logf("cleanup: %v", err)
		}
	}
	remove() // a run that stopped halfway
	t.Cleanup(remove)
}

// typedClient is a client of B that knows converge's kinds.
func (b *clusterB) typedClient(t *testing.T) client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", b.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitAppIn waits until the Application ns/name, read through c, is ok.
func waitAppIn(t *testing.T, c client.Client, ns, name string, timeout time.Duration, what string, ok func(*v1alpha1.Application) bool) *v1alpha1.Application {
	t.Helper()
	app := &v1alpha1.Application{}
	kubetest.Eventually(t, timeout, what, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
			return false, err
		}
		ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		return ok(app), fmt.Errorf("sync %s at %s, health %s (%s), ready %+v, lastError %q", app.Status.Sync.Status, app.Status.Sync.Revision, app.Status.Health.Status, app.Status.Health.Message, ready, app.Status.LastError)
	})
	return app
}

func deployment(t *testing.T, b *clusterB, ns string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := b.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "converge-agent"}, d); err != nil {
		t.Fatal(err)
	}
	return d
}

func deploymentImage(t *testing.T, b *clusterB, ns string) string {
	t.Helper()
	return deployment(t, b, ns).Spec.Template.Spec.Containers[0].Image
}

// gitFiles lists the files of commit in the repository at url, with
// their content.
func gitFiles(t *testing.T, url, commit string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	runGit(t, "", "clone", "-q", url, dir)
	out := runGit(t, dir, "ls-tree", "-r", "--name-only", commit)
	files := map[string]string{}
	for _, f := range strings.Fields(out) {
		files[f] = runGit(t, dir, "show", commit+":"+f)
	}
	return files
}

// editAgentDeployment commits (on main, pushed) an edit of the agent's
// Deployment in agent.yaml, and returns the commit.
func editAgentDeployment(t *testing.T, url string, edit func(map[string]any)) string {
	t.Helper()
	dir := t.TempDir()
	runGit(t, "", "clone", "-q", url, dir)
	p := filepath.Join(dir, "clusters/b/converge-system/agent.yaml")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(data), "\n---\n")
	for i, doc := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil || obj["kind"] != "Deployment" {
			continue
		}
		edit(obj)
		out, err := yaml.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		docs[i] = string(out)
	}
	if err := os.WriteFile(p, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	runGit(t, dir, "-c", "user.name=Test", "-c", "user.email=test@example.com", "commit", "-q", "-am", "agent v3")
	runGit(t, dir, "push", "-q", "origin", "HEAD:main")
	return strings.TrimSpace(runGit(t, dir, "rev-parse", "HEAD"))
}

func runGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestBootstrap_OverSSHWithAnOpenPGPSignedCommit bootstraps from a
// repository reached over SSH and signs the commit with gpg: the commit
// verifies with the signer's key, the SSH key goes to the cluster's
// Secret and never to Git, and the Application reads its source with it.
func TestBootstrap_OverSSHWithAnOpenPGPSignedCommit(t *testing.T) {
	b := startClusterB(t)
	const ns = "converge-system"
	cleanupBootstrap(t, b, ns)
	git, repo := fleetRepo(t, "fleet-ssh", map[string]string{"README.md": "the fleet\n"})
	ssh, err := git.StartSSH(t.TempDir())
	if err != nil {
		t.Fatal(err) // make test-deps installs openssh-server
	}
	t.Cleanup(ssh.Stop)
	signer, err := gitserver.NewGPGSigner(t.TempDir(), "Fleet Bootstrapper", "bootstrap@example.com")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(signer.Close)
	t.Setenv("GNUPGHOME", signer.Home())
	dir := t.TempDir()
	keyFile, knownHosts := filepath.Join(dir, "id"), filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(keyFile, ssh.ClientKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(knownHosts, ssh.KnownHosts, 0o600); err != nil {
		t.Fatal(err)
	}

	r := convergeWith(t, b.kubeconfig, "bootstrap", "git", "--url", ssh.URL(repo.Name), "--path", "clusters/b", "--image", "example.com/converge:v1",
		"--ssh-key-file", keyFile, "--known-hosts-file", knownHosts, "--signing-key", signer.Key, "--signing-format", "openpgp")
	if r.code != 0 {
		t.Fatalf("bootstrap over SSH: %s", r.output())
	}
	commit := strings.TrimSpace(r.stdout)
	verify := exec.Command("git", "-C", repo.Bare, "verify-commit", "--raw", commit)
	verify.Env = append(os.Environ(), "GNUPGHOME="+signer.Home())
	if out, err := verify.CombinedOutput(); err != nil || !strings.Contains(string(out), "GOODSIG") {
		t.Errorf("the bootstrap commit %s does not verify with the signer's key: %v\n%s", commit, err, out)
	}
	for path, content := range gitFiles(t, git.URL(repo.Name), commit) {
		if strings.Contains(content, "PRIVATE KEY") || strings.Contains(content, strings.TrimSpace(string(ssh.ClientKey))[40:80]) {
			t.Errorf("%s in Git holds the SSH key", path)
		}
	}
	bc := b.typedClient(t)
	ctx := context.Background()
	var creds corev1.Secret
	if err := bc.Get(ctx, client.ObjectKey{Namespace: ns, Name: "converge-install-git"}, &creds); err != nil {
		t.Fatalf("the credentials Secret: %v", err)
	}
	if string(creds.Data["identity"]) != string(ssh.ClientKey) || len(creds.Data["known_hosts"]) == 0 {
		t.Errorf("the Secret holds keys %v, want the SSH identity and known_hosts", slices.Sorted(maps.Keys(creds.Data)))
	}
	var app v1alpha1.Application
	if err := bc.Get(ctx, client.ObjectKey{Namespace: ns, Name: "converge-install"}, &app); err != nil {
		t.Fatal(err)
	}
	if app.Spec.Source.RepoURL != ssh.URL(repo.Name) || app.Spec.Source.SecretRef == nil || app.Spec.Source.SecretRef.Name != "converge-install-git" {
		t.Errorf("the Application's source: %+v", app.Spec.Source)
	}
}

// fleetRepo serves a repository of its own, name, holding files on main.
func fleetRepo(t *testing.T, name string, files map[string]string) (*gitserver.Server, *gitserver.Repo) {
	t.Helper()
	git, err := gitserver.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := git.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(git.Stop)
	repo, err := git.NewRepo(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(files); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "start"); err != nil {
		t.Fatal(err)
	}
	return git, repo
}
