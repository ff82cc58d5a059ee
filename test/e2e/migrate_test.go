//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/chartrepo"
	"converge.dev/converge/internal/testutil/kubetest"
)

// converge migrate turns Argo CD and Flux manifests into Applications that
// sync the same objects, with the same names.
func TestMigrate_ArgoCDAndFluxManifestsBecomeApplicationsThatSyncTheSameObjects(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, _ := a.repoWith(t, ns+"-fleet", map[string]string{
		"guestbook/ui.yaml":                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: guestbook-ui\ndata:\n  tier: frontend\n",
		"clusters/prod/kustomization.yaml": "resources: [settings.yaml]\nnamePrefix: prod-\n",
		"clusters/prod/settings.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  env: prod\n",
	}, "fleet")
	charts := chartrepo.NewHelmRepo()
	defer charts.Close()
	charts.Add("podinfo", "6.1.0", chartrepo.Package("podinfo", "6.1.0", map[string]string{
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-podinfo\ndata:\n  replicas: {{ .Values.replicaCount | quote }}\n",
		"values.yaml":       "replicaCount: 1\n",
	}))
	manifests := writeTree(t, ns, map[string]string{
		"argocd/guestbook.yaml": `apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: guestbook, namespace: argocd}
spec:
  project: default
  source: {repoURL: ` + a.git.URL(repo.Name) + `, targetRevision: HEAD, path: guestbook}
  destination: {server: https://kubernetes.default.svc, namespace: {{NS}}}
  syncPolicy: {automated: {prune: true, selfHeal: true}}
`,
		"flux/fleet.yaml": `apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: fleet, namespace: {{NS}}}
spec: {url: ` + a.git.URL(repo.Name) + `, ref: {branch: main}, interval: 1m}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: prod, namespace: {{NS}}}
spec: {sourceRef: {kind: GitRepository, name: fleet}, path: ./clusters/prod, prune: true, interval: 10m, targetNamespace: {{NS}}}
`,
		"flux/podinfo.yaml": `apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: podinfo, namespace: {{NS}}}
spec: {url: ` + charts.URL + `, interval: 30m}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: podinfo, namespace: {{NS}}}
spec:
  interval: 5m
  targetNamespace: {{NS}}
  chart: {spec: {chart: podinfo, version: 6.x, sourceRef: {kind: HelmRepository, name: podinfo}}}
  values: {replicaCount: 2}
  postRenderers:
  - kustomize:
      patches:
      - target: {kind: ConfigMap}
        patch: |
          - op: add
            path: /metadata/labels
            value: {rendered: post}
`,
	})
	r := convergeOffline(t, "migrate", manifests)
	// Printed, with two things carried with a difference (HEAD, the
	// target namespace): exit 1, each named.
	if r.code != 1 || strings.Count(r.stderr, "not carried over:") != 2 {
		t.Fatalf("migrate exited %d, want 1 with two findings:\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "spec.postRenderers") {
		t.Errorf("the post-renderer is carried over, yet listed as not:\n%s", r.stderr)
	}
	var names []string
	for _, doc := range strings.Split(r.stdout, "\n---\n") {
		var app v1alpha1.Application
		if err := yaml.Unmarshal([]byte(doc), &app); err != nil {
			t.Fatalf("migrate printed something that is not an Application: %v\n%s", err, doc)
		}
		if err := a.client.Create(context.Background(), &app); err != nil {
			t.Fatalf("creating %s/%s: %v", app.Namespace, app.Name, err)
		}
		t.Cleanup(func() { _ = a.client.Delete(context.Background(), &app) })
		names = append(names, app.Name)
	}
	if strings.Join(names, ",") != "guestbook,podinfo,prod" {
		t.Fatalf("Applications %v, want guestbook, podinfo, prod", names)
	}
	for _, name := range names {
		a.waitApp(t, ns, name, 60*time.Second, name+" synced and healthy", func(app *v1alpha1.Application) bool {
			return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.Health.Status == v1alpha1.HealthHealthy
		})
	}
	// The names Argo CD and Flux would have given them.
	for name, want := range map[string]string{
		"guestbook-ui":          "frontend",
		"prod-settings":         "prod",
		ns + "-podinfo-podinfo": "2",
	} {
		d := settings(t, ns, name)
		got := ""
		for _, v := range d {
			got, _ = v.(string)
		}
		if got != want {
			t.Errorf("ConfigMap %s = %v, want a value %q", name, d, want)
		}
	}
	// Flux's post-renderer ran over the chart's objects, as it would.
	if cm := get(t, "v1", "ConfigMap", ns, ns+"-podinfo-podinfo"); cm == nil || cm.GetLabels()["rendered"] != "post" {
		t.Errorf("the HelmRelease's post-renderer did not label the chart's ConfigMap")
	}
}
