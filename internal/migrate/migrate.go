// Package migrate translates Argo CD Applications and Flux GitRepository,
// Kustomization, HelmRepository, OCIRepository and HelmRelease objects
// into converge Applications, and says what it could not carry over.
package migrate

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/render"
)

// Finding is something the translation could not carry over, or carried
// over with a difference worth knowing.
type Finding struct {
	// Object is "Kind/namespace/name" of the input object.
	Object string
	// Field is the field in it ("spec.source.plugin").
	Field   string
	Message string
}

func (f Finding) String() string {
	return fmt.Sprintf("%s: %s: %s", f.Object, f.Field, f.Message)
}

// Result is what a translation made.
type Result struct {
	Applications []v1alpha1.Application
	// Tenants are made of Argo CD AppProjects, Clusters of its cluster
	// Secrets; Secrets hold the credentials of both clusters and
	// repositories (as the input did).
	Tenants         []v1alpha1.Tenant
	Clusters        []v1alpha1.Cluster
	ApplicationSets []v1alpha1.ApplicationSet
	// Notifiers and Alerts are made of Flux's Providers and Alerts.
	Notifiers []v1alpha1.Notifier
	Alerts    []v1alpha1.Alert
	// The image automation kinds are made of Flux's.
	ImageRepositories      []v1alpha1.ImageRepository
	ImagePolicies          []v1alpha1.ImagePolicy
	ImageUpdateAutomations []v1alpha1.ImageUpdateAutomation
	Secrets                []corev1.Secret
	Findings               []Finding
	// Ignored counts input objects that are neither Argo CD nor Flux.
	Ignored int
}

// Options say how to translate.
type Options struct {
	// Clusters maps another cluster, as the input names it (an Argo CD
	// destination's server URL or name, a Flux kubeConfig Secret's name),
	// to the converge Cluster its apps deploy to. An app aimed at a
	// cluster not in Clusters is not translated (a finding names it):
	// nothing is retargeted to the agent's own cluster.
	Clusters map[string]string
}

// Translate translates every Argo CD and Flux object among objs. Flux
// Kustomizations and HelmReleases find their sources among objs by kind,
// namespace and name.
func Translate(objs []render.Object, opts Options) *Result {
	t := &translator{res: &Result{}, sources: map[string]*unstructured.Unstructured{}, artifacts: map[string]generated{}, appDirs: map[string]bool{}, fluxTenants: map[string]*fluxTenant{}, opts: opts,
		projects: map[string]*unstructured.Unstructured{}, appProjects: map[string]string{}}
	// The caller's map stays as it was: clusters found below are added.
	t.opts.Clusters = map[string]string{}
	for k, v := range opts.Clusters {
		t.opts.Clusters[k] = v
	}
	for _, o := range objs {
		gk := o.GroupVersionKind().GroupKind()
		switch {
		case gk.Group == "source.extensions.fluxcd.io" && gk.Kind == "ArtifactGenerator":
			t.indexGenerators(o.Unstructured)
		case gk.Group == "source.toolkit.fluxcd.io" || gk.Group == "source.extensions.fluxcd.io":
			t.sources[gk.Kind+"/"+o.GetNamespace()+"/"+o.GetName()] = o.Unstructured
		case gk.Group == "argoproj.io" && gk.Kind == "AppProject":
			t.projects[o.GetName()] = o.Unstructured
		case gk.Group == "argoproj.io" && (gk.Kind == "Application" || gk.Kind == "ApplicationSet") && o.Source != "":
			t.appDirs[sourceDir(o.Source)] = true
		case gk.Group == "" && gk.Kind == "Secret" && o.GetLabels()[argoSecretType] != "":
			// Clusters first: the Applications aimed at them map to them.
			t.argoSecret(o.Unstructured)
		case o.GetLabels()[fluxTenantLabel] != "":
			t.indexFluxTenant(o.Unstructured)
		}
	}
	for _, o := range objs {
		gk := o.GroupVersionKind().GroupKind()
		switch {
		case gk.Group == "" && gk.Kind == "Secret" && o.GetLabels()[argoSecretType] != "":
		case gk.Group == "argoproj.io" && gk.Kind == "AppProject":
		case gk.Group == "argoproj.io" && gk.Kind == "Application":
			t.argo(o.Unstructured)
		case gk.Group == "argoproj.io" && gk.Kind == "ApplicationSet":
			t.argoAppSet(o.Unstructured)
		case gk.Group == "argoproj.io":
			t.note(o.Unstructured, "kind", "%s is not translated (converge has Applications and Tenants; see docs/compat.md)", gk.Kind)
		case gk.Group == "kustomize.toolkit.fluxcd.io" && gk.Kind == "Kustomization":
			t.fluxKustomization(o.Unstructured)
		case gk.Group == "helm.toolkit.fluxcd.io" && gk.Kind == "HelmRelease":
			t.fluxHelmRelease(o.Unstructured)
		case gk.Group == "notification.toolkit.fluxcd.io" && gk.Kind == "Provider":
			t.fluxProvider(o.Unstructured)
		case gk.Group == "notification.toolkit.fluxcd.io" && gk.Kind == "Alert":
			t.fluxAlert(o.Unstructured)
		case gk.Group == "notification.toolkit.fluxcd.io" && gk.Kind == "Receiver":
			t.note(o.Unstructured, "kind", "Receiver is not translated: point the forge's push webhook at the agent's /hooks/git (docs/agent.md)")
		case gk.Group == "image.toolkit.fluxcd.io" && gk.Kind == "ImageRepository":
			t.fluxImageRepository(o.Unstructured)
		case gk.Group == "image.toolkit.fluxcd.io" && gk.Kind == "ImagePolicy":
			t.fluxImagePolicy(o.Unstructured)
		case gk.Group == "image.toolkit.fluxcd.io" && gk.Kind == "ImageUpdateAutomation":
			t.fluxImageUpdateAutomation(o.Unstructured)
		case gk.Group == "source.toolkit.fluxcd.io" || gk.Group == "source.extensions.fluxcd.io":
			// Translated with what refers to them; a kind no Kustomization
			// or HelmRelease can use here is named.
			switch gk.Kind {
			case "ArtifactGenerator":
				// Translated as the sources of what uses its artifacts.
			case "ExternalArtifact", "Bucket":
				t.note(o.Unstructured, "kind", "%s is not translated (converge syncs Git and OCI sources): what refers to it is named too", gk.Kind)
			}
		case strings.HasSuffix(gk.Group, ".fluxcd.io"):
			t.note(o.Unstructured, "kind", "%s (%s) is not translated", gk.Kind, gk.Group)
		default:
			t.res.Ignored++
		}
	}
	t.argoProjects()
	t.makeFluxTenants()
	t.applyRepoCreds()
	sort.Slice(t.res.Applications, func(i, j int) bool {
		a, b := t.res.Applications[i], t.res.Applications[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	return t.res
}

type translator struct {
	res     *Result
	sources map[string]*unstructured.Unstructured
	// artifacts are the ExternalArtifacts ArtifactGenerators make, by
	// namespace and name.
	artifacts map[string]generated
	// appDirs are the directories (by render source) that hold Argo CD
	// Applications: an app of apps points at one.
	appDirs map[string]bool
	// fluxTenants are Flux's tenants, by the tenant label.
	fluxTenants map[string]*fluxTenant
	opts        Options
	// projects are the AppProjects by name; appProjects the project of
	// each translated Application ("namespace/name").
	projects    map[string]*unstructured.Unstructured
	appProjects map[string]string
	// repoCreds are Argo CD's repository and repo-creds Secrets.
	repoCreds []*unstructured.Unstructured
}

// argoProjects makes a Tenant of each AppProject that translated
// Applications use, but the default project (its apps keep the agent's
// rights, as in Argo CD); a project they name that is not among the
// manifests is named.
func (t *translator) argoProjects() {
	byProject := map[string][]v1alpha1.Application{}
	for _, a := range t.res.Applications {
		if p := t.appProjects[a.Namespace+"/"+a.Name]; p != "" {
			byProject[p] = append(byProject[p], a)
		}
	}
	names := make([]string, 0, len(t.projects))
	for n := range t.projects {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if n == "default" {
			t.note(t.projects[n], "metadata.name", "the default project is not translated: its apps run with the agent's rights, as they ran with Argo CD's")
			continue
		}
		t.argoProject(t.projects[n], byProject[n])
	}
	// A namespace two Tenants govern refuses its apps: say so.
	owner := map[string]string{}
	for _, ten := range t.res.Tenants {
		for _, ns := range ten.Spec.Namespaces {
			if prev, ok := owner[ns]; ok {
				t.note(t.projects[ten.Name], "spec.destinations", "namespace %s is governed by Tenant %s too: converge refuses the apps of a namespace two Tenants govern; give each project its own namespaces", ns, prev)
				continue
			}
			owner[ns] = ten.Name
		}
	}
}

// cluster maps another cluster named by any of names (in order) to a
// converge Cluster; ok is false, with a finding on field, when none is
// mapped.
func (t *translator) cluster(u *unstructured.Unstructured, field, what string, names ...string) (string, bool) {
	for _, n := range names {
		if c, ok := t.opts.Clusters[n]; ok && n != "" {
			return c, true
		}
	}
	t.note(u, field, "%s: not translated, so that nothing is retargeted to this cluster; map it to a converge Cluster with --cluster %s=NAME", what, firstNonEmpty(names...))
	return "", false
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func ref(u *unstructured.Unstructured) string { return render.Ref(u) }

func (t *translator) note(u *unstructured.Unstructured, field, format string, args ...any) {
	t.res.Findings = append(t.res.Findings, Finding{Object: ref(u), Field: field, Message: fmt.Sprintf(format, args...)})
}

func str(u *unstructured.Unstructured, fields ...string) string {
	s, _, _ := unstructured.NestedString(u.Object, fields...)
	return s
}

func mapAt(m map[string]any, fields ...string) map[string]any {
	out, _, _ := unstructured.NestedMap(m, fields...)
	return out
}

// intAt reads an integer however the manifest was decoded (int64 or
// float64).
func intAt(m map[string]any, fields ...string) (int64, bool) {
	v, ok, _ := unstructured.NestedFieldNoCopy(m, fields...)
	if !ok {
		return 0, false
	}
	switch n := v.(type) {
	case int64:
		return n, true
	case float64:
		return int64(n), n == float64(int64(n))
	}
	return 0, false
}

func strAt(m map[string]any, fields ...string) string {
	s, _, _ := unstructured.NestedString(m, fields...)
	return s
}

func newApp(name, namespace string) v1alpha1.Application {
	return v1alpha1.Application{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Application"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
	}
}

// gitRef turns a revision (Argo CD's targetRevision) into a ref: a full
// SHA is a commit, a semver range a semver ref, "HEAD" or empty the
// default (main), anything else a branch, or a tag when it looks like a
// version.
func gitRef(rev string) (*v1alpha1.GitRef, string) {
	switch {
	case rev == "" || rev == "HEAD":
		return nil, "HEAD: converge follows the branch main unless told; set spec.source.ref.branch if the default branch is another"
	case len(rev) == 40 && strings.Trim(rev, "0123456789abcdef") == "":
		return &v1alpha1.GitRef{Commit: rev}, ""
	case strings.ContainsAny(rev, "*^~<>=| ") || strings.HasSuffix(rev, ".x"):
		return &v1alpha1.GitRef{Semver: rev}, ""
	case strings.HasPrefix(rev, "v") && strings.Count(rev, ".") >= 1 && strings.Trim(rev[1:], "0123456789.") == "":
		return &v1alpha1.GitRef{Tag: rev}, ""
	}
	return &v1alpha1.GitRef{Branch: rev}, ""
}

func duration(s string) *metav1.Duration {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return nil
	}
	return &metav1.Duration{Duration: d}
}

func rawValues(v any) (*apiextensionsv1.JSON, error) {
	data, err := yaml.Marshal(v)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	return &apiextensionsv1.JSON{Raw: js}, nil
}

// inCluster reports whether an Argo CD destination is the cluster Argo CD
// runs in, the only one an agent deploys to.
func inCluster(server, name string) bool {
	return (server == "" && (name == "" || name == "in-cluster")) || server == "https://kubernetes.default.svc"
}
