//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	suffix := ns[strings.LastIndex(ns, "-")+1:]
	repo, _ := a.repoWith(t, ns+"-argo", map[string]string{
		"apps/guestbook/cm.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: guestbook-ui\ndata:\n  tier: frontend\n",
		"apps/web/kustomization.yaml": "resources: [deploy.yaml]\n",
		"apps/web/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n" +
			"  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx:1.25}]\n",
		"apps/env/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: env-settings\ndata:\n  env: dev\n",
	}, "apps")
	url := a.git.URL(repo.Name)
	project := "team-" + suffix
	manifests := writeTree(t, ns, map[string]string{
		"argocd/project.yaml": fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata: {name: %s, namespace: argocd}
spec:
  sourceRepos: [%q]
  destinations: [{server: https://kubernetes.default.svc, namespace: %s}]
  destinationServiceAccounts: [{server: https://kubernetes.default.svc, namespace: %s, defaultServiceAccount: deployer}]
`, project, url, ns, ns),
		"argocd/apps.yaml": fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: guestbook, namespace: argocd}
spec:
  project: %[1]s
  source: {repoURL: %[2]q, targetRevision: main, path: apps/guestbook}
  destination: {server: https://kubernetes.default.svc, namespace: %[3]s}
  syncPolicy: {automated: {prune: true, selfHeal: true}}
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web, namespace: argocd}
spec:
  project: %[1]s
  source:
    repoURL: %[2]q
    targetRevision: main
    path: apps/web
    kustomize: {images: ["nginx=registry.example.com/nginx:1.27"]}
  destination: {server: https://kubernetes.default.svc, namespace: %[3]s}
  syncPolicy: {automated: {prune: true, selfHeal: true}}
  ignoreDifferences: [{group: apps, kind: Deployment, jsonPointers: [/spec/replicas]}]
`, project, url, ns),
		"argocd/envs.yaml": fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {name: envs, namespace: argocd}
spec:
  generators: [{list: {elements: [{env: dev}]}}]
  template:
    metadata: {name: "envs-{{env}}"}
    spec:
      project: %s
      source: {repoURL: %q, targetRevision: main, path: apps/env}
      destination: {server: https://kubernetes.default.svc, namespace: %s}
      syncPolicy: {automated: {prune: true, selfHeal: true}}
`, project, url, ns),
	})
	r := convergeOffline(t, "migrate", manifests)
	if r.code != 0 {
		t.Fatalf("migrate: exit %d\n%s", r.code, r.stderr)
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
	if kinds["Tenant"] != 1 || kinds["Application"] != 2 || kinds["ApplicationSet"] != 1 {
		t.Fatalf("migrated %v, want a Tenant, two Applications and an ApplicationSet", kinds)
	}
	for _, name := range []string{"guestbook", "web", "envs-dev"} {
		a.waitApp(t, ns, name, 60*time.Second, name+" synced under the Tenant", func(app *v1alpha1.Application) bool {
			return app.Status.Sync.Status == v1alpha1.SyncStatusSynced
		})
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

	// An HPA scales web: neither drift nor diff.
	if err := unstructured.SetNestedField(web.Object, int64(3), "spec", "replicas"); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Client.Update(ctx, web, client.FieldOwner("horizontal-pod-autoscaler")); err != nil {
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
