package migrate

import (
	"fmt"
	"path"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"converge.dev/converge/api/v1alpha1"
)

// source finds the Flux source u's sourceRef (at fields) names.
func (t *translator) source(u *unstructured.Unstructured, fields ...string) (*unstructured.Unstructured, string) {
	sr := mapAt(u.Object, fields...)
	kind, name, ns := strAt(sr, "kind"), strAt(sr, "name"), strAt(sr, "namespace")
	if ns == "" {
		ns = u.GetNamespace()
	}
	key := kind + "/" + ns + "/" + name
	return t.sources[key], key
}

// fluxGit fills app's Git source from a GitRepository.
func (t *translator) fluxGit(u *unstructured.Unstructured, app *v1alpha1.Application, repo *unstructured.Unstructured) {
	app.Spec.Source.RepoURL = str(repo, "spec", "url")
	ref := mapAt(repo.Object, "spec", "ref")
	switch {
	case strAt(ref, "commit") != "":
		app.Spec.Source.Ref = &v1alpha1.GitRef{Commit: strAt(ref, "commit")}
	case strAt(ref, "semver") != "":
		app.Spec.Source.Ref = &v1alpha1.GitRef{Semver: strAt(ref, "semver")}
	case strAt(ref, "tag") != "":
		app.Spec.Source.Ref = &v1alpha1.GitRef{Tag: strAt(ref, "tag")}
	case strAt(ref, "branch") != "":
		app.Spec.Source.Ref = &v1alpha1.GitRef{Branch: strAt(ref, "branch")}
	case strAt(ref, "name") != "":
		t.note(repo, "spec.ref.name", "a ref by full name is not supported; set a branch or tag")
	}
	if s := str(repo, "spec", "secretRef", "name"); s != "" {
		// Flux's keys are converge's: username/password, identity/known_hosts.
		app.Spec.Source.SecretRef = &v1alpha1.LocalObjectReference{Name: s}
	}
	if v := mapAt(repo.Object, "spec", "verify"); v != nil {
		t.note(repo, "spec.verify", "not carried over: converge verifies with a Secret of OpenPGP keys or SSH allowed signers (spec.source.verify)")
	}
	for _, f := range []string{"include", "ignore", "recurseSubmodules", "proxySecretRef"} {
		if _, ok := mapAt(repo.Object, "spec")[f]; ok {
			t.note(repo, "spec."+f, "not supported")
		}
	}
	if d := duration(str(repo, "spec", "interval")); d != nil {
		app.Spec.SyncPolicy.Interval = d
	}
}

// fluxCommon carries over what Kustomizations and HelmReleases share;
// false when the app must not be translated.
func (t *translator) fluxCommon(u *unstructured.Unstructured, app *v1alpha1.Application) bool {
	spec := mapAt(u.Object, "spec")
	if suspend, _ := spec["suspend"].(bool); suspend {
		app.Spec.Suspend = true
	}
	if sa := strAt(spec, "serviceAccountName"); sa != "" {
		app.Spec.ServiceAccountName = sa
	}
	if d := duration(strAt(spec, "timeout")); d != nil {
		app.Spec.SyncPolicy.Timeout = d
	}
	if app.Spec.SyncPolicy.Interval == nil {
		app.Spec.SyncPolicy.Interval = duration(strAt(spec, "interval"))
	}
	if ri := duration(strAt(spec, "retryInterval")); ri != nil {
		// Flux retries a failure every retryInterval, for ever.
		one := int32(1)
		app.Spec.SyncPolicy.Retry = &v1alpha1.RetryPolicy{Backoff: &v1alpha1.Backoff{Duration: ri, Factor: &one, MaxDuration: ri}}
	}
	// Flux's dependsOn names Kustomizations (HelmReleases): each becomes
	// the Application migrate makes of it, of the same name.
	deps, _, _ := unstructured.NestedSlice(spec, "dependsOn")
	for i, d := range deps {
		m, _ := d.(map[string]any)
		name, ns := strAt(m, "name"), strAt(m, "namespace")
		if name == "" {
			t.note(u, fmt.Sprintf("spec.dependsOn[%d]", i), "no name; not carried over")
			continue
		}
		ref := v1alpha1.ApplicationReference{Name: name}
		if ns != "" && ns != u.GetNamespace() {
			ref.Namespace = ns
		}
		if len(app.Spec.DependsOn) == 64 {
			t.note(u, "spec.dependsOn", "more than 64 dependencies: the rest are not carried over")
			break
		}
		app.Spec.DependsOn = append(app.Spec.DependsOn, ref)
	}
	if kc := mapAt(spec, "kubeConfig"); kc != nil {
		secret := strAt(kc, "secretRef", "name")
		c, ok := t.cluster(u, "spec.kubeConfig", "another cluster (kubeConfig Secret "+secret+")", secret)
		if !ok {
			return false
		}
		app.Spec.Destination.Cluster = c
	}
	return true
}

// fluxKustomization translates a Kustomization and its GitRepository.
func (t *translator) fluxKustomization(u *unstructured.Unstructured) {
	if u.GetName() == "flux-system" && u.GetNamespace() == "flux-system" {
		// flux bootstrap's own: it deploys Flux and the Kustomizations
		// that migrate turns into Applications.
		t.note(u, "metadata.name", "Flux's bootstrap Kustomization is not translated: it deploys Flux itself and the Kustomizations translated here")
		return
	}
	spec := mapAt(u.Object, "spec")
	srcPath := cleanDir(strAt(spec, "path"))
	repo, key := t.source(u, "spec", "sourceRef")
	if sr := mapAt(spec, "sourceRef"); strAt(sr, "kind") == "ExternalArtifact" {
		ns := strAt(sr, "namespace")
		if ns == "" {
			ns = u.GetNamespace()
		}
		var ok bool
		if repo, srcPath, ok = t.artifactSource(u, "spec.sourceRef", ns, strAt(sr, "name"), srcPath); !ok {
			return
		}
		key = repo.GetKind() + "/" + repo.GetNamespace() + "/" + repo.GetName()
	}
	switch {
	case repo == nil:
		t.note(u, "spec.sourceRef", "%s is not among the manifests; not translated", key)
		return
	case repo.GetKind() != "GitRepository" && repo.GetKind() != "OCIRepository":
		t.note(u, "spec.sourceRef", "%s: %s sources are not translated (GitRepository, OCIRepository and ExternalArtifacts of an ArtifactGenerator are); not translated", key, repo.GetKind())
		return
	}
	app := newApp(u.GetName(), u.GetNamespace())
	if repo.GetKind() == "OCIRepository" {
		if !t.fluxOCI(u, &app, repo) {
			return
		}
	} else {
		t.fluxGit(u, &app, repo)
	}
	app.Spec.Source.Path = srcPath
	if ns := strAt(spec, "targetNamespace"); ns != "" {
		app.Spec.Destination.Namespace = ns
		t.note(u, "spec.targetNamespace", "converge gives %s to objects that name no namespace; Flux also moves those that name another", ns)
	}
	prune, _ := spec["prune"].(bool)
	// Flux corrects drift at every interval; converge at once.
	app.Spec.SyncPolicy.Automated = &v1alpha1.AutomatedSync{Prune: prune, SelfHeal: true}
	if !t.fluxCommon(u, &app) {
		return
	}
	if force, _ := spec["force"].(bool); force {
		t.note(u, "spec.force", "annotate the objects converge.dev/force: \"true\" (or kustomize.toolkit.fluxcd.io/force: enabled) instead")
	}
	if _, ok := spec["decryption"]; ok {
		t.fluxDecryption(u, &app, mapAt(spec, "decryption"))
	}
	if _, ok := spec["postBuild"]; ok {
		t.fluxPostBuild(u, &app, mapAt(spec, "postBuild"))
	}
	if _, ok := spec["healthChecks"]; ok {
		t.note(u, "spec.healthChecks", "converge checks the health of every object it applies")
	}
	app.Spec.Source.Kustomize = t.fluxOverrides(u, spec)
	t.res.Applications = append(t.res.Applications, app)
}

// fluxOverrides carries a Kustomization's overrides over: patches (inline,
// with targets), images, components, namePrefix, nameSuffix and
// commonMetadata mean the same in spec.source.kustomize (Flux builds every
// path with Kustomize, and so does converge when they are set).
func (t *translator) fluxOverrides(u *unstructured.Unstructured, spec map[string]any) *v1alpha1.KustomizeOverrides {
	out := &v1alpha1.KustomizeOverrides{NamePrefix: strAt(spec, "namePrefix"), NameSuffix: strAt(spec, "nameSuffix")}
	out.Patches = t.kustomizePatches(u, spec, "spec")
	out.Images = fluxImages(spec)
	out.Components, _, _ = unstructured.NestedStringSlice(spec, "components")
	if cm := mapAt(spec, "commonMetadata"); cm != nil {
		labels, _, _ := unstructured.NestedStringMap(cm, "labels")
		ann, _, _ := unstructured.NestedStringMap(cm, "annotations")
		if len(labels) > 0 || len(ann) > 0 {
			out.CommonMetadata = &v1alpha1.CommonMetadata{Labels: labels, Annotations: ann}
		}
	}
	if out.NamePrefix == "" && out.NameSuffix == "" && len(out.Patches) == 0 && len(out.Images) == 0 && len(out.Components) == 0 && out.CommonMetadata == nil {
		return nil
	}
	return out
}

// fluxImages spells a Flux images list (name, newName, newTag, digest) as
// converge's image overrides.
func fluxImages(k map[string]any) []string {
	var out []string
	images, _, _ := unstructured.NestedSlice(k, "images")
	for _, img := range images {
		m, _ := img.(map[string]any)
		out = append(out, imageString(strAt(m, "name"), strAt(m, "newName"), strAt(m, "newTag"), strAt(m, "digest")))
	}
	return out
}

// sigstoreTrustSecret is the Secret a keyless verification Flux made
// against Sigstore's public-good instance is translated to name: converge
// fetches no trust root, so the user puts Fulcio's and Rekor's there.
const sigstoreTrustSecret = "sigstore-trust"

// fluxVerify translates an OCIRepository's verify: cosign with keys, or
// keyless with matchOIDCIdentity (its trust material in a Secret, named);
// notation is named and the app not translated, so that nothing
// unverified syncs in its place.
func (t *translator) fluxVerify(repo *unstructured.Unstructured) (*v1alpha1.OCIVerification, bool) {
	v := mapAt(repo.Object, "spec", "verify")
	if v == nil {
		return nil, true
	}
	if strAt(v, "provider") != "cosign" {
		t.note(repo, "spec.verify.provider", "%s is not supported (cosign is); not translated, so that nothing unverified syncs in its place", strAt(v, "provider"))
		return nil, false
	}
	secret := strAt(v, "secretRef", "name")
	ids, _, _ := unstructured.NestedSlice(v, "matchOIDCIdentity")
	if len(ids) == 0 {
		if secret == "" {
			t.note(repo, "spec.verify", "cosign without keys nor matchOIDCIdentity; not translated, so that nothing unverified syncs in its place")
			return nil, false
		}
		return &v1alpha1.OCIVerification{Provider: "cosign", SecretRef: v1alpha1.LocalObjectReference{Name: secret}}, true
	}
	out := &v1alpha1.OCIVerification{Provider: "cosign", SecretRef: v1alpha1.LocalObjectReference{Name: sigstoreTrustSecret}}
	for _, id := range ids {
		m, _ := id.(map[string]any)
		out.MatchOIDCIdentity = append(out.MatchOIDCIdentity, v1alpha1.OIDCIdentityMatch{Issuer: strAt(m, "issuer"), Subject: strAt(m, "subject")})
	}
	t.note(repo, "spec.verify.matchOIDCIdentity", "carried over as keyless verification against Secret %s, which you create with Sigstore's fulcio.crt.pem and rekor.pub (converge fetches no trust root; until it exists the app is refused, never unverified)", sigstoreTrustSecret)
	return out, true
}

// fluxOCI makes an OCIRepository (of manifests) the app's source: its
// URL, tag, semver or digest, credentials, insecure flag and layer
// selector (extract) mean the same; a cert Secret is named. Verification
// with cosign keys or keyless identities is carried over (fluxVerify); a
// layer copied whole is not, and nor is the app.
func (t *translator) fluxOCI(u *unstructured.Unstructured, app *v1alpha1.Application, repo *unstructured.Unstructured) bool {
	verify, ok := t.fluxVerify(repo)
	if !ok {
		return false
	}
	o := &v1alpha1.OCISource{Verify: verify, URL: str(repo, "spec", "url"), Tag: str(repo, "spec", "ref", "tag"), Semver: str(repo, "spec", "ref", "semver"), Digest: str(repo, "spec", "ref", "digest")}
	if o.Digest != "" {
		o.Tag, o.Semver = "", ""
	} else if o.Semver != "" {
		o.Tag = ""
	}
	if s := str(repo, "spec", "secretRef", "name"); s != "" {
		o.SecretRef = &v1alpha1.LocalObjectReference{Name: s}
	}
	o.Insecure, _ = mapAt(repo.Object, "spec")["insecure"].(bool)
	if ls := mapAt(repo.Object, "spec", "layerSelector"); ls != nil {
		switch op := strAt(ls, "operation"); {
		case strAt(ls, "mediaType") == "":
			t.note(repo, "spec.layerSelector", "no mediaType; not carried over")
		case op != "" && op != "extract":
			// The copied layer is a file converge cannot sync from:
			// nothing would render in its place.
			t.note(repo, "spec.layerSelector.operation", "%s is not supported (converge extracts the selected layer); not translated", op)
			return false
		default:
			o.LayerSelector = &v1alpha1.OCILayerSelector{MediaType: strAt(ls, "mediaType"), Operation: op}
		}
	}
	for _, f := range []string{"certSecretRef", "provider", "serviceAccountName"} {
		if _, ok := mapAt(repo.Object, "spec")[f]; ok {
			t.note(repo, "spec."+f, "not supported; not carried over")
		}
	}
	app.Spec.Source.OCI = o
	if d := duration(str(repo, "spec", "interval")); d != nil {
		app.Spec.SyncPolicy.Interval = d
	}
	return true
}

// fluxDecryption carries SOPS decryption over: the same provider and
// Secret (age keys in *.agekey, OpenPGP in *.asc, as Flux reads them). A
// Kustomization without a Secret decrypts with the controller's own
// identity (cloud KMS), which converge has not: named, not carried.
func (t *translator) fluxDecryption(u *unstructured.Unstructured, app *v1alpha1.Application, d map[string]any) {
	if p := strAt(d, "provider"); p != "sops" {
		t.note(u, "spec.decryption.provider", "%q: converge decrypts sops only; not carried over", p)
		return
	}
	name := strAt(mapAt(d, "secretRef"), "name")
	if name == "" {
		t.note(u, "spec.decryption.secretRef", "none: Flux then decrypts with its controller's cloud KMS identity, which converge does not; give a Secret of age (.agekey) or OpenPGP (.asc) keys")
		return
	}
	app.Spec.Decryption = &v1alpha1.Decryption{Provider: "sops", SecretRef: v1alpha1.LocalObjectReference{Name: name}}
}

// fluxPostBuild carries a Kustomization's variable substitution over:
// substitute and substituteFrom mean the same in spec.source.postBuild.
func (t *translator) fluxPostBuild(u *unstructured.Unstructured, app *v1alpha1.Application, pb map[string]any) {
	out := &v1alpha1.PostBuild{}
	if subst, ok := pb["substitute"].(map[string]any); ok {
		out.Substitute = map[string]string{}
		for k, v := range subst {
			s, ok := v.(string)
			if !ok {
				s = fmt.Sprint(v)
			}
			out.Substitute[k] = s
		}
	}
	from, _, _ := unstructured.NestedSlice(pb, "substituteFrom")
	for i, f := range from {
		m, _ := f.(map[string]any)
		kind, name := strAt(m, "kind"), strAt(m, "name")
		if (kind != "ConfigMap" && kind != "Secret") || name == "" {
			t.note(u, fmt.Sprintf("spec.postBuild.substituteFrom[%d]", i), "want kind ConfigMap or Secret and a name; not carried over")
			continue
		}
		optional, _ := m["optional"].(bool)
		out.SubstituteFrom = append(out.SubstituteFrom, v1alpha1.SubstituteReference{Kind: kind, Name: name, Optional: optional})
	}
	app.Spec.Source.PostBuild = out
}

// fluxHelmRelease translates a HelmRelease and its source.
func (t *translator) fluxHelmRelease(u *unstructured.Unstructured) {
	spec := mapAt(u.Object, "spec")
	app := newApp(u.GetName(), u.GetNamespace())
	if !t.fluxChart(u, spec, &app) {
		return
	}
	target := strAt(spec, "targetNamespace")
	if target != "" {
		app.Spec.Destination.Namespace = target
	}
	// Flux names the release <targetNamespace>-<name> when it has a target
	// namespace: keep that name, so the objects keep theirs.
	release := strAt(spec, "releaseName")
	if release == "" && target != "" {
		release = target + "-" + u.GetName()
	}
	if release != "" && release != app.Name {
		helmOf(&app).ReleaseName = release
	}
	t.fluxValues(u, spec, &app)
	t.fluxPostRenderers(u, spec, &app)
	if create, _, _ := unstructured.NestedBool(spec, "install", "createNamespace"); create {
		app.Spec.SyncPolicy.CreateNamespace = true
	}
	if sn := strAt(spec, "storageNamespace"); sn != "" {
		t.note(u, "spec.storageNamespace", "converge keeps no Helm release Secrets; its record lives beside the Application")
	}
	// Flux reverts drift at every interval (with driftDetection) and
	// upgrades on change; converge does both at once.
	app.Spec.SyncPolicy.Automated = &v1alpha1.AutomatedSync{Prune: true, SelfHeal: true}
	if !t.fluxCommon(u, &app) {
		return
	}
	t.res.Applications = append(t.res.Applications, app)
}

// fluxPostRenderers carries Kustomize post-renderers over: inline
// patches (with their targets) and images; the deprecated patch kinds are
// named.
func (t *translator) fluxPostRenderers(u *unstructured.Unstructured, spec map[string]any, app *v1alpha1.Application) {
	list, _, _ := unstructured.NestedSlice(spec, "postRenderers")
	for i, pr := range list {
		field := fmt.Sprintf("spec.postRenderers[%d].kustomize", i)
		k := mapAt(pr.(map[string]any), "kustomize")
		if k == nil {
			t.note(u, fmt.Sprintf("spec.postRenderers[%d]", i), "only kustomize post-renderers exist; not carried over")
			continue
		}
		out := &v1alpha1.KustomizeOverrides{Patches: t.kustomizePatches(u, k, field), Images: fluxImages(k)}
		for _, f := range []string{"patchesStrategicMerge", "patchesJson6902"} {
			if _, ok := k[f]; ok {
				t.note(u, field+"."+f, "deprecated by Flux and not supported: write it as a patch in patches; not carried over")
			}
		}
		helmOf(app).PostRenderers = append(helmOf(app).PostRenderers, v1alpha1.HelmPostRenderer{Kustomize: out})
	}
}

// imageString spells a Kustomize image override as `kustomize edit set
// image` takes it.
func imageString(name, newName, newTag, digest string) string {
	s := name
	if newName != "" {
		s += "=" + newName
	}
	if newTag != "" {
		s += ":" + newTag
	}
	if digest != "" {
		s += "@" + digest
	}
	return s
}

func helmOf(app *v1alpha1.Application) *v1alpha1.HelmSource {
	if app.Spec.Source.Helm == nil {
		app.Spec.Source.Helm = &v1alpha1.HelmSource{}
	}
	return app.Spec.Source.Helm
}

// fluxChart translates a HelmRelease's chart (from a HelmRepository, a
// GitRepository, or a chartRef to an OCIRepository or to an
// ArtifactGenerator's ExternalArtifact) into app's source; false
// when it cannot (named).
func (t *translator) fluxChart(u *unstructured.Unstructured, spec map[string]any, app *v1alpha1.Application) bool {
	chartSpec := mapAt(spec, "chart", "spec")
	switch {
	case chartSpec != nil:
		src, key := t.source(u, "spec", "chart", "spec", "sourceRef")
		switch {
		case src == nil:
			t.note(u, "spec.chart.spec.sourceRef", "%s is not among the manifests; not translated", key)
			return false
		case src.GetKind() == "HelmRepository":
			t.fluxRepositoryChart(u, src, chartSpec, app)
		case src.GetKind() == "GitRepository":
			t.fluxGitChart(u, src, chartSpec, app)
		default:
			t.note(u, "spec.chart.spec.sourceRef", "a %s source is not supported; not translated", src.GetKind())
			return false
		}
	case strAt(mapAt(spec, "chartRef"), "kind") == "ExternalArtifact":
		// A chart directory an ArtifactGenerator copies from a Git or
		// OCI source: that directory of that source.
		ref := mapAt(spec, "chartRef")
		ns := strAt(ref, "namespace")
		if ns == "" {
			ns = u.GetNamespace()
		}
		repo, chartPath, ok := t.artifactSource(u, "spec.chartRef", ns, strAt(ref, "name"), "")
		if !ok {
			return false
		}
		if repo.GetKind() == "OCIRepository" {
			if !t.fluxOCI(u, app, repo) {
				return false
			}
		} else {
			t.fluxGit(u, app, repo)
		}
		app.Spec.Source.Path = chartPath
	case mapAt(spec, "chartRef") != nil:
		src, key := t.source(u, "spec", "chartRef")
		if src == nil || src.GetKind() != "OCIRepository" {
			t.note(u, "spec.chartRef", "%s is not among the manifests (OCIRepository and ArtifactGenerator chart references are translated); not translated", key)
			return false
		}
		url := strings.TrimSuffix(str(src, "spec", "url"), "/")
		dir, name := path.Split(strings.TrimPrefix(url, "oci://"))
		version := str(src, "spec", "ref", "semver")
		if version == "" {
			version = str(src, "spec", "ref", "tag")
		}
		app.Spec.Source.Chart = &v1alpha1.ChartSource{RepoURL: "oci://" + strings.TrimSuffix(dir, "/"), Name: name, Version: version,
			Digest: str(src, "spec", "ref", "digest")}
		if s := str(src, "spec", "secretRef", "name"); s != "" {
			app.Spec.Source.Chart.SecretRef = &v1alpha1.LocalObjectReference{Name: s}
		}
	default:
		t.note(u, "spec.chart", "no chart; not translated")
		return false
	}
	return true
}

// fluxRepositoryChart is a chart from a HelmRepository (OCI or not).
func (t *translator) fluxRepositoryChart(u, src *unstructured.Unstructured, chartSpec map[string]any, app *v1alpha1.Application) {
	url := str(src, "spec", "url")
	if str(src, "spec", "type") == "oci" && !strings.HasPrefix(url, "oci://") {
		url = "oci://" + url
	}
	app.Spec.Source.Chart = &v1alpha1.ChartSource{RepoURL: url, Name: strAt(chartSpec, "chart"), Version: strAt(chartSpec, "version")}
	if s := str(src, "spec", "secretRef", "name"); s != "" {
		app.Spec.Source.Chart.SecretRef = &v1alpha1.LocalObjectReference{Name: s}
	}
	if s := str(src, "spec", "certSecretRef", "name"); s != "" {
		t.note(src, "spec.certSecretRef", "put ca.crt from Secret %s into the chart's secretRef Secret", s)
	}
	if insecure, _ := mapAt(src.Object, "spec")["insecure"].(bool); insecure {
		app.Spec.Source.Chart.Insecure = true
	}
	if files, _, _ := unstructured.NestedStringSlice(chartSpec, "valuesFiles"); len(files) > 0 {
		t.note(u, "spec.chart.spec.valuesFiles", "values files inside a repository chart are not supported; converge reads values files from Git")
	}
}

// fluxGitChart is a chart in a GitRepository, with its values files.
func (t *translator) fluxGitChart(u, src *unstructured.Unstructured, chartSpec map[string]any, app *v1alpha1.Application) {
	t.fluxGit(u, app, src)
	chartPath := strings.Trim(strings.TrimPrefix(strAt(chartSpec, "chart"), "./"), "/")
	app.Spec.Source.Path = chartPath
	files, _, _ := unstructured.NestedStringSlice(chartSpec, "valuesFiles")
	for _, f := range files {
		rel, ok := relPath(chartPath, strings.TrimPrefix(f, "./"))
		if !ok {
			t.note(u, "spec.chart.spec.valuesFiles", "%s: not carried over", f)
			continue
		}
		helmOf(app).ValuesFiles = append(helmOf(app).ValuesFiles, rel)
	}
}

// fluxValues carries a HelmRelease's values and valuesFrom over: values
// from ConfigMaps and Secrets mean the same in spec.source.helm.valuesFrom,
// but for a targetPath (one value, not a file of them), which is named.
func (t *translator) fluxValues(u *unstructured.Unstructured, spec map[string]any, app *v1alpha1.Application) {
	if values := mapAt(spec, "values"); len(values) > 0 {
		raw, err := rawValues(values)
		if err != nil {
			t.note(u, "spec.values", "%v", err)
		} else {
			helmOf(app).Values = raw
		}
	}
	vf, _, _ := unstructured.NestedSlice(spec, "valuesFrom")
	for i, v := range vf {
		m, _ := v.(map[string]any)
		field := fmt.Sprintf("spec.valuesFrom[%d]", i)
		kind, name := strAt(m, "kind"), strAt(m, "name")
		switch {
		case (kind != "ConfigMap" && kind != "Secret") || name == "":
			t.note(u, field, "want kind ConfigMap or Secret and a name; not carried over")
			continue
		case strAt(m, "targetPath") != "":
			t.note(u, field+".targetPath", "setting one value from %s %s is not supported; put the values under a key as YAML; not carried over", kind, name)
			continue
		}
		optional, _ := m["optional"].(bool)
		helmOf(app).ValuesFrom = append(helmOf(app).ValuesFrom, v1alpha1.ValuesReference{Kind: kind, Name: name, Key: strAt(m, "valuesKey"), Optional: optional})
	}
}

// relPath is target relative to base (both slash paths in a repository),
// when it can be written with ".." steps.
func relPath(base, target string) (string, bool) {
	b := strings.Split(path.Clean(base), "/")
	tp := strings.Split(path.Clean(target), "/")
	if path.Clean(base) == "." {
		b = nil
	}
	n := 0
	for n < len(b) && n < len(tp) && b[n] == tp[n] {
		n++
	}
	parts := make([]string, 0, len(b)-n+len(tp)-n)
	for range b[n:] {
		parts = append(parts, "..")
	}
	parts = append(parts, tp[n:]...)
	if len(parts) == 0 {
		return "", false
	}
	return strings.Join(parts, "/"), true
}
