package migrate

import (
	"strings"
	"testing"
)

func TestTranslate_ArgoImageUpdaterAnnotations(t *testing.T) {
	doc := `apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: shop
  namespace: argocd
  annotations:
    argocd-image-updater.argoproj.io/image-list: web=ghcr.io/acme/web:~1.2, worker=ghcr.io/acme/worker, build=ghcr.io/acme/build
    argocd-image-updater.argoproj.io/web.allow-tags: regexp:^1\.[0-9]+\.[0-9]+$
    argocd-image-updater.argoproj.io/web.ignore-tags: "*-debug"
    argocd-image-updater.argoproj.io/web.pull-secret: pullsecret:argocd/ghcr
    argocd-image-updater.argoproj.io/worker.update-strategy: alphabetical
    argocd-image-updater.argoproj.io/build.update-strategy: newest-build
    argocd-image-updater.argoproj.io/write-back-method: git
    argocd-image-updater.argoproj.io/git-branch: main:image-updates
spec:
  project: default
  source: {repoURL: https://git.example.com/acme/shop, targetRevision: main, path: deploy}
  destination: {server: https://kubernetes.default.svc, namespace: shop}
`
	res := Translate(objects(t, doc), Options{})
	if len(res.Applications) != 1 || len(res.ImageRepositories) != 2 || len(res.ImagePolicies) != 2 || len(res.ImageUpdateAutomations) != 1 {
		t.Fatalf("%d apps, %d repositories, %d policies, %d automations; findings %v", len(res.Applications), len(res.ImageRepositories), len(res.ImagePolicies), len(res.ImageUpdateAutomations), res.Findings)
	}
	app := res.Applications[0]
	web := res.ImagePolicies[0]
	if web.Name != "shop-web" || web.Namespace != app.Namespace || web.Spec.Policy.Semver == nil || web.Spec.Policy.Semver.Range != "~1.2" ||
		web.Spec.FilterTags == nil || web.Spec.FilterTags.Pattern != `^1\.[0-9]+\.[0-9]+$` {
		t.Errorf("web policy: %+v in %s", web.Spec, web.Namespace)
	}
	if r := res.ImageRepositories[0]; r.Spec.Image != "ghcr.io/acme/web" || r.Spec.SecretRef == nil || r.Spec.SecretRef.Name != "ghcr" || len(r.Spec.ExclusionList) != 1 || r.Spec.ExclusionList[0] != "^.*-debug$" {
		t.Errorf("web repository: %+v", r.Spec)
	}
	if w := res.ImagePolicies[1]; w.Spec.Policy.Alphabetical == nil {
		t.Errorf("worker policy: %+v", w.Spec)
	}
	a := res.ImageUpdateAutomations[0]
	if a.Spec.RepoURL != app.Spec.Source.RepoURL || a.Spec.Path != "deploy" || a.Spec.Branch != "main" || a.Spec.Push == nil || a.Spec.Push.Branch != "image-updates" ||
		a.Spec.PolicySelector == nil || a.Spec.PolicySelector.MatchLabels[imageUpdaterAppLabel] != "shop" {
		t.Errorf("automation: %+v", a.Spec)
	}
	var text []string
	for _, f := range res.Findings {
		text = append(text, f.String())
	}
	all := strings.Join(text, "\n")
	for _, want := range []string{"build.update-strategy", "newest-build", `{"$imagepolicy": "` + app.Namespace + `:shop-web"}`} {
		if !strings.Contains(all, want) {
			t.Errorf("findings do not say %q:\n%s", want, all)
		}
	}
}
