package migrate

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"converge.dev/converge/api/v1alpha1"
)

// The Argo CD Image Updater configures an Application by annotations: an
// image list of alias=image[:constraint], and per alias an update
// strategy, tag filters and where the tag goes. Each alias becomes an
// ImageRepository and an ImagePolicy of the alias's name, and the app's
// repository and branch an ImageUpdateAutomation. The updater writes
// parameter overrides (or a file of its own) rather than the manifests;
// converge writes the manifests at markers, so where each marker goes is
// named.

const imageUpdaterPrefix = "argocd-image-updater.argoproj.io/"

// imageUpdaterAppLabel marks the policies made for one app, which its
// automation selects.
const imageUpdaterAppLabel = "converge.dev/image-updater-app"

// argoImageUpdater translates app's Image Updater annotations, if any.
func (t *translator) argoImageUpdater(u *unstructured.Unstructured, app *v1alpha1.Application) {
	ann := u.GetAnnotations()
	list := ann[imageUpdaterPrefix+"image-list"]
	if list == "" {
		return
	}
	field := func(k string) string { return "metadata.annotations[" + imageUpdaterPrefix + k + "]" }
	var markers []string
	for _, entry := range strings.Split(list, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		alias, image, ok := strings.Cut(entry, "=")
		if !ok {
			image, alias = entry, ""
		}
		image, constraint := splitConstraint(image)
		if alias == "" {
			alias = image[strings.LastIndex(image, "/")+1:]
		}
		name := policyName(app.Name, alias)
		repo := v1alpha1.ImageRepository{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ImageRepository"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: app.Namespace},
			Spec:       v1alpha1.ImageRepositorySpec{Image: image},
		}
		if s := ann[imageUpdaterPrefix+alias+".pull-secret"]; s != "" {
			if sec, ok := strings.CutPrefix(s, "pullsecret:"); ok {
				_, secName, _ := strings.Cut(sec, "/")
				repo.Spec.SecretRef = &v1alpha1.LocalObjectReference{Name: secName}
				t.note(u, field(alias+".pull-secret"), "Secret %s must be in namespace %s, beside the ImageRepository", secName, app.Namespace)
			} else {
				t.note(u, field(alias+".pull-secret"), "%q is not a pullsecret:NS/NAME reference; not carried (give ImageRepository %s a secretRef)", s, name)
			}
		}
		policy := v1alpha1.ImagePolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ImagePolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: app.Namespace, Labels: map[string]string{imageUpdaterAppLabel: app.Name}},
			Spec:       v1alpha1.ImagePolicySpec{ImageRepositoryRef: v1alpha1.LocalObjectReference{Name: name}},
		}
		if !t.imageUpdaterStrategy(u, field(alias+".update-strategy"), ann[imageUpdaterPrefix+alias+".update-strategy"], constraint, &policy) {
			continue
		}
		if allow := ann[imageUpdaterPrefix+alias+".allow-tags"]; allow != "" {
			if re, ok := strings.CutPrefix(allow, "regexp:"); ok && validRegexp(re) {
				policy.Spec.FilterTags = &v1alpha1.TagFilter{Pattern: re}
			} else {
				t.note(u, field(alias+".allow-tags"), "%q: only regexp: filters are carried; not translated", allow)
				continue
			}
		}
		if ann[imageUpdaterPrefix+alias+".ignore-tags"] != "" {
			repo.Spec.ExclusionList = globsToRegexps(ann[imageUpdaterPrefix+alias+".ignore-tags"])
		}
		t.res.ImageRepositories = append(t.res.ImageRepositories, repo)
		t.res.ImagePolicies = append(t.res.ImagePolicies, policy)
		markers = append(markers, fmt.Sprintf(`# {"$imagepolicy": "%s:%s"}`, app.Namespace, name))
	}
	if len(markers) == 0 {
		return
	}
	method := ann[imageUpdaterPrefix+"write-back-method"]
	auto := v1alpha1.ImageUpdateAutomation{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ImageUpdateAutomation"},
		ObjectMeta: metav1.ObjectMeta{Name: app.Name + "-images", Namespace: app.Namespace},
		Spec: v1alpha1.ImageUpdateAutomationSpec{RepoURL: app.Spec.Source.RepoURL, Path: app.Spec.Source.Path, SecretRef: app.Spec.Source.SecretRef,
			PolicySelector: &metav1.LabelSelector{MatchLabels: map[string]string{imageUpdaterAppLabel: app.Name}}},
	}
	if ref := app.Spec.Source.Ref; ref != nil && ref.Branch != "" {
		auto.Spec.Branch = ref.Branch
	}
	if b := ann[imageUpdaterPrefix+"git-branch"]; b != "" {
		base, push, _ := strings.Cut(b, ":")
		if base != "" {
			auto.Spec.Branch = base
		}
		if push != "" {
			if strings.Contains(push, "{{") {
				t.note(u, field("git-branch"), "a templated push branch %q is not carried: converge pushes to one fixed branch; set spec.push.branch", push)
			} else {
				auto.Spec.Push = &v1alpha1.ImagePush{Branch: push}
			}
		}
	}
	if method == "" || method == "argocd" {
		t.note(u, field("write-back-method"), "argocd (parameter overrides in the Application) has no converge equivalent: Git stays the truth, and ImageUpdateAutomation %s commits the new tags instead", auto.Name)
	}
	if target := ann[imageUpdaterPrefix+"write-back-target"]; target != "" {
		t.note(u, field("write-back-target"), "%s: converge writes the manifests themselves at markers, not a file of its own", target)
	}
	sort.Strings(markers)
	t.note(u, field("image-list"), "add a marker to each field that holds an image in %s (a Kustomization's images[].newTag takes the \":tag\" form): %s", orRoot(app.Spec.Source.Path), strings.Join(markers, ", "))
	t.res.ImageUpdateAutomations = append(t.res.ImageUpdateAutomations, auto)
}

// splitConstraint cuts "registry/web:~1.2" into the image and its
// version constraint ("" for none).
func splitConstraint(image string) (string, string) {
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[:i], image[i+1:]
	}
	return image, ""
}

// imageUpdaterStrategy sets policy's order from the updater's strategy
// and constraint; false (named) when it has none converge can follow.
func (t *translator) imageUpdaterStrategy(u *unstructured.Unstructured, field, strategy, constraint string, policy *v1alpha1.ImagePolicy) bool {
	switch strategy {
	case "", "semver":
		if constraint == "" {
			constraint = "*"
		}
		policy.Spec.Policy.Semver = &v1alpha1.SemverPolicy{Range: constraint}
	case "alphabetical", "name":
		policy.Spec.Policy.Alphabetical = &v1alpha1.OrderPolicy{}
	case "digest":
		policy.Spec.Policy.Alphabetical = &v1alpha1.OrderPolicy{}
		policy.Spec.FilterTags = &v1alpha1.TagFilter{Pattern: "^" + regexp.QuoteMeta(constraint) + "$"}
		policy.Spec.DigestReflectionPolicy = "Always"
		if constraint == "" {
			t.note(u, field, "digest without a tag to follow; not translated")
			return false
		}
	default:
		// newest-build (latest) orders by the image's build time, which
		// converge does not read.
		t.note(u, field, "%s orders by build time, which converge does not read: give the tags a sortable part (filterTags with extract, numerical order); not translated", strategy)
		return false
	}
	return true
}

// globsToRegexps turns the updater's ignore-tags globs into anchored
// regular expressions.
func globsToRegexps(list string) []string {
	var out []string
	for _, g := range strings.Split(list, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		re := regexp.QuoteMeta(g)
		re = strings.ReplaceAll(re, `\*`, ".*")
		re = strings.ReplaceAll(re, `\?`, ".")
		out = append(out, "^"+re+"$")
	}
	return out
}

// policyName names an alias's policy after its app.
func policyName(app, alias string) string {
	return strings.ToLower(app + "-" + regexp.MustCompile(`[^A-Za-z0-9-]+`).ReplaceAllString(alias, "-"))
}

func orRoot(p string) string {
	if p == "" {
		return "the repository"
	}
	return p
}

func validRegexp(re string) bool {
	_, err := regexp.Compile(re)
	return err == nil
}
