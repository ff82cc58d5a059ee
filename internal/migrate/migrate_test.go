package migrate

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/render"
)

func objects(t *testing.T, docs ...string) []render.Object {
	t.Helper()
	var out []render.Object
	for _, d := range docs {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(d), &u.Object); err != nil {
			t.Fatal(err)
		}
		out = append(out, render.Object{Unstructured: u})
	}
	return out
}

func find(t *testing.T, res *Result, name string) v1alpha1.Application {
	t.Helper()
	for _, a := range res.Applications {
		if a.Name == name {
			return a
		}
	}
	t.Fatalf("no Application %s among %d", name, len(res.Applications))
	return v1alpha1.Application{}
}

func values(t *testing.T, a v1alpha1.Application) map[string]any {
	t.Helper()
	var v map[string]any
	if a.Spec.Source.Helm == nil || a.Spec.Source.Helm.Values == nil {
		return nil
	}
	if err := json.Unmarshal(a.Spec.Source.Helm.Values.Raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func findings(res *Result) string {
	var s []string
	for _, f := range res.Findings {
		s = append(s, f.String())
	}
	return strings.Join(s, "\n")
}

func TestTranslate_ArgoCDApplications(t *testing.T) {
	res := Translate(objects(t, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: guestbook, namespace: argocd}
spec:
  project: default
  source:
    repoURL: https://git.example.com/org/apps.git
    targetRevision: release-1
    path: ./guestbook
    helm:
      releaseName: gb
      valueFiles: [values-prod.yaml]
      values: |
        replicas: 2
      parameters:
      - {name: image.tag, value: "1.4"}
      - {name: build, value: "0012", forceString: true}
  destination: {server: https://kubernetes.default.svc, namespace: guestbook}
  ignoreDifferences:
  - {group: apps, kind: Deployment, jsonPointers: [/spec/replicas]}
  - {group: admissionregistration.k8s.io, kind: MutatingWebhookConfiguration, jqPathExpressions: [".webhooks[]?.clientConfig.caBundle"]}
  - {kind: ConfigMap, managedFieldsManagers: [kube-controller-manager]}
  syncPolicy:
    automated: {prune: true, selfHeal: true}
    syncOptions: [CreateNamespace=true, ServerSideApply=true, PrunePropagationPolicy=orphan]
    retry: {limit: 5, backoff: {duration: 10s, factor: 3, maxDuration: 2m}}
`, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: ingress, namespace: argocd}
spec:
  project: platform
  sources:
  - repoURL: registry.example.com/charts
    chart: ingress-nginx
    targetRevision: 4.11.x
    helm:
      valueFiles: [$values/env/prod/ingress.yaml, $values/env/prod/common.yaml]
  - repoURL: https://git.example.com/org/values.git
    targetRevision: main
    ref: values
  destination: {name: in-cluster, namespace: ingress}
`, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: tools, namespace: argocd}
spec:
  source: {repoURL: https://git.example.com/org/tools.git, path: tools, plugin: {name: kustomized-helm}}
  destination: {name: in-cluster, namespace: tools}
`, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: prod-web, namespace: argocd}
spec:
  source: {repoURL: https://git.example.com/org/web.git, path: web}
  destination: {server: https://other.example.com:6443, namespace: web}
`, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: staging-web, namespace: argocd}
spec:
  source: {repoURL: https://git.example.com/org/web.git, path: web}
  destination: {name: staging, namespace: web}
`), Options{Clusters: map[string]string{"staging": "staging-b"}})
	gb := find(t, res, "guestbook")
	if gb.Namespace != "guestbook" || gb.Spec.Destination.Namespace != "guestbook" || gb.Spec.Source.Path != "guestbook" ||
		gb.Spec.Source.Ref == nil || gb.Spec.Source.Ref.Branch != "release-1" {
		t.Errorf("guestbook: %+v", gb.Spec)
	}
	if ig := gb.Spec.IgnoreDifferences; len(ig) != 3 || ig[0].JSONPointers[0] != "/spec/replicas" || ig[1].JQPathExpressions[0] != ".webhooks[]?.clientConfig.caBundle" ||
		ig[2].Kind != "ConfigMap" || len(ig[2].ManagedFieldsManagers) != 1 || ig[2].ManagedFieldsManagers[0] != "kube-controller-manager" {
		t.Errorf("guestbook ignoreDifferences: %+v", ig)
	}
	if strings.Contains(findings(res), "ignoreDifferences") {
		t.Errorf("ignoreDifferences are carried over, yet named:\n%s", findings(res))
	}
	if h := gb.Spec.Source.Helm; h.ReleaseName != "gb" || len(h.ValuesFiles) != 1 {
		t.Errorf("guestbook helm: %+v", h)
	}
	if diff := cmp.Diff(map[string]any{"replicas": float64(2), "image": map[string]any{"tag": "1.4"}, "build": "0012"}, values(t, gb)); diff != "" {
		t.Errorf("guestbook values (-want +got):\n%s", diff)
	}
	if sp := gb.Spec.SyncPolicy; sp.Automated == nil || !sp.Automated.Prune || !sp.Automated.SelfHeal || !sp.CreateNamespace ||
		sp.Retry == nil || sp.Retry.Limit != 5 || *sp.Retry.Backoff.Factor != 3 {
		t.Errorf("guestbook syncPolicy: %+v", sp)
	}
	ing := find(t, res, "ingress")
	if c := ing.Spec.Source.Chart; c == nil || c.RepoURL != "oci://registry.example.com/charts" || c.Name != "ingress-nginx" || c.Version != "4.11.x" {
		t.Errorf("ingress chart: %+v", ing.Spec.Source.Chart)
	}
	if ing.Spec.Source.RepoURL != "https://git.example.com/org/values.git" || ing.Spec.Source.Path != "env/prod" ||
		cmp.Diff([]string{"ingress.yaml", "common.yaml"}, ing.Spec.Source.Helm.ValuesFiles) != "" {
		t.Errorf("ingress values from Git: %+v %+v", ing.Spec.Source, ing.Spec.Source.Helm)
	}
	// Another cluster: mapped, or not translated (never retargeted here).
	if sw := find(t, res, "staging-web"); sw.Spec.Destination.Cluster != "staging-b" || sw.Spec.Destination.Namespace != "web" {
		t.Errorf("staging-web destination: %+v", sw.Spec.Destination)
	}
	if len(res.Applications) != 3 {
		t.Errorf("%d Applications, want 3 (the plugin app and the unmapped cluster's are not translated)", len(res.Applications))
	}
	f := findings(res)
	for _, want := range []string{"Application/argocd/tools: spec.source.plugin", "Application/argocd/prod-web: spec.destination: another cluster (https://other.example.com:6443): not translated", "--cluster https://other.example.com:6443=NAME", "PrunePropagationPolicy=orphan", "AppProject \"platform\""} {
		if !strings.Contains(f, want) {
			t.Errorf("findings lack %q:\n%s", want, f)
		}
	}
}

func TestTranslate_FluxKustomizationsAndHelmReleases(t *testing.T) {
	res := Translate(objects(t, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: fleet, namespace: flux-system}
spec:
  url: ssh://git@git.example.com/org/fleet.git
  ref: {branch: main}
  interval: 1m
  secretRef: {name: fleet-ssh}
`, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  sourceRef: {kind: GitRepository, name: fleet}
  path: ./clusters/prod/apps
  prune: true
  interval: 10m
  targetNamespace: apps
  postBuild: {substitute: {cluster: prod}}
  dependsOn: [{name: infra}]
  decryption: {provider: sops, secretRef: {name: sops-age}}
  retryInterval: 2m
  namePrefix: prod-
  components: [../components/ha]
  images: [{name: podinfo, newTag: 6.7.1}, {name: redis, newName: mirror.example.com/redis, digest: "sha256:0123"}]
  patches: [{target: {kind: Deployment, labelSelector: "tier=web"}, patch: "- op: replace\n  path: /spec/replicas\n  value: 3\n"}]
  commonMetadata: {labels: {app.kubernetes.io/part-of: shop}, annotations: {team: web}}
`, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: podinfo, namespace: flux-system}
spec: {url: https://charts.example.com/podinfo, interval: 30m}
`, `
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: podinfo, namespace: flux-system}
spec:
  interval: 5m
  targetNamespace: web
  install: {createNamespace: true}
  chart:
    spec: {chart: podinfo, version: ">=6.0.0 <7", sourceRef: {kind: HelmRepository, name: podinfo}}
  values: {replicaCount: 2}
  valuesFrom: [{kind: ConfigMap, name: podinfo-values}, {kind: Secret, name: podinfo-secret, valuesKey: extra.yaml, optional: true}, {kind: Secret, name: token, targetPath: auth.token}]
  postRenderers: [{kustomize: {patches: [{target: {kind: Deployment}, patch: "- op: add\n  path: /metadata/labels/x\n  value: y\n"}], images: [{name: podinfo, newName: ghcr.io/stefanprodan/podinfo, newTag: 6.7.0}], patchesStrategicMerge: []}}]
`, `
apiVersion: source.toolkit.fluxcd.io/v1beta2
kind: OCIRepository
metadata: {name: redis, namespace: data}
spec: {url: oci://registry.example.com/charts/redis, ref: {semver: 19.x}}
`, `
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: cache, namespace: data}
spec:
  chartRef: {kind: OCIRepository, name: redis}
`, `
apiVersion: source.toolkit.fluxcd.io/v1beta2
kind: OCIRepository
metadata: {name: manifests, namespace: flux-system}
spec: {url: oci://ghcr.io/org/manifests, ref: {semver: ">=1.0.0"}, interval: 5m, secretRef: {name: ghcr}}
`, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: from-oci, namespace: flux-system}
spec: {sourceRef: {kind: OCIRepository, name: manifests}, path: ./deploy, prune: true, interval: 1m}
`, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: orphan, namespace: flux-system}
spec: {sourceRef: {kind: GitRepository, name: missing}, path: ./x, prune: true, interval: 1m}
`), Options{})
	apps := find(t, res, "apps")
	if apps.Namespace != "flux-system" || apps.Spec.Source.RepoURL != "ssh://git@git.example.com/org/fleet.git" || apps.Spec.Source.Path != "clusters/prod/apps" ||
		apps.Spec.Source.SecretRef == nil || apps.Spec.Source.SecretRef.Name != "fleet-ssh" || apps.Spec.Destination.Namespace != "apps" ||
		apps.Spec.SyncPolicy.Automated == nil || !apps.Spec.SyncPolicy.Automated.Prune || apps.Spec.SyncPolicy.Interval.Duration.String() != "1m0s" {
		t.Errorf("apps: %+v", apps.Spec)
	}
	pod := find(t, res, "podinfo")
	if c := pod.Spec.Source.Chart; c == nil || c.RepoURL != "https://charts.example.com/podinfo" || c.Version != ">=6.0.0 <7" || pod.Spec.Source.RepoURL != "" {
		t.Errorf("podinfo chart: %+v", pod.Spec.Source)
	}
	if pod.Spec.Source.Helm.ReleaseName != "web-podinfo" || pod.Spec.Destination.Namespace != "web" || !pod.Spec.SyncPolicy.CreateNamespace {
		t.Errorf("podinfo: release %q (Flux names it web-podinfo), destination %q", pod.Spec.Source.Helm.ReleaseName, pod.Spec.Destination.Namespace)
	}
	if diff := cmp.Diff(map[string]any{"replicaCount": float64(2)}, values(t, pod)); diff != "" {
		t.Errorf("podinfo values (-want +got):\n%s", diff)
	}
	cache := find(t, res, "cache")
	if c := cache.Spec.Source.Chart; c == nil || c.RepoURL != "oci://registry.example.com/charts" || c.Name != "redis" || c.Version != "19.x" {
		t.Errorf("cache chart: %+v", cache.Spec.Source.Chart)
	}
	if o := find(t, res, "from-oci").Spec.Source.OCI; o == nil || o.URL != "oci://ghcr.io/org/manifests" || o.Semver != ">=1.0.0" || o.SecretRef.Name != "ghcr" {
		t.Errorf("from-oci source = %+v", o)
	}
	if len(res.Applications) != 4 {
		t.Errorf("%d Applications, want 4", len(res.Applications))
	}
	if apps := find(t, res, "apps"); len(apps.Spec.DependsOn) != 1 || apps.Spec.DependsOn[0] != (v1alpha1.ApplicationReference{Name: "infra"}) {
		t.Errorf("apps dependsOn = %+v, want infra (the Kustomization it depends on, migrated)", apps.Spec.DependsOn)
	}
	f := findings(res)
	if strings.Contains(f, "spec.dependsOn") {
		t.Errorf("dependsOn is carried over, yet named as not:\n%s", f)
	}
	if pb := find(t, res, "apps").Spec.Source.PostBuild; pb == nil || pb.Substitute["cluster"] != "prod" {
		t.Errorf("apps postBuild = %+v, want substitute cluster=prod", pb)
	}
	if d := find(t, res, "apps").Spec.Decryption; d == nil || d.Provider != "sops" || d.SecretRef.Name != "sops-age" {
		t.Errorf("apps decryption = %+v, want sops with Secret sops-age", d)
	}
	wantOver := &v1alpha1.KustomizeOverrides{
		NamePrefix: "prod-",
		Components: []string{"../components/ha"},
		Images:     []string{"podinfo:6.7.1", "redis=mirror.example.com/redis@sha256:0123"},
		Patches: []v1alpha1.KustomizePatch{{Patch: "- op: replace\n  path: /spec/replicas\n  value: 3\n",
			Target: &v1alpha1.KustomizeTarget{Kind: "Deployment", LabelSelector: "tier=web"}}},
		CommonMetadata: &v1alpha1.CommonMetadata{Labels: map[string]string{"app.kubernetes.io/part-of": "shop"}, Annotations: map[string]string{"team": "web"}},
	}
	if diff := cmp.Diff(wantOver, find(t, res, "apps").Spec.Source.Kustomize); diff != "" {
		t.Errorf("apps overrides (-want +got):\n%s", diff)
	}
	if r := find(t, res, "apps").Spec.SyncPolicy.Retry; r == nil || r.Backoff.Duration.Duration != 2*time.Minute || *r.Backoff.Factor != 1 || r.Backoff.MaxDuration.Duration != 2*time.Minute {
		t.Errorf("apps retry = %+v, want every 2m (Flux's retryInterval)", r)
	}
	for _, f := range []string{"patches", "images", "components", "namePrefix", "commonMetadata"} {
		if strings.Contains(findings(res), "Kustomization/flux-system/apps: spec."+f) {
			t.Errorf("spec.%s is carried over, yet named", f)
		}
	}
	if strings.Contains(f, "decryption") {
		t.Errorf("decryption is carried over, yet named as not:\n%s", f)
	}
	wantFrom := []v1alpha1.ValuesReference{{Kind: "ConfigMap", Name: "podinfo-values"}, {Kind: "Secret", Name: "podinfo-secret", Key: "extra.yaml", Optional: true}}
	if diff := cmp.Diff(wantFrom, pod.Spec.Source.Helm.ValuesFrom); diff != "" {
		t.Errorf("podinfo valuesFrom (-want +got):\n%s", diff)
	}
	if pr := pod.Spec.Source.Helm.PostRenderers; len(pr) != 1 || pr[0].Kustomize.Images[0] != "podinfo=ghcr.io/stefanprodan/podinfo:6.7.0" || pr[0].Kustomize.Patches[0].Target.Kind != "Deployment" {
		t.Errorf("podinfo postRenderers = %+v", pr)
	}
	for _, want := range []string{"spec.valuesFrom[2].targetPath", "spec.postRenderers[0].kustomize.patchesStrategicMerge", "Kustomization/flux-system/orphan: spec.sourceRef"} {
		if !strings.Contains(f, want) {
			t.Errorf("findings lack %q:\n%s", want, f)
		}
	}
}

// Flux 2.7's ArtifactGenerator: an ExternalArtifact that is one subtree of
// one Git source becomes that directory of that source, for a
// Kustomization (its path within the artifact followed) and a HelmRelease's
// chartRef; an artifact composed of several rules, a single file, a
// generator that is missing, an ExternalArtifact of another controller and
// a Bucket are named with the rule that stops them: nothing is dropped
// silently.
func TestTranslate_FluxArtifactGenerators(t *testing.T) {
	res := Translate(objects(t, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: fleet, namespace: apps}
spec: {url: https://git.example.com/org/fleet.git, ref: {branch: main}}
`, `
apiVersion: source.extensions.fluxcd.io/v1beta1
kind: ArtifactGenerator
metadata: {name: podinfo, namespace: apps}
spec:
  sources: [{alias: repo, kind: GitRepository, name: fleet}]
  artifacts:
  - name: podinfo-manifests
    originRevision: "@repo"
    copy: [{from: "@repo/apps/podinfo/**", to: "@artifact/"}]
  - name: podinfo-chart
    copy: [{from: "@repo/charts/podinfo/", to: "@artifact/"}]
  - name: nested
    copy: [{from: "@repo/deploy/**", to: "@artifact/my-app/backend/", exclude: ["*.md"]}]
  - name: composite
    copy: [{from: "@repo/a/**", to: "@artifact/a/"}, {from: "@repo/b/**", to: "@artifact/b/"}]
  - name: one-file
    copy: [{from: "@repo/envs/prod/cm.yaml", to: "@artifact/cm.yaml"}]
`, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: podinfo, namespace: apps}
spec: {sourceRef: {kind: ExternalArtifact, name: podinfo-manifests}, path: ./overlays/prod, prune: true}
`, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: backend, namespace: apps}
spec: {sourceRef: {kind: ExternalArtifact, name: nested}, path: ./}
`, `
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: podinfo-release, namespace: apps}
spec:
  chartRef: {kind: ExternalArtifact, name: podinfo-chart}
  values: {replicaCount: 2}
`, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: composite, namespace: apps}
spec: {sourceRef: {kind: ExternalArtifact, name: composite}, path: ./}
`, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: one-file, namespace: apps}
spec: {sourceRef: {kind: ExternalArtifact, name: one-file}, path: ./}
`, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: orphan, namespace: apps}
spec: {sourceRef: {kind: ExternalArtifact, name: made-elsewhere}, path: ./}
`, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: ExternalArtifact
metadata: {name: made-elsewhere, namespace: apps}
`, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: Bucket
metadata: {name: configs, namespace: apps}
`, `
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {name: slack, namespace: apps}
`), Options{})
	got := map[string]string{}
	for _, a := range res.Applications {
		got[a.Name] = a.Spec.Source.RepoURL + " " + a.Spec.Source.Path
	}
	want := map[string]string{
		"podinfo":         "https://git.example.com/org/fleet.git apps/podinfo/overlays/prod",
		"backend":         "https://git.example.com/org/fleet.git deploy",
		"podinfo-release": "https://git.example.com/org/fleet.git charts/podinfo",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Applications (-want +got):\n%s", diff)
	}
	if v := values(t, find(t, res, "podinfo-release")); v["replicaCount"] != float64(2) {
		t.Errorf("podinfo-release values %v", v)
	}
	f := findings(res)
	for _, want := range []string{
		"Kustomization/apps/composite: spec.sourceRef: ExternalArtifact/apps/composite: ArtifactGenerator/apps/podinfo spec.artifacts[3]: 2 copy rules",
		"Kustomization/apps/one-file: spec.sourceRef: ExternalArtifact/apps/one-file: ArtifactGenerator/apps/podinfo spec.artifacts[4]: copy from \"@repo/envs/prod/cm.yaml\"",
		"Kustomization/apps/orphan: spec.sourceRef: ExternalArtifact/apps/made-elsewhere: no ArtifactGenerator among the manifests makes it",
		"ExternalArtifact/apps/made-elsewhere: kind", "Bucket/apps/configs: kind",
		"Alert/apps/slack: spec.eventSources: no Kustomization or HelmRelease of the namespace is carried",
	} {
		if !strings.Contains(f, want) {
			t.Errorf("findings lack %q:\n%s", want, f)
		}
	}
	if strings.Contains(f, "ArtifactGenerator/apps/podinfo: kind") || strings.Contains(f, "Kustomization/apps/podinfo:") {
		t.Errorf("a translated generator or Kustomization is named:\n%s", f)
	}
}

// An app of apps: the Application that deploys a directory of Argo CD
// Applications (here a chart's templates) is named and left out, its
// children translated in its place; an app whose path only resembles it
// is translated.
func TestTranslate_AppOfAppsParentIsNotTranslated(t *testing.T) {
	objs := objects(t, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: root, namespace: argocd}
spec:
  source: {repoURL: https://git.example.com/org/gitops.git, path: argocd/root, targetRevision: main}
  destination: {server: https://kubernetes.default.svc, namespace: argocd}
`, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: child, namespace: argocd}
spec:
  source: {repoURL: https://git.example.com/org/gitops.git, path: apps/child, targetRevision: main}
  destination: {server: https://kubernetes.default.svc, namespace: shop}
`, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: lookalike, namespace: argocd}
spec:
  source: {repoURL: https://git.example.com/org/gitops.git, path: apps/root, targetRevision: main}
  destination: {server: https://kubernetes.default.svc, namespace: shop}
`)
	objs[0].Source = "argocd/root.yaml#1"
	objs[1].Source = "argocd/root/templates/apps.yaml#1"
	objs[2].Source = "argocd/root/templates/apps.yaml#2"
	res := Translate(objs, Options{})
	var names []string
	for _, a := range res.Applications {
		names = append(names, a.Name)
	}
	if strings.Join(names, ",") != "child,lookalike" {
		t.Errorf("translated %v, want the children only", names)
	}
	if f := findings(res); !strings.Contains(f, "Application/argocd/root: spec.source.path: it deploys the Argo CD Applications of argocd/root") {
		t.Errorf("the parent is not named:\n%s", f)
	}
}

// Flux multi-tenancy as `flux create tenant` writes it (a labelled
// Namespace, ServiceAccount and RoleBinding) and the tenant's
// GitRepository and Kustomization in its namespace: a Tenant governing the
// namespace, running its apps as the bound account, allowing the
// tenant's repository; a tenant without a namespace among the inputs is
// named.
func TestTranslate_FluxTenantsBecomeTenants(t *testing.T) {
	res := Translate(objects(t, `
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {toolkit.fluxcd.io/tenant: dev-team}}
`, `
apiVersion: v1
kind: ServiceAccount
metadata: {name: dev-team, namespace: apps, labels: {toolkit.fluxcd.io/tenant: dev-team}}
`, `
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: gotk-reconciler, namespace: apps, labels: {toolkit.fluxcd.io/tenant: dev-team}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "gotk:apps:reconciler"}
- {kind: ServiceAccount, name: dev-team, namespace: apps}
`, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: dev-team, namespace: apps}
spec: {url: "https://github.com/org/dev-team.git", ref: {branch: main}}
`, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: dev-team, namespace: apps}
spec: {serviceAccountName: dev-team, sourceRef: {kind: GitRepository, name: dev-team}, path: ./deploy, prune: true, targetNamespace: apps}
`, `
apiVersion: v1
kind: ServiceAccount
metadata: {name: ghost, namespace: nowhere, labels: {toolkit.fluxcd.io/tenant: ghost-team}}
`), Options{})
	if len(res.Tenants) != 1 {
		t.Fatalf("%d Tenants, want dev-team's\n%s", len(res.Tenants), findings(res))
	}
	want := v1alpha1.TenantSpec{Namespaces: []string{"apps"}, ServiceAccountName: "dev-team", SourceRepos: []string{"github.com/org/dev-team"}}
	if diff := cmp.Diff(want, res.Tenants[0].Spec); diff != "" || res.Tenants[0].Name != "dev-team" {
		t.Errorf("Tenant %s (-want +got):\n%s", res.Tenants[0].Name, diff)
	}
	if app := find(t, res, "dev-team"); app.Namespace != "apps" || app.Spec.ServiceAccountName != "" {
		t.Errorf("the tenant's app: namespace %s, serviceAccountName %q: want apps, and the Tenant's account", app.Namespace, app.Spec.ServiceAccountName)
	}
	if f := findings(res); !strings.Contains(f, "Flux tenant ghost-team has no Namespace among the inputs") {
		t.Errorf("the tenant without a namespace is not named:\n%s", f)
	}
}

// An OCIRepository's layerSelector: extract is carried over; copy (the
// layer kept whole, a file converge cannot sync from) is named and the
// Kustomization not translated.
func TestTranslate_FluxOCILayerSelector(t *testing.T) {
	oci := func(name, op string) string {
		return `
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: ` + name + `, namespace: flux-system}
spec:
  url: oci://ghcr.io/org/manifests
  ref: {tag: v1}
  layerSelector: {mediaType: "application/vnd.acme.manifests.v1.tar+gzip", operation: ` + op + `}
`
	}
	ks := func(name string) string {
		return `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: ` + name + `, namespace: flux-system}
spec: {sourceRef: {kind: OCIRepository, name: ` + name + `}, path: ./}
`
	}
	res := Translate(objects(t, oci("extracted", "extract"), ks("extracted"), oci("copied", "copy"), ks("copied")), Options{})
	if len(res.Applications) != 1 {
		t.Fatalf("%d Applications, want the extracted one\n%s", len(res.Applications), findings(res))
	}
	if ls := find(t, res, "extracted").Spec.Source.OCI.LayerSelector; ls == nil || ls.MediaType != "application/vnd.acme.manifests.v1.tar+gzip" || ls.Operation != "extract" {
		t.Errorf("layer selector %+v", ls)
	}
	if f := findings(res); !strings.Contains(f, "OCIRepository/flux-system/copied: spec.layerSelector.operation: copy is not supported") {
		t.Errorf("copy is not named:\n%s", f)
	}
}

// Flux's keyless verification is carried over against a trust Secret the
// user makes (named); notation is named and its app not translated.
func TestTranslate_FluxOCIKeylessAndNotation(t *testing.T) {
	res := Translate(objects(t, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: keyless, namespace: flux-system}
spec:
  url: oci://ghcr.io/org/manifests
  ref: {semver: ">=1.0.0"}
  verify:
    provider: cosign
    matchOIDCIdentity: [{issuer: "^https://token.actions.githubusercontent.com$", subject: "^https://github.com/org/app.*$"}]
`, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: keyless, namespace: flux-system}
spec: {sourceRef: {kind: OCIRepository, name: keyless}, path: ./}
`, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: notary, namespace: flux-system}
spec:
  url: oci://ghcr.io/org/other
  ref: {tag: v1}
  verify: {provider: notation, secretRef: {name: trust}}
`, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: notary, namespace: flux-system}
spec: {sourceRef: {kind: OCIRepository, name: notary}, path: ./}
`), Options{})
	if len(res.Applications) != 1 {
		t.Fatalf("%d Applications, want the keyless one\n%s", len(res.Applications), findings(res))
	}
	v := find(t, res, "keyless").Spec.Source.OCI.Verify
	if v == nil || v.SecretRef.Name != "sigstore-trust" || len(v.MatchOIDCIdentity) != 1 || v.MatchOIDCIdentity[0].Subject != "^https://github.com/org/app.*$" {
		t.Errorf("keyless verify = %+v", v)
	}
	f := findings(res)
	for _, want := range []string{"OCIRepository/flux-system/keyless: spec.verify.matchOIDCIdentity: carried over as keyless verification against Secret sigstore-trust",
		"OCIRepository/flux-system/notary: spec.verify.provider: notation is not supported"} {
		if !strings.Contains(f, want) {
			t.Errorf("findings lack %q:\n%s", want, f)
		}
	}
}
