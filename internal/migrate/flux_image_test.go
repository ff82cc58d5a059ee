package migrate

import (
	"strings"
	"testing"

	autov1 "github.com/fluxcd/image-automation-controller/api/v1"
	imagev1 "github.com/fluxcd/image-reflector-controller/api/v1"
	fluxmeta "github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"converge.dev/converge/api/v1alpha1"
)

func TestTranslate_FluxImageAutomation(t *testing.T) {
	om := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: "apps"} }
	img := func(kind string) metav1.TypeMeta {
		return metav1.TypeMeta{APIVersion: imagev1.GroupVersion.String(), Kind: kind}
	}
	auto := metav1.TypeMeta{APIVersion: autov1.GroupVersion.String(), Kind: "ImageUpdateAutomation"}
	docs := []string{
		"apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: fleet, namespace: apps}\nspec:\n  url: ssh://git@git.example.com/acme/fleet\n  ref: {branch: main}\n  secretRef: {name: fleet-deploy-key}\n",
		fluxDoc(t, &imagev1.ImageRepository{TypeMeta: img("ImageRepository"), ObjectMeta: om("web"), Spec: imagev1.ImageRepositorySpec{
			Image: "ghcr.io/acme/web", Interval: metav1.Duration{Duration: 300e9}, SecretRef: &fluxmeta.LocalObjectReference{Name: "ghcr"},
			ExclusionList: []string{`^.*\.sig$`}}}),
		fluxDoc(t, &imagev1.ImageRepository{TypeMeta: img("ImageRepository"), ObjectMeta: om("ecr"), Spec: imagev1.ImageRepositorySpec{
			Image: "123.dkr.ecr.eu-west-1.amazonaws.com/web", Provider: "aws"}}),
		fluxDoc(t, &imagev1.ImagePolicy{TypeMeta: img("ImagePolicy"), ObjectMeta: om("web"), Spec: imagev1.ImagePolicySpec{
			ImageRepositoryRef: fluxmeta.NamespacedObjectReference{Name: "web"},
			Policy:             imagev1.ImagePolicyChoice{SemVer: &imagev1.SemVerPolicy{Range: ">=1.0.0 <2.0.0"}}}}),
		fluxDoc(t, &imagev1.ImagePolicy{TypeMeta: img("ImagePolicy"), ObjectMeta: om("main"), Spec: imagev1.ImagePolicySpec{
			ImageRepositoryRef: fluxmeta.NamespacedObjectReference{Name: "web"},
			FilterTags:         &imagev1.TagFilter{Pattern: `^main-[a-f0-9]+-(?P<ts>[0-9]+)`, Extract: "$ts"},
			Policy:             imagev1.ImagePolicyChoice{Numerical: &imagev1.NumericalPolicy{Order: "asc"}}}}),
		fluxDoc(t, &imagev1.ImagePolicy{TypeMeta: img("ImagePolicy"), ObjectMeta: om("far"), Spec: imagev1.ImagePolicySpec{
			ImageRepositoryRef: fluxmeta.NamespacedObjectReference{Name: "web", Namespace: "elsewhere"},
			Policy:             imagev1.ImagePolicyChoice{Alphabetical: &imagev1.AlphabeticalPolicy{}}}}),
		fluxDoc(t, &autov1.ImageUpdateAutomation{TypeMeta: auto, ObjectMeta: om("fleet"), Spec: autov1.ImageUpdateAutomationSpec{
			SourceRef: autov1.CrossNamespaceSourceReference{Kind: "GitRepository", Name: "fleet"},
			Interval:  metav1.Duration{Duration: 60e9},
			GitSpec: &autov1.GitSpec{Commit: autov1.CommitSpec{Author: autov1.CommitUser{Name: "fluxbot", Email: "flux@example.com"}, MessageTemplate: "{{range .Changed.Changes}}{{end}}"},
				Push: &autov1.PushSpec{Branch: "image-updates"}},
			Update: &autov1.UpdateStrategy{Strategy: autov1.UpdateStrategySetters, Path: "./clusters/prod"}}}),
		fluxDoc(t, &autov1.ImageUpdateAutomation{TypeMeta: auto, ObjectMeta: om("signed"), Spec: autov1.ImageUpdateAutomationSpec{
			SourceRef: autov1.CrossNamespaceSourceReference{Kind: "GitRepository", Name: "fleet"},
			GitSpec:   &autov1.GitSpec{Commit: autov1.CommitSpec{Author: autov1.CommitUser{Email: "flux@example.com"}, SigningKey: &autov1.SigningKey{SecretRef: fluxmeta.LocalObjectReference{Name: "pgp"}}}}}}),
	}
	res := Translate(objects(t, docs...), Options{})
	if len(res.ImageRepositories) != 1 || len(res.ImagePolicies) != 2 || len(res.ImageUpdateAutomations) != 1 {
		t.Fatalf("translated %d repositories, %d policies, %d automations; want 1, 2, 1 (findings %v)", len(res.ImageRepositories), len(res.ImagePolicies), len(res.ImageUpdateAutomations), res.Findings)
	}
	r := res.ImageRepositories[0]
	if r.Spec.Image != "ghcr.io/acme/web" || r.Spec.SecretRef == nil || r.Spec.SecretRef.Name != "ghcr" || r.Spec.Interval.Duration != 300e9 || len(r.Spec.ExclusionList) != 1 {
		t.Errorf("repository: %+v", r.Spec)
	}
	policies := map[string]v1alpha1.ImagePolicy{}
	for _, p := range res.ImagePolicies {
		policies[p.Name] = p
	}
	if p := policies["web"]; p.Spec.Policy.Semver == nil || p.Spec.Policy.Semver.Range != ">=1.0.0 <2.0.0" || p.Spec.ImageRepositoryRef.Name != "web" {
		t.Errorf("web policy: %+v", p.Spec)
	}
	if p := policies["main"]; p.Spec.Policy.Numerical == nil || p.Spec.FilterTags == nil || p.Spec.FilterTags.Extract != "$ts" {
		t.Errorf("main policy: %+v", p.Spec)
	}
	a := res.ImageUpdateAutomations[0]
	if a.Spec.RepoURL != "ssh://git@git.example.com/acme/fleet" || a.Spec.Branch != "main" || a.Spec.Path != "clusters/prod" || a.Spec.SecretRef == nil ||
		a.Spec.Push == nil || a.Spec.Push.Branch != "image-updates" || a.Spec.Commit.AuthorName != "fluxbot" {
		t.Errorf("automation: %+v", a.Spec)
	}
	findings := map[string]string{}
	for _, f := range res.Findings {
		findings[f.Object+" "+f.Field] = f.Message
	}
	for _, want := range []string{"ImageRepository/apps/ecr spec.provider", "ImagePolicy/apps/far spec.imageRepositoryRef.namespace",
		"ImageUpdateAutomation/apps/fleet spec.git.commit.messageTemplate", "ImageUpdateAutomation/apps/signed spec.git.commit.signingKey"} {
		if _, ok := findings[want]; !ok {
			t.Errorf("no finding for %s; findings: %v", want, res.Findings)
		}
	}
	for k, m := range findings {
		if strings.Contains(k, "signed") && !strings.Contains(m, "not translated") {
			t.Errorf("%s: %s; want it not translated", k, m)
		}
	}
}
