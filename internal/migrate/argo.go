package migrate

import (
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	"helm.sh/helm/v4/pkg/strvals"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
)

// argo translates an Argo CD Application.
func (t *translator) argo(u *unstructured.Unstructured) {
	if dir, ok := t.parentOf(mapAt(u.Object, "spec")); ok {
		// An app of apps: a converge Application of it would apply Argo
		// CD Applications. Its children, found among the inputs, are
		// translated instead.
		t.note(u, "spec.source.path", "it deploys the Argo CD Applications of %s (an app of apps), which are translated here in its place; not translated", dir)
		return
	}
	if app, ok := t.argoApp(u, mapAt(u.Object, "spec"), false); ok {
		t.res.Applications = append(t.res.Applications, app)
		t.argoImageUpdater(u, &app)
	}
}

// parentOf says whether an Application's source path (or one of its
// sources') is a directory among the inputs that holds Argo CD
// Applications or ApplicationSets: the root of an app of apps. Paths
// compare by their ends, as the inputs may be any directory of the
// repository.
func (t *translator) parentOf(spec map[string]any) (string, bool) {
	var paths []string
	if p := strAt(mapAt(spec, "source"), "path"); p != "" {
		paths = append(paths, p)
	}
	srcs, _, _ := unstructured.NestedSlice(spec, "sources")
	for _, s := range srcs {
		if m, ok := s.(map[string]any); ok && strAt(m, "path") != "" {
			paths = append(paths, strAt(m, "path"))
		}
	}
	for _, p := range paths {
		p = cleanDir(p)
		for dir := range t.appDirs {
			// Inputs outside a Git work tree are named from the input
			// directory: then a path of two or more directories may match
			// by its end.
			tail := strings.Contains(dir, "/") && (strings.HasSuffix(p, "/"+dir) || strings.HasSuffix(dir, "/"+p) && strings.Contains(p, "/"))
			if p != "" && dir != "" && (p == dir || tail) {
				return dir, true
			}
		}
	}
	return "", false
}

// sourceDir is the directory an object came from, by its render source:
// a chart's root for its templates, a Kustomize root, a manifest's
// directory.
func sourceDir(src string) string {
	src, _, _ = strings.Cut(src, "#")
	if i := strings.Index(src, "/templates/"); i >= 0 || strings.HasPrefix(src, "templates/") {
		return cleanDir(src[:max(i, 0)])
	}
	return cleanDir(path.Dir(src))
}

// argoApp translates an Argo CD Application's spec (of u, or of an
// ApplicationSet's template when templated: placeholders in the
// destination then pass through). ok is false when it cannot be.
func (t *translator) argoApp(u *unstructured.Unstructured, spec map[string]any, templated bool) (v1alpha1.Application, bool) {
	dest := mapAt(spec, "destination")
	ns := strAt(dest, "namespace")
	if ns == "" {
		ns = "default"
		t.note(u, "spec.destination.namespace", "not set; the converge Application goes to namespace default, which is also its objects' default namespace")
	}
	cluster := ""
	server, name := strAt(dest, "server"), strAt(dest, "name")
	switch {
	case templated && strings.Contains(server+name, "{{"):
		// A clusters generator's cluster: converge's gives its name.
		cluster = "{{name}}"
	case !inCluster(server, name):
		c, ok := t.cluster(u, "spec.destination", "another cluster ("+firstNonEmpty(server, name)+")", server, name)
		if !ok {
			return v1alpha1.Application{}, false
		}
		cluster = c
	}
	app := newApp(u.GetName(), ns)
	if p := strAt(spec, "project"); p != "" && p != "default" {
		if _, ok := t.projects[p]; ok {
			t.appProjects[ns+"/"+u.GetName()] = p
		} else {
			t.note(u, argoProjectField, "AppProject %q is not among the manifests: its restrictions are not carried over; a converge Tenant expresses them (docs/security.md)", p)
		}
	}
	app.Spec.Destination.Namespace = ns
	app.Spec.Destination.Cluster = cluster

	var sources []map[string]any
	if s := mapAt(spec, "source"); s != nil {
		sources = append(sources, s)
	}
	list, _, _ := unstructured.NestedSlice(spec, "sources")
	for _, s := range list {
		if m, ok := s.(map[string]any); ok {
			sources = append(sources, m)
		}
	}
	switch {
	case len(sources) == 0:
		t.note(u, "spec.source", "no source; not translated")
		return app, false
	case len(sources) == 1:
		if !t.argoSource(u, &app, sources[0], "spec.source") {
			return app, false
		}
	default:
		if !t.argoSources(u, &app, sources) {
			return app, false
		}
	}
	t.argoSyncPolicy(u, &app, mapAt(spec, "syncPolicy"))
	if limit, ok := intAt(spec, "revisionHistoryLimit"); ok && limit > 0 {
		l := int32(min(limit, 500))
		app.Spec.HistoryLimit = &l
	}
	diffs, _, _ := unstructured.NestedSlice(spec, "ignoreDifferences")
	for i, d := range diffs {
		m, _ := d.(map[string]any)
		field := fmt.Sprintf("spec.ignoreDifferences[%d]", i)
		rule := v1alpha1.ResourceIgnoreDifferences{Group: strAt(m, "group"), Kind: strAt(m, "kind"), Name: strAt(m, "name"), Namespace: strAt(m, "namespace")}
		rule.JSONPointers, _, _ = unstructured.NestedStringSlice(m, "jsonPointers")
		rule.JQPathExpressions, _, _ = unstructured.NestedStringSlice(m, "jqPathExpressions")
		rule.ManagedFieldsManagers, _, _ = unstructured.NestedStringSlice(m, "managedFieldsManagers")
		if rule.Kind == "" || len(rule.JSONPointers)+len(rule.JQPathExpressions)+len(rule.ManagedFieldsManagers) == 0 {
			t.note(u, field, "no kind, or no jsonPointers, jqPathExpressions or managedFieldsManagers: not carried over")
			continue
		}
		app.Spec.IgnoreDifferences = append(app.Spec.IgnoreDifferences, rule)
	}
	return app, true
}

// argoKustomize carries an Application's Kustomize overrides over; what
// converge's overrides lack is named.
func (t *translator) argoKustomize(u *unstructured.Unstructured, k map[string]any, field string) *v1alpha1.KustomizeOverrides {
	out := &v1alpha1.KustomizeOverrides{NamePrefix: strAt(k, "namePrefix"), NameSuffix: strAt(k, "nameSuffix"), Namespace: strAt(k, "namespace")}
	out.Images, _, _ = unstructured.NestedStringSlice(k, "images")
	out.Components, _, _ = unstructured.NestedStringSlice(k, "components")
	out.CommonLabels, _, _ = unstructured.NestedStringMap(k, "commonLabels")
	out.LabelWithoutSelector, _ = k["labelWithoutSelector"].(bool)
	out.LabelIncludeTemplates, _ = k["labelIncludeTemplates"].(bool)
	out.CommonAnnotations, _, _ = unstructured.NestedStringMap(k, "commonAnnotations")
	reps, _, _ := unstructured.NestedSlice(k, "replicas")
	for i, r := range reps {
		m, _ := r.(map[string]any)
		n, ok := intAt(m, "count")
		if !ok {
			if c, err := strconv.ParseInt(strAt(m, "count"), 10, 64); err == nil {
				n, ok = c, true
			}
		}
		if !ok || strAt(m, "name") == "" {
			t.note(u, fmt.Sprintf("%s.replicas[%d]", field, i), "want a name and a count; not carried over")
			continue
		}
		out.Replicas = append(out.Replicas, v1alpha1.KustomizeReplica{Name: strAt(m, "name"), Count: n})
	}
	out.Patches = t.kustomizePatches(u, k, field)
	for _, f := range []string{"version", "forceCommonLabels", "forceCommonAnnotations", "commonAnnotationsEnvsubst", "kubeVersion", "apiVersions"} {
		if _, ok := k[f]; ok {
			t.note(u, field+"."+f, "not supported; not carried over")
		}
	}
	return out
}

// kustomizePatches carries the inline patches of an Argo CD or Flux
// Kustomize block (k, at field) over, with their targets; a patch by file
// is named.
func (t *translator) kustomizePatches(u *unstructured.Unstructured, k map[string]any, field string) []v1alpha1.KustomizePatch {
	var out []v1alpha1.KustomizePatch
	patches, _, _ := unstructured.NestedSlice(k, "patches")
	for i, p := range patches {
		m, _ := p.(map[string]any)
		if strAt(m, "patch") == "" {
			t.note(u, fmt.Sprintf("%s.patches[%d]", field, i), "only inline patches (patch) are carried over; put a patch file in the kustomization.yaml")
			continue
		}
		kp := v1alpha1.KustomizePatch{Patch: strAt(m, "patch")}
		if tg := mapAt(m, "target"); tg != nil {
			kp.Target = &v1alpha1.KustomizeTarget{Group: strAt(tg, "group"), Version: strAt(tg, "version"), Kind: strAt(tg, "kind"), Name: strAt(tg, "name"),
				Namespace: strAt(tg, "namespace"), LabelSelector: strAt(tg, "labelSelector"), AnnotationSelector: strAt(tg, "annotationSelector")}
		}
		out = append(out, kp)
	}
	return out
}

// argoSource fills app from one Argo CD source; false when nothing usable.
func (t *translator) argoSource(u *unstructured.Unstructured, app *v1alpha1.Application, src map[string]any, field string) bool {
	repoURL := strAt(src, "repoURL")
	rev := strAt(src, "targetRevision")
	if chart := strAt(src, "chart"); chart != "" {
		if !strings.Contains(repoURL, "://") {
			repoURL = "oci://" + repoURL // Argo CD writes OCI Helm repositories without a scheme
		}
		app.Spec.Source.Chart = &v1alpha1.ChartSource{RepoURL: repoURL, Name: chart, Version: rev}
	} else {
		app.Spec.Source.RepoURL = repoURL
		var why string
		app.Spec.Source.Ref, why = gitRef(rev)
		if why != "" {
			t.note(u, field+".targetRevision", "%s", why)
		}
		app.Spec.Source.Path = strings.TrimPrefix(strings.TrimPrefix(strAt(src, "path"), "./"), "/")
		if app.Spec.Source.Path == "." {
			app.Spec.Source.Path = ""
		}
	}
	if src["plugin"] != nil {
		t.note(u, field+".plugin", "config management plugins are not supported: render to YAML in CI, or use Helm, Kustomize or Jsonnet; not translated")
		return false
	}
	if k := mapAt(src, "kustomize"); len(k) > 0 {
		app.Spec.Source.Kustomize = t.argoKustomize(u, k, field+".kustomize")
	}
	if d := mapAt(src, "directory"); d != nil {
		if recurse, ok := d["recurse"].(bool); ok && !recurse {
			t.note(u, field+".directory.recurse", "converge reads subdirectories too")
		}
		for _, f := range []string{"include", "exclude"} {
			if strAt(d, f) != "" {
				t.note(u, field+".directory."+f, "not supported: converge renders every manifest in the directory")
			}
		}
		if j := mapAt(d, "jsonnet"); j != nil {
			app.Spec.Source.Jsonnet = t.argoJsonnet(u, j, field+".directory.jsonnet")
		}
	}
	if h := mapAt(src, "helm"); h != nil {
		t.argoHelm(u, app, h, field+".helm")
	}
	return true
}

func (t *translator) argoJsonnet(u *unstructured.Unstructured, j map[string]any, field string) *v1alpha1.JsonnetSource {
	out := &v1alpha1.JsonnetSource{}
	read := func(key string) map[string]string {
		list, _, _ := unstructured.NestedSlice(j, key)
		if len(list) == 0 {
			return nil
		}
		m := map[string]string{}
		for _, e := range list {
			v, _ := e.(map[string]any)
			if code, _ := v["code"].(bool); code {
				t.note(u, field+"."+key, "%v: code values are not supported, only strings", v["name"])
				continue
			}
			name, _ := v["name"].(string)
			value, _ := v["value"].(string)
			m[name] = value
		}
		return m
	}
	out.ExtVars, out.TLAs = read("extVars"), read("tlas")
	libs, _, _ := unstructured.NestedStringSlice(j, "libs")
	out.LibPaths = libs
	return out
}

func (t *translator) argoHelm(u *unstructured.Unstructured, app *v1alpha1.Application, h map[string]any, field string) {
	hs := &v1alpha1.HelmSource{ReleaseName: strAt(h, "releaseName")}
	files, _, _ := unstructured.NestedStringSlice(h, "valueFiles")
	hs.ValuesFiles = files
	values := map[string]any{}
	if s := strAt(h, "values"); s != "" {
		if err := yaml.Unmarshal([]byte(s), &values); err != nil {
			t.note(u, field+".values", "not YAML: %v", err)
		}
	}
	if obj := mapAt(h, "valuesObject"); obj != nil {
		for k, v := range obj {
			values[k] = v
		}
	}
	params, _, _ := unstructured.NestedSlice(h, "parameters")
	for _, p := range params {
		pm, _ := p.(map[string]any)
		name, _ := pm["name"].(string)
		value, _ := pm["value"].(string)
		parse := strvals.ParseInto
		if fs, _ := pm["forceString"].(bool); fs {
			parse = strvals.ParseIntoString
		}
		if err := parse(name+"="+value, values); err != nil {
			t.note(u, field+".parameters", "%s: %v", name, err)
		}
	}
	if len(values) > 0 {
		raw, err := rawValues(values)
		if err != nil {
			t.note(u, field+".values", "%v", err)
		} else {
			hs.Values = raw
		}
	}
	hs.SkipCRDs, _ = h["skipCrds"].(bool)
	hs.IgnoreMissingValueFiles, _ = h["ignoreMissingValueFiles"].(bool)
	hs.KubeVersion = strAt(h, "kubeVersion")
	hs.APIVersions, _, _ = unstructured.NestedStringSlice(h, "apiVersions")
	for _, f := range []string{"fileParameters", "passCredentials", "version", "namespace"} {
		if _, ok := h[f]; ok {
			t.note(u, field+"."+f, "not carried over")
		}
	}
	if hs.ReleaseName != "" || len(hs.ValuesFiles) > 0 || hs.Values != nil || hs.SkipCRDs || hs.IgnoreMissingValueFiles || hs.KubeVersion != "" || len(hs.APIVersions) > 0 {
		app.Spec.Source.Helm = hs
	}
}

// argoSources translates Argo CD's multiple sources: one chart, with
// values files from a Git source referred to as $ref.
func (t *translator) argoSources(u *unstructured.Unstructured, app *v1alpha1.Application, sources []map[string]any) bool {
	var chart map[string]any
	refs := map[string]map[string]any{}
	for i, s := range sources {
		switch {
		case strAt(s, "ref") != "":
			refs[strAt(s, "ref")] = s
		case strAt(s, "chart") != "" && chart == nil:
			chart = s
		default:
			t.note(u, "spec.sources", "source %d (%s %s): converge renders one chart or one path per Application; make it an Application of its own", i, strAt(s, "repoURL"), strAt(s, "path"))
		}
	}
	if chart == nil {
		t.note(u, "spec.sources", "no chart source among them; not translated")
		return false
	}
	if !t.argoSource(u, app, chart, "spec.sources") {
		return false
	}
	h := app.Spec.Source.Helm
	if h == nil || len(h.ValuesFiles) == 0 {
		return true
	}
	// $values/env/prod/values.yaml: the Git source "values", that path.
	var gitSrc map[string]any
	var dirs []string
	var files []string
	for _, f := range h.ValuesFiles {
		name, rest, ok := strings.Cut(strings.TrimPrefix(f, "$"), "/")
		s := refs[name]
		if !strings.HasPrefix(f, "$") || !ok || s == nil || (gitSrc != nil && strAt(gitSrc, "repoURL") != strAt(s, "repoURL")) {
			t.note(u, "spec.sources.helm.valueFiles", "%s: only values files from one Git source ($ref/path) are carried over", f)
			continue
		}
		gitSrc = s
		dirs = append(dirs, path.Dir(rest))
		files = append(files, rest)
	}
	if gitSrc == nil {
		h.ValuesFiles = nil
		return true
	}
	base := commonDir(dirs)
	app.Spec.Source.RepoURL = strAt(gitSrc, "repoURL")
	var why string
	app.Spec.Source.Ref, why = gitRef(strAt(gitSrc, "targetRevision"))
	if why != "" {
		t.note(u, "spec.sources.targetRevision", "%s", why)
	}
	app.Spec.Source.Path = base
	h.ValuesFiles = nil
	for _, f := range files {
		rel := strings.TrimPrefix(f, base+"/")
		if base == "" || base == "." {
			rel = f
		}
		h.ValuesFiles = append(h.ValuesFiles, rel)
	}
	if app.Spec.Source.Path == "." {
		app.Spec.Source.Path = ""
	}
	return true
}

// commonDir is the longest directory every dir is in.
func commonDir(dirs []string) string {
	if len(dirs) == 0 {
		return ""
	}
	common := strings.Split(dirs[0], "/")
	for _, d := range dirs[1:] {
		parts := strings.Split(d, "/")
		n := 0
		for n < len(common) && n < len(parts) && common[n] == parts[n] {
			n++
		}
		common = common[:n]
	}
	return strings.Join(common, "/")
}

func (t *translator) argoSyncPolicy(u *unstructured.Unstructured, app *v1alpha1.Application, sp map[string]any) {
	if sp == nil {
		return
	}
	if auto, ok := sp["automated"].(map[string]any); ok {
		prune, _ := auto["prune"].(bool)
		heal, _ := auto["selfHeal"].(bool)
		if enabled, ok := auto["enabled"].(bool); !ok || enabled {
			app.Spec.SyncPolicy.Automated = &v1alpha1.AutomatedSync{Prune: prune, SelfHeal: heal}
		}
		if allow, _ := auto["allowEmpty"].(bool); allow {
			t.note(u, "spec.syncPolicy.automated.allowEmpty", "not carried over: converge never applies an empty render from the agent")
		}
	}
	opts, _, _ := unstructured.NestedStringSlice(sp, "syncOptions")
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch {
		case k == "CreateNamespace" && strings.EqualFold(v, "true"):
			app.Spec.SyncPolicy.CreateNamespace = true
		case k == "PruneLast" && strings.EqualFold(v, "true"):
			app.Spec.SyncPolicy.PruneLast = true
		case k == "ServerSideApply" || k == "ApplyOutOfSyncOnly" || k == "RespectIgnoreDifferences":
			// What converge always does.
		case k == "Validate" && strings.EqualFold(v, "false"):
			t.note(u, "spec.syncPolicy.syncOptions", "Validate=false is honoured per object: annotate the objects whose unknown fields may be dropped argocd.argoproj.io/sync-options: Validate=false")
		default:
			t.note(u, "spec.syncPolicy.syncOptions", "%s is not carried over (per-object options are: docs/compat.md)", o)
		}
	}
	if md := mapAt(sp, "managedNamespaceMetadata"); md != nil {
		labels, _, _ := unstructured.NestedStringMap(md, "labels")
		ann, _, _ := unstructured.NestedStringMap(md, "annotations")
		app.Spec.SyncPolicy.NamespaceMetadata = &v1alpha1.NamespaceMetadata{Labels: labels, Annotations: ann}
	}
	if r := mapAt(sp, "retry"); r != nil {
		rp := &v1alpha1.RetryPolicy{}
		if limit, ok := intAt(r, "limit"); ok && limit > 0 {
			rp.Limit = int32(limit)
		}
		if b := mapAt(r, "backoff"); b != nil {
			bo := &v1alpha1.Backoff{Duration: duration(strAt(b, "duration")), MaxDuration: duration(strAt(b, "maxDuration"))}
			if f, ok := intAt(b, "factor"); ok && f > 0 {
				factor := int32(f)
				bo.Factor = &factor
			}
			rp.Backoff = bo
		}
		app.Spec.SyncPolicy.Retry = rp
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
