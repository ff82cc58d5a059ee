//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// An Argo CD install's manifests: an AppProject, two Applications (one
// with Kustomize overrides and ignoreDifferences on replicas) and an
// ApplicationSet. `converge migrate` makes a Tenant, two Applications and
// an ApplicationSet of them; they sync under the Tenant (as its
// ServiceAccount), the image override applies, and replicas scaled by
// someone else (an HPA) are neither drift nor diff.
func TestCompat_ArgoCDProjectAppsAndSetMigrateAndSync(t *testing.T) {
	b := startClusterB(t)
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	// The remote app's namespace: no Tenant governs it (its project is
	// Argo CD's default).
	remoteNS := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	suffix := ns[strings.LastIndex(ns, "-")+1:]
	// test/e2e/compat/argocd-tree: the workload repository, and the
	// Argo CD manifests that point at it.
	repo, _ := a.repoWith(t, ns+"-argo", corpusRepo(t, "argocd-tree/repo", nil), "apps")
	url := a.git.URL(repo.Name)
	project := "team-" + suffix
	files := corpusRepo(t, "argocd-tree/argocd", map[string]string{"URL": url, "PROJECT": project, "NS": ns, "REMOTE_NS": remoteNS, "SUFFIX": suffix})
	tree := map[string]string{}
	for p, content := range files {
		tree["argocd/"+p] = content
	}
	// Another cluster, as Argo CD keeps it: its credentials are made here.
	tree["argocd/cluster-staging.yaml"] = argoClusterSecret(t, b, "staging-"+suffix)
	manifests := writeTree(t, ns, tree)
	r := convergeOffline(t, "migrate", manifests)
	if r.code != 1 || !strings.Contains(r.stderr, "Application/argocd/root: spec.source.path: it deploys the Argo CD Applications of argocd/root") {
		t.Fatalf("migrate: exit %d, want 1 with the app of apps' root named\n%s", r.code, r.stderr)
	}
	// The project's account, with the rights its apps need here.
	for _, obj := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "admin"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: ns}}},
	} {
		if err := a.client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	kinds := map[string]int{}
	for _, doc := range strings.Split(r.stdout, "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("migrate printed something that is not YAML: %v\n%s", err, doc)
		}
		kinds[u.GetKind()]++
		if err := a.client.Create(ctx, u); err != nil {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		t.Cleanup(func() { _ = a.client.Delete(context.Background(), u) })
	}
	if kinds["Tenant"] != 1 || kinds["Application"] != 4 || kinds["ApplicationSet"] != 1 || kinds["Cluster"] != 1 || kinds["Secret"] != 1 {
		t.Fatalf("migrated %v, want a Tenant, four Applications (the app of apps' child, not its root), an ApplicationSet, a Cluster and its Secret", kinds)
	}
	for _, name := range []string{"guestbook", "web", "envs-dev", "child"} {
		a.waitApp(t, ns, name, 60*time.Second, name+" synced under the Tenant", func(app *v1alpha1.Application) bool {
			return app.Status.Sync.Status == v1alpha1.SyncStatusSynced
		})
	}
	if cm := get(t, "v1", "ConfigMap", ns, "child-settings"); cm == nil {
		t.Error("the app of apps' child applied nothing")
	}
	// The cluster Secret became a Cluster, and the app aimed at it syncs
	// there.
	a.waitApp(t, remoteNS, "remote", 60*time.Second, "remote synced to the staging cluster", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Spec.Destination.Cluster == "staging-"+suffix
	})
	var remoteCM corev1.ConfigMap
	if err := b.client.Get(ctx, client.ObjectKey{Namespace: remoteNS, Name: "remote-settings"}, &remoteCM); err != nil || remoteCM.Data["where"] != "staging" {
		t.Errorf("the remote app's ConfigMap in cluster B: %v %v", err, remoteCM.Data)
	}
	if get(t, "v1", "ConfigMap", remoteNS, "remote-settings") != nil {
		t.Error("the remote app's ConfigMap was applied to the agent's own cluster")
	}
	web := get(t, "apps/v1", "Deployment", ns, "web")
	if web == nil {
		t.Fatal("Deployment web was not applied")
	}
	containers, _, _ := unstructured.NestedSlice(web.Object, "spec", "template", "spec", "containers")
	if image := containers[0].(map[string]any)["image"]; image != "registry.example.com/nginx:1.27" {
		t.Errorf("web image = %v, want the Application's override", image)
	}
	if cm := get(t, "v1", "ConfigMap", ns, "env-settings"); cm == nil {
		t.Error("the ApplicationSet's app applied nothing")
	}

	// An HPA scales web (through the scale subresource, as an HPA does:
	// no resourceVersion to race the Deployment's status writes): neither
	// drift nor diff.
	var target appsv1.Deployment
	target.Namespace, target.Name = ns, "web"
	scale := &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: 3}}
	if err := cluster.Client.SubResource("scale").Update(ctx, &target, client.WithSubResourceBody(scale), client.FieldOwner("horizontal-pod-autoscaler")); err != nil {
		t.Fatal(err)
	}
	if r := converge(t, "sync", "web", "-n", ns, "--wait", "--timeout", "60s"); r.code != 0 {
		t.Fatalf("a sync request after the scale: exit %d\n%s", r.code, r.output())
	}
	if got, _, _ := unstructured.NestedInt64(get(t, "apps/v1", "Deployment", ns, "web").Object, "spec", "replicas"); got != 3 {
		t.Errorf("replicas = %d after a sync: ignoreDifferences must leave the HPA's 3", got)
	}
	if r := converge(t, "diff", "web", "-n", ns); r.code != 0 {
		t.Errorf("diff with replicas ignored: exit %d\n%s", r.code, r.output())
	}
}

// argoClusterSecret is the Secret Argo CD keeps for cluster B (`argocd
// cluster add`): its server, CA and the client certificate of B's
// kubeconfig.
func argoClusterSecret(t *testing.T, b *clusterB, name string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(b.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	c, user := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
	conf := map[string]any{"tlsClientConfig": map[string]any{"caData": c.CertificateAuthorityData, "certData": user.ClientCertificateData, "keyData": user.ClientKeyData}}
	raw, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	secret := map[string]any{"apiVersion": "v1", "kind": "Secret",
		"metadata":   map[string]any{"name": "cluster-" + name, "namespace": "argocd", "labels": map[string]any{"argocd.argoproj.io/secret-type": "cluster"}},
		"stringData": map[string]any{"name": name, "server": c.Server, "config": string(raw)}}
	out, err := yaml.Marshal(secret)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
