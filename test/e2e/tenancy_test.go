//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/cli"
	"converge.dev/converge/internal/testutil/chartrepo"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
)

// strictAgentLabel marks the Applications of the multi-tenant agent that
// TestTenancy_MultiTenantAgentRefusesAppsNoTenantGoverns starts.
const strictAgentLabel = "converge.dev/e2e-agent"

// tenantEnv is tenant A: a namespace, a ServiceAccount that may write
// ConfigMaps there and nothing else, and a Tenant bounding it to that
// namespace and to the test's Git servers.
type tenantEnv struct {
	*agentEnv
	ns, other string
}

func newTenant(t *testing.T) *tenantEnv {
	t.Helper()
	a := startAgent(t)
	ctx := context.Background()
	te := &tenantEnv{agentEnv: a, ns: kubetest.Namespace(t, cluster.Client), other: kubetest.Namespace(t, cluster.Client)}
	tenant := &v1alpha1.Tenant{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-" + te.ns},
		Spec: v1alpha1.TenantSpec{
			Namespaces:         []string{te.ns},
			ServiceAccountName: "deployer",
			SourceRepos:        []string{"127.0.0.1:*/**"},
		},
	}
	for _, obj := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: te.ns}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: te.ns},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"*"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: te.ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "deployer"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: te.ns}}},
		tenant,
	} {
		if err := a.client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = a.client.Delete(context.Background(), tenant) })
	return te
}

// app creates an Application of tenant A for files committed to a fresh
// repository on the agent's Git server.
func (te *tenantEnv) app(t *testing.T, name string, files map[string]string, edit func(*v1alpha1.Application)) {
	t.Helper()
	repo, err := te.git.NewRepo(te.ns + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(files); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", name); err != nil {
		t.Fatal(err)
	}
	te.create(t, name, te.git.URL(repo.Name), edit)
}

func (te *tenantEnv) create(t *testing.T, name, url string, edit func(*v1alpha1.Application)) {
	t.Helper()
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: te.ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: url, Path: "deploy"},
			SyncPolicy: automated(true, true),
		},
	}
	if edit != nil {
		edit(app)
	}
	if err := te.client.Create(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = te.client.Delete(context.Background(), app) })
}

// refusedWith waits until app is not Ready for reason, with a message
// holding every one of want.
func (te *tenantEnv) refusedWith(t *testing.T, name, reason string, want ...string) {
	t.Helper()
	te.waitApp(t, te.ns, name, 60*time.Second, name+": "+reason, func(app *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != reason {
			return false
		}
		for _, w := range want {
			if !strings.Contains(ready.Message, w) {
				return false
			}
		}
		return true
	})
}

// noWritesOutside fails when, since the mark, the tenant's account wrote
// anywhere but its namespace, or the agent (whatever it acted as) wrote
// into kube-system or cluster-scoped RBAC. Other agents' apps in the
// cluster (and namespaces of earlier tests being deleted) write where they
// belong and are not the tenant's doing, so they are not counted.
func noWritesOutside(t *testing.T, audit *kubetest.AuditLog, ns string) {
	t.Helper()
	tenant := "system:serviceaccount:" + ns + ":deployer"
	events, err := audit.Since(func(e kubetest.AuditEvent) bool {
		if !e.Write() || e.DryRun() || e.ObjectRef == nil || e.ResponseStatus == nil || e.ResponseStatus.Code >= 300 {
			return false
		}
		if e.Actor() == tenant {
			return e.ObjectRef.Namespace != ns
		}
		return e.UserAgent == "converge-agent" && (e.ObjectRef.Namespace == "kube-system" ||
			(e.ObjectRef.Namespace == "" && e.ObjectRef.APIGroup == "rbac.authorization.k8s.io"))
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		t.Errorf("a write outside the tenant: %s %s (as %s)", e.Verb, e.RequestURI, e.Actor())
	}
	// The check must see the tenant's own writes to mean anything.
	own, err := audit.Since(func(e kubetest.AuditEvent) bool {
		return e.Write() && !e.DryRun() && e.Actor() == tenant && e.ObjectRef != nil && e.ObjectRef.Namespace == ns
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(own) == 0 {
		t.Error("the audit log shows no write by the tenant's account at all: the check sees nothing")
	}
}

func TestTenancy_HostileTenantIsContained(t *testing.T) {
	te := newTenant(t)
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	cm := func(name, ns string) string {
		s := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n"
		if ns != "" {
			s += "  namespace: " + ns + "\n"
		}
		return s + "data: {a: b}\n"
	}

	t.Run("a manifest for kube-system", func(t *testing.T) {
		te.app(t, "kube-system", map[string]string{"deploy/cm.yaml": cm("escape", "kube-system")}, nil)
		te.refusedWith(t, "kube-system", v1alpha1.ReasonPolicyViolation, "ConfigMap/kube-system/escape", "allows namespaces "+te.ns+" only")
	})
	t.Run("a cluster-scoped kind", func(t *testing.T) {
		te.app(t, "cluster-role", map[string]string{"deploy/role.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: " + te.ns + "-admin\nrules:\n- apiGroups: ['*']\n  resources: ['*']\n  verbs: ['*']\n"}, nil)
		te.refusedWith(t, "cluster-role", v1alpha1.ReasonPolicyViolation, "ClusterRole/"+te.ns+"-admin", "allows no cluster-scoped ClusterRole")
	})
	t.Run("an account of its own choosing", func(t *testing.T) {
		te.app(t, "as-admin", map[string]string{"deploy/cm.yaml": cm("x", "")}, func(a *v1alpha1.Application) { a.Spec.ServiceAccountName = "default" })
		te.refusedWith(t, "as-admin", v1alpha1.ReasonPolicyViolation, "runs its apps as deployer only")
	})
	t.Run("an object of tenant B's app", func(t *testing.T) {
		// B is trusted (no Tenant) and owns a ConfigMap in A's namespace.
		if r := converge(t, "sync", writeTree(t, te.ns, map[string]string{"b.yaml": cm("b-owned", te.ns)}), "--app", "b", "-n", te.other); r.code != 0 {
			t.Fatalf("B's sync: %s", r.output())
		}
		te.app(t, "takeover", map[string]string{"deploy/cm.yaml": strings.Replace(cm("b-owned", ""), "a: b", "a: taken", 1)}, nil)
		te.refusedWith(t, "takeover", v1alpha1.ReasonValidationFailed, "ConfigMap/"+te.ns+"/b-owned", "belongs to app "+te.other+"/b")
		if got := get(t, "v1", "ConfigMap", te.ns, "b-owned"); got == nil || got.GetLabels()["converge.dev/app"] != "b" {
			t.Errorf("B's object changed hands: %v", got)
		}
	})
	t.Run("Kustomize remote references", func(t *testing.T) {
		var requests atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
		defer srv.Close()
		for name, k := range map[string]string{
			"kust-files": "configMapGenerator:\n- name: stolen\n  files: [" + srv.URL + "/latest/meta-data]\n",
			"kust-patch": "resources: [cm.yaml]\npatches:\n- path: " + srv.URL + "/patch.yaml\n",
			"kust-git":   "resources: ['" + strings.TrimPrefix(srv.URL, "http://") + ":org/repo']\n",
		} {
			te.app(t, name, map[string]string{"deploy/kustomization.yaml": k, "deploy/cm.yaml": cm("x", "")}, nil)
			te.refusedWith(t, name, v1alpha1.ReasonRenderFailed, "deploy/kustomization.yaml", "remote references are refused")
		}
		if n := requests.Load(); n != 0 {
			t.Errorf("the tenant's URLs were fetched %d time(s)", n)
		}
	})
	t.Run("a Helm repeat bomb; other apps keep syncing", func(t *testing.T) {
		te.app(t, "bomb", map[string]string{
			"deploy/Chart.yaml":          "apiVersion: v2\nname: bomb\nversion: 0.1.0\n",
			"deploy/templates/cm.yaml":   cm("x", "") + "  big: {{ repeat 2000000000 \"x\" }}\n",
			"deploy/templates/more.yaml": cm("y", ""),
		}, nil)
		var alias strings.Builder
		alias.WriteString("resources: [cm.yaml]\ncommonAnnotations:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
		for i := 1; i < 9; i++ {
			fmt.Fprintf(&alias, "  a%d: &a%d [*a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d]\n", i, i, i-1)
		}
		te.app(t, "alias-bomb", map[string]string{"deploy/kustomization.yaml": alias.String(), "deploy/cm.yaml": cm("x", "")}, nil)
		te.app(t, "neighbour", map[string]string{"deploy/cm.yaml": cm("neighbour", "")}, nil)
		te.refusedWith(t, "bomb", v1alpha1.ReasonRenderFailed, "limit exceeded")
		te.refusedWith(t, "alias-bomb", v1alpha1.ReasonRenderFailed, "deploy/kustomization.yaml")
		te.waitApp(t, te.ns, "neighbour", 60*time.Second, "the neighbour syncs", func(app *v1alpha1.Application) bool {
			return app.Status.Sync.Status == v1alpha1.SyncStatusSynced
		})
	})
	t.Run("a symlink-and-file tree", func(t *testing.T) {
		outside := t.TempDir()
		repo, err := te.git.NewRepo(te.ns + "-symlink")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := repo.CommitRaw("main", "write through a link", []gitserver.RawEntry{
			{Mode: "100644", Path: "deploy/cm.yaml", Content: cm("x", "")},
			{Mode: "120000", Path: "deploy/evil", Content: outside},
			{Mode: "100644", Path: "deploy/evil/pwned", Content: "pwned\n"},
		}); err != nil {
			t.Fatal(err)
		}
		te.create(t, "symlink", te.git.URL(repo.Name), nil)
		te.refusedWith(t, "symlink", v1alpha1.ReasonFetchFailed)
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Errorf("the checkout wrote outside its directory: %v", entries)
		}
	})
	t.Run("a Secret the tenant may not read", func(t *testing.T) {
		var authorized atomic.Int64
		attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "" {
				authorized.Add(1)
			}
			http.Error(w, "no", http.StatusNotFound)
		}))
		defer attacker.Close()
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "platform-git", Namespace: te.ns},
			StringData: map[string]string{"username": "platform", "password": "pl4tform-t0ken"}}
		if err := cluster.Client.Create(context.Background(), secret); err != nil {
			t.Fatal(err)
		}
		te.create(t, "steal", attacker.URL+"/x.git", func(a *v1alpha1.Application) {
			a.Spec.Source.SecretRef = &v1alpha1.LocalObjectReference{Name: "platform-git"}
			a.Spec.Source.Insecure = true
		})
		te.refusedWith(t, "steal", v1alpha1.ReasonFetchFailed, "platform-git", "forbidden", "system:serviceaccount:"+te.ns+":deployer")
		if n := authorized.Load(); n != 0 {
			t.Errorf("the attacker's server received credentials %d time(s)", n)
		}
	})
	t.Run("tenant B's private repository", func(t *testing.T) {
		private, err := gitserver.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		private.Username, private.Password = "team-b", "b-pr1vate-token"
		if err := private.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		defer private.Stop()
		repo, err := private.NewRepo("b-private")
		if err != nil {
			t.Fatal(err)
		}
		if err := repo.Write(map[string]string{"deploy/cm.yaml": cm("b-private", "")}); err != nil {
			t.Fatal(err)
		}
		rev, err := repo.Commit("main", "private")
		if err != nil {
			t.Fatal(err)
		}
		// B syncs it with its credentials, so the agent's cache holds it.
		bCreds := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: te.other},
			StringData: map[string]string{"username": "team-b", "password": "b-pr1vate-token"}}
		if err := cluster.Client.Create(context.Background(), bCreds); err != nil {
			t.Fatal(err)
		}
		bApp := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "b-private", Namespace: te.other}, Spec: v1alpha1.ApplicationSpec{
			Source: v1alpha1.ApplicationSource{RepoURL: private.URL(repo.Name), Path: "deploy", Insecure: true,
				SecretRef: &v1alpha1.LocalObjectReference{Name: "git"}},
			SyncPolicy: automated(true, true)}}
		if err := te.client.Create(context.Background(), bApp); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = te.client.Delete(context.Background(), bApp) })
		te.waitApp(t, te.other, "b-private", 30*time.Second, "B syncs its private repository", synced(rev))

		te.create(t, "b-by-branch", private.URL(repo.Name), nil)
		te.create(t, "b-by-commit", private.URL(repo.Name), func(a *v1alpha1.Application) {
			a.Spec.Source.Ref = &v1alpha1.GitRef{Commit: rev}
		})
		te.refusedWith(t, "b-by-branch", v1alpha1.ReasonFetchFailed)
		te.refusedWith(t, "b-by-commit", v1alpha1.ReasonFetchFailed)
		if got := get(t, "v1", "ConfigMap", te.ns, "b-private"); got != nil {
			t.Error("tenant A deployed B's private content")
		}
	})
	noWritesOutside(t, audit, te.ns)
}

// The multi-tenant install's agent: its narrow role (from `converge
// install --profile multi-tenant`), a real ServiceAccount token, and
// --require-tenant. An app no Tenant governs is refused; a tenant's app
// syncs, as the tenant's account, through the impersonation its namespace
// grants.
func TestTenancy_MultiTenantAgentWithItsNarrowRole(t *testing.T) {
	a := startAgent(t)
	ctx := context.Background()
	kubeconfig, impersonator := narrowAgentKubeconfig(t)
	runCtx, cancel := context.WithCancel(context.Background())
	logs, err := os.Create(filepath.Join(os.TempDir(), "converge-e2e-strict-agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		cli.Execute(runCtx, cli.Streams{In: strings.NewReader(""), Out: io.Discard, ErrOut: logs},
			[]string{"agent", "--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
				"--webhook-bind-address", "", "--sealing-bind-address", "", "--cache-dir", t.TempDir(), "--require-tenant",
				"--watch-label-selector", strictAgentLabel + "=strict"})
	}()
	t.Cleanup(func() { cancel(); <-done })

	strict := func(ns, name, mode string) {
		a.labelledApp(t, ns, name, mode, map[string]string{strictAgentLabel: "strict"})
	}

	// Taken over, the agent's identity cannot mint a token for a
	// ServiceAccount of kube-system, nor write ConfigMaps outside the
	// namespaces bound to it.
	agentCfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	agentClient, err := client.New(agentCfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mint := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "minted", Namespace: "kube-system",
		Annotations: map[string]string{corev1.ServiceAccountNameKey: "clusterrole-aggregation-controller"}}, Type: corev1.SecretTypeServiceAccountToken}
	if err := agentClient.Create(ctx, mint); !apierrors.IsForbidden(err) {
		_ = cluster.Client.Delete(ctx, mint)
		t.Errorf("the agent's identity creating a token Secret in kube-system: err = %v, want Forbidden", err)
	}
	if err := agentClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "planted", Namespace: "kube-system"}}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent's identity creating a ConfigMap in kube-system: err = %v, want Forbidden", err)
	}

	untenanted := kubetest.Namespace(t, cluster.Client)
	strict(untenanted, "untenanted", "untenanted")
	a.waitApp(t, untenanted, "untenanted", 60*time.Second, "refused: no Tenant", func(app *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		stalled := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionStalled)
		return ready != nil && ready.Reason == v1alpha1.ReasonPolicyViolation && strings.Contains(ready.Message, "no Tenant governs namespace "+untenanted) &&
			stalled != nil && stalled.Status == metav1.ConditionTrue
	})
	if got := configMapMode(t, untenanted); got != "<configmaps \"settings\" not found>" {
		t.Errorf("the refused app was applied: mode %q", got)
	}

	te := newTenant(t)
	if err := a.client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "converge-impersonator", Namespace: te.ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: impersonator},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "converge-agent", Namespace: cli.DefaultSystemNamespace}}}); err != nil {
		t.Fatal(err)
	}
	strict(te.ns, "tenanted", "tenanted")
	a.waitApp(t, te.ns, "tenanted", 60*time.Second, "the tenant's app syncs", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced
	})
	cm := get(t, "v1", "ConfigMap", te.ns, "settings")
	if cm == nil {
		t.Fatal("the tenant's ConfigMap is missing")
	}
	var managers []string
	for _, e := range cm.GetManagedFields() {
		managers = append(managers, e.Manager)
	}
	if strings.Join(managers, ",") != "converge.dev/"+te.ns+"/tenanted" {
		t.Errorf("managers = %v, want the app's own", managers)
	}
}

// labelledApp creates a repository holding agentCM in mode and an
// Application with labels for it (the label picks the agent that serves
// it); it returns the repository and the commit.
func (a *agentEnv) labelledApp(t *testing.T, ns, name, mode string, labels map[string]string) (*gitserver.Repo, string) {
	t.Helper()
	repo, err := a.git.NewRepo(ns + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, mode)}); err != nil {
		t.Fatal(err)
	}
	rev, err := repo.Commit("main", "first")
	if err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
			SyncPolicy: automated(true, true),
		},
	}
	if err := a.client.Create(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.client.Delete(context.Background(), app) })
	return repo, rev
}

// narrowAgentKubeconfig gives the agent's ServiceAccount the multi-tenant
// profile's cluster role (named for this test) and returns a kubeconfig
// with a token of that account, and the name of the impersonator role.
func narrowAgentKubeconfig(t *testing.T) (string, string) {
	t.Helper()
	ctx := context.Background()
	suffix := "-" + kubetest.Namespace(t, cluster.Client)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "converge-agent", Namespace: cli.DefaultSystemNamespace}}
	if err := cluster.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	objs, err := (&cli.InstallOptions{Namespace: cli.DefaultSystemNamespace, Profile: cli.ProfileMultiTenant}).Manifests()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		u := o.DeepCopy()
		if u.GetKind() == "Role" || u.GetKind() == "RoleBinding" {
			// The agent's own namespace: leases, sealing keys.
			u.SetName(u.GetName() + suffix)
			if u.GetKind() == "RoleBinding" {
				ref, _, _ := unstructured.NestedString(u.Object, "roleRef", "name")
				_ = unstructured.SetNestedField(u.Object, ref+suffix, "roleRef", "name")
			}
			if err := cluster.Client.Create(ctx, u); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), u) })
			continue
		}
		if u.GetKind() != "ClusterRole" {
			continue
		}
		role := u.GetName()
		u.SetName(role + suffix)
		if err := cluster.Client.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), u) })
		if role != "converge-agent" {
			continue
		}
		binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role + suffix},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role + suffix},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "converge-agent", Namespace: cli.DefaultSystemNamespace}}}
		if err := cluster.Client.Create(ctx, binding); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), binding) })
	}
	path := filepath.Join(t.TempDir(), "agent.kubeconfig")
	if _, err := kubetest.ServiceAccountKubeconfig(ctx, cluster.Config, cli.DefaultSystemNamespace, "converge-agent", path); err != nil {
		t.Fatal(err)
	}
	return path, cli.ImpersonatorRole + suffix
}

// Push mode renders through the same worker and checks as the agent:
// build, diff and sync each refuse a Kustomize remote reference and fail a
// Helm bomb at its limit, and nothing reaches the cluster or the network.
func TestPushMode_SameRenderContainmentAsTheAgent(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	defer srv.Close()
	root := writeTree(t, ns, map[string]string{
		"remote/kustomization.yaml":  "configMapGenerator:\n- name: stolen\n  envs: [" + srv.URL + "/env]\n",
		"bomb/Chart.yaml":            "apiVersion: v2\nname: bomb\nversion: 0.1.0\n",
		"bomb/templates/cm.yaml":     "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  big: {{ repeat 2000000000 \"x\" }}\n",
		"git/kustomization.yaml":     "resources: [GitHub.com/org/repo//deploy]\n",
		"nested/kustomization.yaml":  "resources: [../remote]\n",
		".git-root-marker/.keep.txt": "x",
	})
	for _, path := range []string{"remote", "git", "nested", "bomb"} {
		for _, verb := range [][]string{{"build"}, {"diff", "--app", "push-" + path, "-n", ns}, {"sync", "--app", "push-" + path, "-n", ns}} {
			args := append(append([]string{}, verb...), filepath.Join(root, path), "--root", root)
			run := converge
			if verb[0] == "build" {
				run = convergeOffline
			}
			r := run(t, args...)
			want := "remote references are refused"
			if path == "bomb" {
				want = "limit exceeded"
			}
			if r.code != 2 || !strings.Contains(r.stderr, want) {
				t.Errorf("converge %s %s: exit %d, stderr %q; want exit 2 and %q", verb[0], path, r.code, r.stderr, want)
			}
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("the server received %d request(s)", n)
	}
	if got := get(t, "v1", "ConfigMap", ns, "x"); got != nil {
		t.Error("a refused render reached the cluster")
	}
}

// A deny window holds automated syncs: the app reports OutOfSync with the
// window and applies nothing; a manual sync passes (manualSync defaults to
// true); once the window is gone the held revision syncs at once.
func TestTenancy_SyncWindowHoldsAutomatedSyncs(t *testing.T) {
	te := newTenant(t)
	ctx := context.Background()
	var tenant v1alpha1.Tenant
	if err := te.client.Get(ctx, client.ObjectKey{Name: "e2e-" + te.ns}, &tenant); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	tenant.Spec.SyncWindows = []v1alpha1.SyncWindow{{Kind: "deny", Start: now.Add(-time.Hour).Format("15:04"), End: now.Add(time.Hour).Format("15:04")}}
	if err := te.client.Update(ctx, &tenant); err != nil {
		t.Fatal(err)
	}
	repo, err := te.git.NewRepo(te.ns + "-windowed")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "held")}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "first"); err != nil {
		t.Fatal(err)
	}
	te.create(t, "windowed", te.git.URL(repo.Name), nil)
	te.waitApp(t, te.ns, "windowed", 30*time.Second, "held by the window", func(app *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		return app.Status.Sync.Status == v1alpha1.SyncStatusOutOfSync && ready != nil && strings.Contains(ready.Message, "a deny sync window is open")
	})
	if got := configMapMode(t, te.ns); !strings.Contains(got, "not found") {
		t.Fatalf("a held sync applied: mode %q", got)
	}
	if r := converge(t, "sync", "windowed", "-n", te.ns, "--wait", "--timeout", "60s"); r.code != 0 {
		t.Fatalf("a manual sync inside the window: %s", r.output())
	}
	if got := configMapMode(t, te.ns); got != "held" {
		t.Fatalf("after the manual sync: mode %q", got)
	}

	// A new commit is held too, and syncs as soon as the window goes.
	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "released")}); err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit("main", "second")
	if err != nil {
		t.Fatal(err)
	}
	te.push(t, repo, "refs/heads/main")
	te.waitApp(t, te.ns, "windowed", 30*time.Second, "the new commit held", func(app *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		return app.Status.Sync.Status == v1alpha1.SyncStatusOutOfSync && ready != nil && strings.Contains(ready.Message, second[:12])
	})
	if got := configMapMode(t, te.ns); got != "held" {
		t.Fatalf("a held commit applied: mode %q", got)
	}
	if err := te.client.Get(ctx, client.ObjectKey{Name: "e2e-" + te.ns}, &tenant); err != nil {
		t.Fatal(err)
	}
	tenant.Spec.SyncWindows = nil
	if err := te.client.Update(ctx, &tenant); err != nil {
		t.Fatal(err)
	}
	te.waitApp(t, te.ns, "windowed", 30*time.Second, "released when the window goes", synced(second))
	if got := configMapMode(t, te.ns); got != "released" {
		t.Fatalf("after the window: mode %q", got)
	}
}

// A tenant's charts and notifications reach only what its Tenant allows:
// a chart repository, the chart URL an allowed index lists, a dependency's
// repository and a notification receiver outside it are each refused with
// PolicyViolation, and none of those servers receives a single request.
func TestTenancy_ChartsAndNotificationsStayWithinTheTenant(t *testing.T) {
	te := newTenant(t)
	ctx := context.Background()
	allowed := chartrepo.NewHelmRepo()
	defer allowed.Close()
	outside := chartrepo.NewHelmRepo()
	defer outside.Close()
	outside.Add("shop", "1.0.0", shopChart("1.0.0"))
	// The allowed index lists a chart that lives on the outside server.
	allowed.AddAt("shop", "1.0.0", outside.URL+"/shop-1.0.0.tgz", shopChart("1.0.0"))
	receiver := newReceiver(t)

	var tenant v1alpha1.Tenant
	if err := te.client.Get(ctx, client.ObjectKey{Name: "e2e-" + te.ns}, &tenant); err != nil {
		t.Fatal(err)
	}
	tenant.Spec.ChartRepos = []string{strings.TrimPrefix(allowed.URL, "http://") + "/**"}
	tenant.Spec.NotifyHosts = []string{"hooks.example.com"}
	if err := te.client.Update(ctx, &tenant); err != nil {
		t.Fatal(err)
	}

	chartApp := func(name, repoURL string) {
		te.create(t, name, "", func(app *v1alpha1.Application) {
			app.Spec.Source = v1alpha1.ApplicationSource{Chart: &v1alpha1.ChartSource{RepoURL: repoURL, Name: "shop", Version: "1.0.0"}}
		})
	}
	chartApp("chart-outside", outside.URL)
	chartApp("chart-listed-outside", allowed.URL)
	te.app(t, "dependency-outside", map[string]string{
		"deploy/Chart.yaml":        fmt.Sprintf("apiVersion: v2\nname: wrapper\nversion: 0.1.0\ndependencies:\n- name: shop\n  version: 1.0.0\n  repository: %s\n", outside.URL),
		"deploy/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wrapper\n",
	}, nil)
	te.app(t, "notify-outside", map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "n")}, func(app *v1alpha1.Application) {
		app.Spec.Notify = []v1alpha1.NotifyTarget{{Type: "webhook", URL: receiver.URL + "/hook"}}
	})

	te.refusedWith(t, "chart-outside", v1alpha1.ReasonPolicyViolation, "spec.source.chart.repoURL", "allows chart repositories")
	te.refusedWith(t, "chart-listed-outside", v1alpha1.ReasonPolicyViolation, "the URL its index lists", "allows chart repositories")
	te.refusedWith(t, "dependency-outside", v1alpha1.ReasonPolicyViolation, `dependency "shop"`, "allows chart repositories")
	te.refusedWith(t, "notify-outside", v1alpha1.ReasonPolicyViolation, "spec.notify[0]", "allows notifyHosts hooks.example.com only")
	if n := outside.RequestCount(); n != 0 {
		t.Errorf("the repository outside the Tenant received %d requests", n)
	}
	if n := len(receiver.posts()); n != 0 {
		t.Errorf("the receiver outside the Tenant received %d posts", n)
	}
	if allowed.RequestCount() == 0 {
		t.Error("the allowed repository was never asked (the test proves nothing)")
	}
	if got := get(t, "v1", "ConfigMap", te.ns, "wrapper"); got != nil {
		t.Error("a chart with a refused dependency was applied")
	}
}
