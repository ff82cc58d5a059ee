//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// Handover in place: a Deployment Flux's kustomize-controller applied
// (server-side, with its labels) and a ConfigMap Argo CD's
// argocd-controller applied (client-side, with its tracking annotation and
// last-applied-configuration) are adopted by a converge Application with
// no create and no delete in the audit log, keep their UIDs, and their
// peers' fields are handed over: a field then dropped from Git is removed
// from both.
func TestCompat_HandoverFromFluxAndArgoCDInPlace(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	deploy := func(extra string) string {
		return "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {app: web" + extra + "}\nspec:\n  replicas: 1\n" +
			"  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: \"nginx:1.27\"}]}\n"
	}
	settings := func(extra string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: prod\n" + extra
	}
	// What the peers made, with their managers, labels and annotations.
	fluxDeploy := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(deploy(", tier: front")), &fluxDeploy.Object); err != nil {
		t.Fatal(err)
	}
	fluxDeploy.SetNamespace(ns)
	labels := fluxDeploy.GetLabels()
	labels["kustomize.toolkit.fluxcd.io/name"], labels["kustomize.toolkit.fluxcd.io/namespace"] = "apps", "flux-system"
	fluxDeploy.SetLabels(labels)
	if err := cluster.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(fluxDeploy), client.FieldOwner("kustomize-controller"), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
	argoCM := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(settings("  drop: two\n")), &argoCM.Object); err != nil {
		t.Fatal(err)
	}
	argoCM.SetNamespace(ns)
	last, _ := json.Marshal(argoCM.Object)
	argoCM.SetAnnotations(map[string]string{"argocd.argoproj.io/tracking-id": "shop:/ConfigMap:" + ns + "/settings", "kubectl.kubernetes.io/last-applied-configuration": string(last)})
	if err := cluster.Client.Create(ctx, argoCM, client.FieldOwner("argocd-controller")); err != nil {
		t.Fatal(err)
	}
	uids := map[string]string{}
	for name, o := range map[string]client.Object{"web": &appsv1.Deployment{}, "settings": &corev1.ConfigMap{}} {
		if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, o); err != nil {
			t.Fatal(err)
		}
		uids[name] = string(o.GetUID())
	}

	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	repo, first := a.repoWith(t, ns+"-handover", map[string]string{"deploy/web.yaml": deploy(", tier: front"), "deploy/settings.yaml": settings("  drop: two\n")}, "as the peers had it")
	a.create(t, &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"}, SyncPolicy: automated(true, true)}})
	a.waitApp(t, ns, "shop", 60*time.Second, "adopted", synced(first))
	creates, err := audit.Since(func(e kubetest.AuditEvent) bool {
		return (e.Verb == "create" || e.Verb == "delete") && e.ObjectRef != nil && e.ObjectRef.Namespace == ns &&
			(e.ObjectRef.Resource == "deployments" || e.ObjectRef.Resource == "configmaps") && (e.ObjectRef.Name == "web" || e.ObjectRef.Name == "settings")
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range creates {
		t.Errorf("the handover %sd %s/%s (by %s); it must adopt in place", e.Verb, e.ObjectRef.Resource, e.ObjectRef.Name, e.Actor())
	}

	// Drop a field from each in Git: it goes from the cluster too.
	if err := repo.Write(map[string]string{"deploy/web.yaml": deploy(""), "deploy/settings.yaml": settings("")}); err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit("main", "drop a field from each")
	if err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "shop", 60*time.Second, "the second commit synced", synced(second))
	var d appsv1.Deployment
	var cm corev1.ConfigMap
	if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &d); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "settings"}, &cm); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Labels["tier"]; ok || string(d.UID) != uids["web"] {
		t.Errorf("Deployment labels %v (same object: %v): the label Flux's manager set and Git dropped must go", d.Labels, string(d.UID) == uids["web"])
	}
	if _, ok := cm.Data["drop"]; ok || cm.Data["mode"] != "prod" || string(cm.UID) != uids["settings"] {
		t.Errorf("ConfigMap data %v (same object: %v): the key Argo CD's manager set and Git dropped must go", cm.Data, string(cm.UID) == uids["settings"])
	}
	for _, o := range []client.Object{&d, &cm} {
		for _, e := range o.GetManagedFields() {
			if e.Manager == "kustomize-controller" || e.Manager == "argocd-controller" {
				t.Errorf("%s still manages fields of %s", e.Manager, o.GetName())
			}
		}
	}
	if r := converge(t, "diff", "shop", "-n", ns); r.code != 0 || !strings.Contains(r.stderr, "0 created") {
		t.Errorf("diff after the handover: exit %d\n%s", r.code, r.output())
	}
}
