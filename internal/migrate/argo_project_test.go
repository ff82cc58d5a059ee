package migrate

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"converge.dev/converge/api/v1alpha1"
)

// An Argo CD install's AppProject, cluster Secret and repository
// credentials become a Tenant, a Cluster (with its credentials) and the
// Secrets the Applications' sources name; what has no equivalent is named,
// and no credential reaches a finding.
func TestTranslate_ArgoCDProjectsClustersAndRepositoryCredentials(t *testing.T) {
	res := Translate(objects(t, `
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata: {name: team-a, namespace: argocd}
spec:
  sourceRepos: ["https://git.example.com/team-a/*", "!https://git.example.com/team-a/secret"]
  destinations:
  - {server: https://kubernetes.default.svc, namespace: team-a}
  - {server: https://kubernetes.default.svc, namespace: team-a-*}
  - {name: prod, namespace: team-a}
  clusterResourceWhitelist: [{group: "", kind: Namespace}]
  namespaceResourceBlacklist: [{group: "", kind: ResourceQuota}]
  syncWindows:
  - {kind: deny, schedule: "0 22 * * 5,6", duration: 10h, timeZone: Europe/Paris, manualSync: true}
  - {kind: allow, schedule: "*/5 * * * *", duration: 1h}
  roles: [{name: ci}]
`, `
apiVersion: v1
kind: Secret
metadata: {name: cluster-prod-1234, namespace: argocd, labels: {argocd.argoproj.io/secret-type: cluster}}
stringData:
  name: prod
  server: https://prod.example.com:6443
  config: '{"bearerToken":"tok-SECRET","tlsClientConfig":{"caData":"Y2EtZGF0YQ==","serverName":"prod"}}'
`, `
apiVersion: v1
kind: Secret
metadata: {name: eks, namespace: argocd, labels: {argocd.argoproj.io/secret-type: cluster}}
stringData:
  name: eks
  server: https://eks.example.com
  config: '{"awsAuthConfig":{"clusterName":"x"}}'
`, `
apiVersion: v1
kind: Secret
metadata: {name: team-a-creds, namespace: argocd, labels: {argocd.argoproj.io/secret-type: repo-creds}}
stringData: {url: "https://git.example.com/team-a", username: bot, password: pw-SECRET}
`, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web, namespace: argocd}
spec:
  project: team-a
  source: {repoURL: "https://git.example.com/team-a/web.git", targetRevision: main, path: deploy}
  destination: {server: https://kubernetes.default.svc, namespace: team-a}
`, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web-prod, namespace: argocd}
spec:
  project: team-a
  source: {repoURL: "https://git.example.com/team-a/web.git", targetRevision: main, path: deploy}
  destination: {name: prod, namespace: team-a-prod}
`), Options{})
	if len(res.Tenants) != 1 {
		t.Fatalf("%d Tenants, want 1", len(res.Tenants))
	}
	want := v1alpha1.TenantSpec{
		Namespaces:            []string{"team-a", "team-a-*", "team-a-prod"},
		ServiceAccountName:    "converge-deployer",
		SourceRepos:           []string{"git.example.com/team-a/*"},
		DestinationNamespaces: []string{"team-a", "team-a-*"},
		Clusters:              []string{"prod"},
		ClusterResources:      []v1alpha1.GroupKind{{Kind: "Namespace"}},
		DeniedResources:       []v1alpha1.GroupKind{{Kind: "ResourceQuota"}},
		SyncWindows:           []v1alpha1.SyncWindow{{Kind: "deny", Days: []string{"Fri", "Sat"}, Start: "22:00", End: "08:00", TimeZone: "Europe/Paris", ManualSync: ptrTo(true)}},
	}
	if diff := cmp.Diff(want, res.Tenants[0].Spec); diff != "" {
		t.Errorf("Tenant team-a (-want +got):\n%s", diff)
	}
	if len(res.Clusters) != 1 || res.Clusters[0].Name != "prod" || res.Clusters[0].Spec.Server != "https://prod.example.com:6443" ||
		string(res.Clusters[0].Spec.CAData) != "ca-data" || res.Clusters[0].Spec.TLSServerName != "prod" {
		t.Errorf("Clusters = %+v", res.Clusters)
	}
	if prod := find(t, res, "web-prod"); prod.Spec.Destination.Cluster != "prod" {
		t.Errorf("web-prod goes to cluster %q, want prod (made of its cluster Secret)", prod.Spec.Destination.Cluster)
	}
	web := find(t, res, "web")
	if web.Spec.Source.SecretRef == nil || web.Spec.Source.SecretRef.Name != "argocd-team-a-creds" {
		t.Errorf("web secretRef = %+v, want argocd-team-a-creds", web.Spec.Source.SecretRef)
	}
	secrets := map[string]string{}
	for _, s := range res.Secrets {
		secrets[s.Namespace+"/"+s.Name] = string(s.Data["token"]) + string(s.Data["password"])
	}
	if secrets["converge-system/cluster-prod"] != "tok-SECRET" || secrets["team-a/argocd-team-a-creds"] != "pw-SECRET" || secrets["team-a-prod/argocd-team-a-creds"] != "pw-SECRET" {
		t.Errorf("Secrets = %v", secrets)
	}
	f := findings(res)
	for _, w := range []string{"!https://git.example.com/team-a/secret", "spec.syncWindows[1]", "spec.roles", "create converge-deployer",
		"Secret/argocd/eks: data.config.awsAuthConfig"} {
		if !strings.Contains(f, w) {
			t.Errorf("findings lack %q:\n%s", w, f)
		}
	}
	if strings.Contains(f, "SECRET") {
		t.Errorf("a credential is in the findings:\n%s", f)
	}
}

func ptrTo[T any](v T) *T { return &v }

// An Application's Kustomize overrides are carried over; a patch file and
// the fields converge lacks are named.
func TestTranslate_ArgoCDKustomizeOverrides(t *testing.T) {
	res := Translate(objects(t, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web, namespace: argocd}
spec:
  source:
    repoURL: https://git.example.com/org/web.git
    path: overlays/prod
    kustomize:
      images: ["nginx=registry.example.com/nginx:1.27"]
      namePrefix: prod-
      commonLabels: {team: a}
      replicas: [{name: web, count: "3"}]
      patches:
      - {target: {kind: Deployment, name: web}, patch: "- op: replace\n  path: /spec/replicas\n  value: 2\n"}
      - {path: patch.yaml}
      components: [../../components/debug]
      forceCommonLabels: true
  destination: {server: https://kubernetes.default.svc, namespace: web}
`), Options{})
	k := find(t, res, "web").Spec.Source.Kustomize
	if k == nil || k.Images[0] != "nginx=registry.example.com/nginx:1.27" || k.NamePrefix != "prod-" || k.CommonLabels["team"] != "a" ||
		len(k.Replicas) != 1 || k.Replicas[0].Count != 3 || len(k.Patches) != 1 || k.Patches[0].Target.Kind != "Deployment" || k.Components[0] != "../../components/debug" {
		t.Errorf("kustomize = %+v", k)
	}
	f := findings(res)
	for _, w := range []string{"kustomize.patches[1]", "kustomize.forceCommonLabels"} {
		if !strings.Contains(f, w) {
			t.Errorf("findings lack %q:\n%s", w, f)
		}
	}
}
