package migrate

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"converge.dev/converge/api/v1alpha1"
)

// Flux's image automation: an ImageRepository, ImagePolicy and
// ImageUpdateAutomation become converge's kinds of the same names. Their
// markers (`# {"$imagepolicy": "ns:name"}`, ":tag", ":name") are read as
// Flux writes them, so the repository's manifests stay as they are.

// fluxImageRepository translates an ImageRepository.
func (t *translator) fluxImageRepository(u *unstructured.Unstructured) {
	spec := mapAt(u.Object, "spec")
	r := v1alpha1.ImageRepository{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ImageRepository"},
		ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), Namespace: u.GetNamespace()},
		Spec:       v1alpha1.ImageRepositorySpec{Image: strAt(spec, "image"), Interval: duration(strAt(spec, "interval"))},
	}
	r.Spec.Insecure, _, _ = unstructured.NestedBool(spec, "insecure")
	r.Spec.Suspend, _, _ = unstructured.NestedBool(spec, "suspend")
	if s := strAt(spec, "secretRef", "name"); s != "" {
		r.Spec.SecretRef = &v1alpha1.LocalObjectReference{Name: s}
	}
	r.Spec.ExclusionList, _, _ = unstructured.NestedStringSlice(spec, "exclusionList")
	if p := strAt(spec, "provider"); p != "" && p != "generic" {
		t.note(u, "spec.provider", "%s's workload identity is not supported: give spec.secretRef a Docker config; not translated", p)
		return
	}
	for f, why := range map[string]string{
		"certSecretRef":      "a registry CA is not carried",
		"proxySecretRef":     "a proxy is not carried",
		"serviceAccountName": "image pull secrets of a ServiceAccount are not read: name the Secret in spec.secretRef",
		"accessFrom":         "a converge ImagePolicy uses the ImageRepositories of its own namespace only",
		"timeout":            "converge bounds a scan itself (2 minutes)",
	} {
		if _, found, _ := unstructured.NestedFieldNoCopy(spec, f); found {
			t.note(u, "spec."+f, "%s", why)
		}
	}
	t.res.ImageRepositories = append(t.res.ImageRepositories, r)
}

// fluxImagePolicy translates an ImagePolicy.
func (t *translator) fluxImagePolicy(u *unstructured.Unstructured) {
	spec := mapAt(u.Object, "spec")
	p := v1alpha1.ImagePolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ImagePolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), Namespace: u.GetNamespace()},
		Spec: v1alpha1.ImagePolicySpec{
			ImageRepositoryRef:     v1alpha1.LocalObjectReference{Name: strAt(spec, "imageRepositoryRef", "name")},
			DigestReflectionPolicy: strAt(spec, "digestReflectionPolicy"),
		},
	}
	if ns := strAt(spec, "imageRepositoryRef", "namespace"); ns != "" && ns != u.GetNamespace() {
		t.note(u, "spec.imageRepositoryRef.namespace", "an ImageRepository of namespace %s: a converge ImagePolicy uses its own namespace's; not translated", ns)
		return
	}
	if p.Spec.DigestReflectionPolicy == "IfNotPresent" {
		t.note(u, "spec.digestReflectionPolicy", "IfNotPresent is carried as Always (the digest is read at every scan)")
		p.Spec.DigestReflectionPolicy = "Always"
	}
	if suspend, _, _ := unstructured.NestedBool(spec, "suspend"); suspend {
		t.note(u, "spec.suspend", "a converge ImagePolicy has no suspend: suspend its ImageUpdateAutomation instead; not translated")
		return
	}
	if strAt(spec, "interval") != "" {
		t.note(u, "spec.interval", "not carried: the policy is chosen again at every scan of its ImageRepository")
	}
	pol := mapAt(spec, "policy")
	switch {
	case mapAt(pol, "semver") != nil:
		p.Spec.Policy.Semver = &v1alpha1.SemverPolicy{Range: strAt(pol, "semver", "range")}
	case mapAt(pol, "numerical") != nil:
		p.Spec.Policy.Numerical = &v1alpha1.OrderPolicy{Order: strAt(pol, "numerical", "order")}
	case mapAt(pol, "alphabetical") != nil:
		p.Spec.Policy.Alphabetical = &v1alpha1.OrderPolicy{Order: strAt(pol, "alphabetical", "order")}
	default:
		t.note(u, "spec.policy", "no semver, numerical or alphabetical policy; not translated")
		return
	}
	if f := mapAt(spec, "filterTags"); f != nil {
		p.Spec.FilterTags = &v1alpha1.TagFilter{Pattern: strAt(f, "pattern"), Extract: strAt(f, "extract")}
	}
	t.res.ImagePolicies = append(t.res.ImagePolicies, p)
}

// fluxImageUpdateAutomation translates an ImageUpdateAutomation, its
// GitRepository's URL, credentials and branch included.
func (t *translator) fluxImageUpdateAutomation(u *unstructured.Unstructured) {
	spec := mapAt(u.Object, "spec")
	repo, key := t.source(u, "spec", "sourceRef")
	if repo == nil {
		t.note(u, "spec.sourceRef", "%s is not among the manifests; not translated", key)
		return
	}
	a := v1alpha1.ImageUpdateAutomation{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ImageUpdateAutomation"},
		ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), Namespace: u.GetNamespace()},
		Spec: v1alpha1.ImageUpdateAutomationSpec{
			RepoURL:  str(repo, "spec", "url"),
			Branch:   strAt(spec, "git", "checkout", "ref", "branch"),
			Path:     strings.TrimPrefix(strAt(spec, "update", "path"), "./"),
			Interval: duration(strAt(spec, "interval")),
		},
	}
	if a.Spec.Branch == "" {
		a.Spec.Branch = str(repo, "spec", "ref", "branch")
	}
	if s := str(repo, "spec", "secretRef", "name"); s != "" {
		a.Spec.SecretRef = &v1alpha1.LocalObjectReference{Name: s}
	}
	a.Spec.Suspend, _, _ = unstructured.NestedBool(spec, "suspend")
	if s := strAt(spec, "update", "strategy"); s != "" && s != "Setters" {
		t.note(u, "spec.update.strategy", "%s: converge updates by setters (markers) only; not translated", s)
		return
	}
	if sel := mapAt(spec, "policySelector"); sel != nil {
		ls := &metav1.LabelSelector{}
		if ml, _, _ := unstructured.NestedStringMap(sel, "matchLabels"); len(ml) > 0 {
			ls.MatchLabels = ml
		}
		if _, found := sel["matchExpressions"]; found {
			t.note(u, "spec.policySelector.matchExpressions", "not carried: select policies by matchLabels; not translated, so that it does not update every policy's markers")
			return
		}
		a.Spec.PolicySelector = ls
	}
	commit := mapAt(spec, "git", "commit")
	a.Spec.Commit.AuthorName, a.Spec.Commit.AuthorEmail = strAt(commit, "author", "name"), strAt(commit, "author", "email")
	if strAt(commit, "messageTemplate") != "" {
		t.note(u, "spec.git.commit.messageTemplate", "Flux's template data (.Changed, .AutomationObject) is not converge's (.Updates, .AutomationName); the default message is used")
	}
	if _, found := commit["messageTemplateValues"]; found {
		t.note(u, "spec.git.commit.messageTemplateValues", "not carried (the default message is used)")
	}
	if key := strAt(commit, "signingKey", "secretRef", "name"); key != "" {
		if strAt(commit, "signingKey", "type") != "ssh" {
			t.note(u, "spec.git.commit.signingKey", "an OpenPGP signing key: converge signs with an SSH key (spec.commit.signingKey); not translated, so that no commit goes unsigned")
			return
		}
		a.Spec.Commit.SigningKey = &v1alpha1.LocalObjectReference{Name: key}
		t.note(u, "spec.git.commit.signingKey", "Secret %s is read with converge's key: the SSH private key in \"identity\"", key)
	}
	if push := mapAt(spec, "git", "push"); push != nil {
		if b := strAt(push, "branch"); b != "" {
			a.Spec.Push = &v1alpha1.ImagePush{Branch: b}
		}
		if strAt(push, "refspec") != "" {
			t.note(u, "spec.git.push.refspec", "a refspec is not carried: converge pushes to spec.push.branch")
		}
	}
	t.res.ImageUpdateAutomations = append(t.res.ImageUpdateAutomations, a)
}
