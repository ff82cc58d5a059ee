package migrate

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"converge.dev/converge/api/v1alpha1"
)

// An Argo CD ApplicationSet (git directories in a matrix with clusters,
// a list, a RollingSync strategy) becomes converge's: generators and
// strategy mean the same, the template's spec is an Application spec with
// the placeholders kept ({{metadata.labels.x}} spelt {{labels.x}}), and a
// Go-template set or an unsupported generator is named.
func TestTranslate_ArgoCDApplicationSets(t *testing.T) {
	res := Translate(objects(t, `
apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {name: services, namespace: argocd}
spec:
  generators:
  - matrix:
      generators:
      - clusters: {selector: {matchLabels: {env: prod}}}
      - git:
          repoURL: https://git.example.com/org/fleet.git
          revision: main
          directories: [{path: "apps/*"}, {path: apps/legacy, exclude: true}]
  - list: {elements: [{name: billing, team: payments}]}
  syncPolicy: {applicationsSync: create-update}
  strategy:
    type: RollingSync
    rollingSync:
      steps:
      - matchExpressions: [{key: env, operator: In, values: [staging]}]
      - matchExpressions: [{key: env, operator: In, values: [prod]}]
        maxUpdate: 25%
  template:
    metadata:
      name: "{{path.basename}}-{{name}}"
      labels: {env: "{{metadata.labels.env}}"}
    spec:
      project: default
      source: {repoURL: https://git.example.com/org/fleet.git, targetRevision: main, path: "{{path}}"}
      destination: {server: "{{server}}", namespace: "{{path.basename}}"}
      syncPolicy: {automated: {prune: true, selfHeal: true}, syncOptions: [CreateNamespace=true]}
`, `
apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {name: templated, namespace: argocd}
spec:
  goTemplate: true
  generators: [{list: {elements: []}}]
  template: {metadata: {name: x}, spec: {}}
`, `
apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {name: prs, namespace: argocd}
spec:
  generators: [{pullRequest: {github: {owner: org, repo: web}}}]
  template: {metadata: {name: x}, spec: {}}
`), Options{})
	if len(res.ApplicationSets) != 1 {
		t.Fatalf("%d ApplicationSets, want 1 (services)", len(res.ApplicationSets))
	}
	set := res.ApplicationSets[0]
	if set.Name != "services" || set.Namespace != "argocd" || set.Spec.Policy != "create-update" || len(set.Spec.Generators) != 2 {
		t.Fatalf("set = %s/%s policy %q, %d generators", set.Namespace, set.Name, set.Spec.Policy, len(set.Spec.Generators))
	}
	m := set.Spec.Generators[0].Matrix
	if m == nil || len(m.Generators) != 2 || m.Generators[0].Clusters.Selector.MatchLabels["env"] != "prod" ||
		m.Generators[1].Git.Ref.Branch != "main" || len(m.Generators[1].Git.Directories) != 2 || !m.Generators[1].Git.Directories[1].Exclude {
		t.Errorf("matrix = %+v", m)
	}
	if l := set.Spec.Generators[1].List; l == nil || l.Elements[0]["team"] != "payments" {
		t.Errorf("list = %+v", l)
	}
	if st := set.Spec.Strategy; st == nil || len(st.Steps) != 2 || st.Steps[1].Selector.MatchExpressions[0].Values[0] != "prod" {
		t.Errorf("strategy = %+v", st)
	}
	if set.Spec.Template.Metadata.Name != "{{path.basename}}-{{name}}" || set.Spec.Template.Metadata.Labels["env"] != "{{labels.env}}" {
		t.Errorf("template metadata = %+v", set.Spec.Template.Metadata)
	}
	var spec v1alpha1.ApplicationSpec
	dec := json.NewDecoder(bytes.NewReader(set.Spec.Template.Spec.Raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		t.Fatalf("template spec is not an Application spec: %v", err)
	}
	if spec.Source.Path != "{{path}}" || spec.Destination.Cluster != "{{name}}" || spec.Destination.Namespace != "{{path.basename}}" ||
		!spec.SyncPolicy.CreateNamespace || spec.SyncPolicy.Automated == nil {
		t.Errorf("template spec = %+v", spec)
	}
	f := findings(res)
	for _, w := range []string{"ApplicationSet/argocd/templated: spec.goTemplate", "ApplicationSet/argocd/prs: spec.generators[0].pullRequest", "maxUpdate"} {
		if !strings.Contains(f, w) {
			t.Errorf("findings lack %q:\n%s", w, f)
		}
	}
}
