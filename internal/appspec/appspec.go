// Package appspec says what an Application means, in the terms the rest
// of converge works in: the fetch request for its source (credentials and
// trusted keys read from the Secrets it names), its render options and its
// destination. The agent, the CLI's preview and, later, the web UI read an
// Application through it, so they cannot disagree.
package appspec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/resid"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/source"
)

// SourceRequest builds the fetch request for a Git source of an object in
// namespace (an Application's, an ApplicationSet's Git generator's): its
// ref, its credentials and the keys its revisions must be signed with,
// read from the Secrets it names.
func SourceRequest(ctx context.Context, secrets client.Reader, namespace string, src *v1alpha1.ApplicationSource) (source.Request, error) {
	req := source.Request{URL: src.RepoURL, Insecure: src.Insecure}
	if ref := src.Ref; ref != nil {
		req.Ref = source.Ref{Branch: ref.Branch, Tag: ref.Tag, Semver: ref.Semver, Commit: ref.Commit}
	}
	if sr := src.SecretRef; sr != nil {
		var s corev1.Secret
		if err := secrets.Get(ctx, client.ObjectKey{Namespace: namespace, Name: sr.Name}, &s); err != nil {
			return req, fmt.Errorf("reading credentials Secret %s: %w", sr.Name, err)
		}
		req.Auth = &source.Auth{
			Username:   string(s.Data["username"]),
			Password:   string(s.Data["password"]),
			Identity:   s.Data["identity"],
			KnownHosts: s.Data["known_hosts"],
		}
	}
	if v := src.Verify; v != nil {
		var s corev1.Secret
		if err := secrets.Get(ctx, client.ObjectKey{Namespace: namespace, Name: v.SecretRef.Name}, &s); err != nil {
			return req, fmt.Errorf("reading trusted keys Secret %s: %w", v.SecretRef.Name, err)
		}
		trust, err := source.ParseTrustedKeys(s.Data)
		if err != nil {
			return req, fmt.Errorf("trusted keys Secret %s: %w", v.SecretRef.Name, err)
		}
		mode := v.Mode
		if mode == "" {
			mode = source.VerifyHead
		}
		req.Verify = &source.Verify{Mode: mode, Trust: trust}
	}
	return req, nil
}

// Follows reports whether src tracks a push of ref ("refs/heads/main",
// "refs/tags/v1") to a repository known by urls (normalized): a branch (main
// by default) its own ref only, a tag its tag, a semver range any tag, a
// pinned commit nothing. The webhook and image automation both ask it.
func Follows(src *v1alpha1.ApplicationSource, urls []string, ref string) bool {
	if !slices.Contains(urls, source.NormalizeURL(src.RepoURL)) {
		return false
	}
	r := src.Ref
	switch {
	case r == nil || r.Branch != "" || (r.Tag == "" && r.Semver == "" && r.Commit == ""):
		branch := "main"
		if r != nil && r.Branch != "" {
			branch = r.Branch
		}
		return ref == "refs/heads/"+branch
	case r.Tag != "":
		return ref == "refs/tags/"+r.Tag
	case r.Semver != "":
		return strings.HasPrefix(ref, "refs/tags/")
	}
	return false // a pinned commit never moves
}

// RenderOptions says how app's source renders from a checkout at root.
func RenderOptions(app *v1alpha1.Application, root string) (render.Options, error) {
	opts := render.Options{Root: root, Path: strings.TrimPrefix(app.Spec.Source.Path, "/")}
	if h := app.Spec.Source.Helm; h != nil {
		opts.Helm = render.HelmOptions{ReleaseName: h.ReleaseName, ValuesFiles: h.ValuesFiles, IgnoreMissingValueFiles: h.IgnoreMissingValueFiles,
			SkipCRDs: h.SkipCRDs, KubeVersion: h.KubeVersion, APIVersions: h.APIVersions}
		if h.Values != nil {
			if err := json.Unmarshal(h.Values.Raw, &opts.Helm.Values); err != nil {
				return opts, fmt.Errorf("spec.source.helm.values: %w", err)
			}
		}
		for i, pr := range h.PostRenderers {
			if pr.Kustomize == nil {
				return opts, fmt.Errorf("spec.source.helm.postRenderers[%d]: kustomize is the only kind", i)
			}
			k, err := kustomizeOverrides(pr.Kustomize, fmt.Sprintf("spec.source.helm.postRenderers[%d].kustomize", i))
			if err != nil {
				return opts, err
			}
			opts.Helm.PostRenderers = append(opts.Helm.PostRenderers, *k)
		}
	}
	if opts.Helm.ReleaseName == "" {
		opts.Helm.ReleaseName = app.Name
	}
	if j := app.Spec.Source.Jsonnet; j != nil {
		opts.Jsonnet = render.JsonnetOptions{ExtVars: j.ExtVars, TLAs: j.TLAs, LibPaths: j.LibPaths}
	}
	if k := app.Spec.Source.Kustomize; k != nil {
		var err error
		if opts.Kustomize, err = kustomizeOverrides(k, "spec.source.kustomize"); err != nil {
			return opts, err
		}
	}
	opts.Helm.Namespace = Destination(app)
	return opts, nil
}

// kustomizeOverrides puts an Application's Kustomize overrides in
// kustomize's terms.
func kustomizeOverrides(k *v1alpha1.KustomizeOverrides, field string) (*render.KustomizeOverrides, error) {
	out := &render.KustomizeOverrides{NamePrefix: k.NamePrefix, NameSuffix: k.NameSuffix, Namespace: k.Namespace,
		CommonLabels: k.CommonLabels, LabelWithoutSelector: k.LabelWithoutSelector, LabelIncludeTemplates: k.LabelIncludeTemplates,
		CommonAnnotations: k.CommonAnnotations, Components: k.Components}
	if k.LabelIncludeTemplates && !k.LabelWithoutSelector {
		return nil, fmt.Errorf("%s.labelIncludeTemplates: goes with labelWithoutSelector (commonLabels reach templates anyway)", field)
	}
	if m := k.CommonMetadata; m != nil {
		out.MetadataLabels, out.MetadataAnnotations = m.Labels, m.Annotations
	}
	for i, img := range k.Images {
		parsed, err := parseImage(img)
		if err != nil {
			return nil, fmt.Errorf("%s.images[%d]: %w", field, i, err)
		}
		out.Images = append(out.Images, parsed)
	}
	for _, r := range k.Replicas {
		out.Replicas = append(out.Replicas, kusttypes.Replica{Name: r.Name, Count: r.Count})
	}
	for _, p := range k.Patches {
		kp := kusttypes.Patch{Patch: p.Patch}
		if t := p.Target; t != nil {
			kp.Target = &kusttypes.Selector{ResId: resid.ResId{Gvk: resid.Gvk{Group: t.Group, Version: t.Version, Kind: t.Kind}, Name: t.Name, Namespace: t.Namespace},
				LabelSelector: t.LabelSelector, AnnotationSelector: t.AnnotationSelector}
		}
		out.Patches = append(out.Patches, kp)
	}
	return out, nil
}

// parseImage reads an image override as `kustomize edit set image` takes
// it: [name=]newName[:tag][@digest], or name:tag, or name@digest.
func parseImage(s string) (kusttypes.Image, error) {
	var img kusttypes.Image
	name, target, renamed := strings.Cut(s, "=")
	if !renamed {
		target = s
	}
	if ref, digest, ok := strings.Cut(target, "@"); ok {
		img.Digest, target = digest, ref
	}
	if i := strings.LastIndex(target, ":"); i > strings.LastIndex(target, "/") {
		img.NewTag, target = target[i+1:], target[:i]
	}
	if target == "" || (renamed && name == "") || strings.ContainsAny(s, " \t") || (img.Digest != "" && !strings.Contains(img.Digest, ":")) {
		return img, fmt.Errorf("%q: want [name=]image[:tag][@digest]", s)
	}
	if renamed {
		img.Name, img.NewName = name, target
	} else {
		img.Name = target
	}
	return img, nil
}

// Destination is the namespace given to app's objects that name none.
func Destination(app *v1alpha1.Application) string {
	if app.Spec.Destination.Namespace != "" {
		return app.Spec.Destination.Namespace
	}
	return app.Namespace
}

// Namespace is the namespace app creates and owns, if its sync policy says
// so; nil otherwise.
func Namespace(app *v1alpha1.Application) *engine.NamespaceSpec {
	sp := app.Spec.SyncPolicy
	if !sp.CreateNamespace {
		return nil
	}
	ns := &engine.NamespaceSpec{Name: Destination(app)}
	if md := sp.NamespaceMetadata; md != nil {
		ns.Labels, ns.Annotations = md.Labels, md.Annotations
	}
	return ns
}

// ChartRequest builds the fetch request for app's chart source, with its
// credentials and CA from the Secret it names. ok is false when app has
// no chart source.
func ChartRequest(ctx context.Context, secrets client.Reader, app *v1alpha1.Application) (req charts.Request, ok bool, err error) {
	cs := app.Spec.Source.Chart
	if cs == nil {
		return req, false, nil
	}
	req = charts.Request{RepoURL: cs.RepoURL, Chart: cs.Name, Version: cs.Version, Digest: cs.Digest, Insecure: cs.Insecure}
	if sr := cs.SecretRef; sr != nil {
		var s corev1.Secret
		if err := secrets.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: sr.Name}, &s); err != nil {
			return req, true, fmt.Errorf("reading chart credentials Secret %s: %w", sr.Name, err)
		}
		req.Auth = &charts.Auth{Username: string(s.Data["username"]), Password: string(s.Data["password"]), Token: string(s.Data["token"]), CA: s.Data["ca.crt"]}
	}
	return req, true, nil
}

// keyless reads keyless verification: the identities, each a valid
// regular expression, and the Sigstore trust material of s.
func keyless(field string, v *v1alpha1.OCIVerification, s *corev1.Secret) (*charts.CosignKeyless, error) {
	k := &charts.CosignKeyless{Roots: s.Data["fulcio.crt.pem"], RekorKeys: s.Data["rekor.pub"], CTLogKeys: s.Data["ctfe.pub"]}
	for name, v := range map[string][]byte{"fulcio.crt.pem": k.Roots, "rekor.pub": k.RekorKeys} {
		if len(v) == 0 {
			// Never verify without a root or without the log: a
			// certificate anyone can make, or one past its few minutes.
			return nil, fmt.Errorf("%s.secretRef: Secret %s has no %s (keyless verification needs Fulcio's certificates and Rekor's key)", field, s.Name, name)
		}
	}
	for i, id := range v.MatchOIDCIdentity {
		for part, re := range map[string]string{"issuer": id.Issuer, "subject": id.Subject} {
			if _, err := regexp.Compile(re); err != nil {
				return nil, fmt.Errorf("%s.matchOIDCIdentity[%d].%s: %w", field, i, part, err)
			}
		}
		k.Identities = append(k.Identities, charts.KeylessIdentity{Issuer: id.Issuer, Subject: id.Subject})
	}
	return k, nil
}

// ArtifactRequest builds the fetch request for app's OCI artifact source,
// with its credentials and CA from the Secret it names. ok is false when
// app has no OCI source.
func ArtifactRequest(ctx context.Context, secrets client.Reader, app *v1alpha1.Application) (req charts.ArtifactRequest, ok bool, err error) {
	o := app.Spec.Source.OCI
	if o == nil {
		return req, false, nil
	}
	req = charts.ArtifactRequest{URL: o.URL, Tag: o.Tag, Semver: o.Semver, Digest: o.Digest, Insecure: o.Insecure}
	if ls := o.LayerSelector; ls != nil {
		if ls.Operation != "" && ls.Operation != "extract" {
			return req, true, fmt.Errorf("spec.source.oci.layerSelector.operation %q: only extract is supported (the layer a gzipped tar of manifests)", ls.Operation)
		}
		req.LayerMediaType = ls.MediaType
	}
	if sr := o.SecretRef; sr != nil {
		var s corev1.Secret
		if err := secrets.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: sr.Name}, &s); err != nil {
			return req, true, fmt.Errorf("spec.source.oci.secretRef: reading Secret %s: %w", sr.Name, err)
		}
		req.Auth = &charts.Auth{Username: string(s.Data["username"]), Password: string(s.Data["password"]), Token: string(s.Data["token"]), CA: s.Data["ca.crt"]}
		if cfg, ok := s.Data[corev1.DockerConfigJsonKey]; ok {
			// A docker-registry Secret, as Flux's OCIRepository takes it.
			user, pass, err := dockerConfigAuth(cfg, o.URL)
			if err != nil {
				return req, true, fmt.Errorf("spec.source.oci.secretRef: Secret %s: %w", sr.Name, err)
			}
			req.Auth.Username, req.Auth.Password = user, pass
		}
	}
	if v := o.Verify; v != nil {
		if req.Verify, req.Keyless, err = Cosign(ctx, secrets, app.Namespace, "spec.source.oci.verify", v); err != nil {
			return req, true, err
		}
	}
	return req, true, nil
}

// Cosign reads what an OCI artifact's or image's cosign signatures must
// meet (keys, or keyless identities and trust material) from the Secret v
// names in namespace, through secrets; field names v in errors.
func Cosign(ctx context.Context, secrets client.Reader, namespace, field string, v *v1alpha1.OCIVerification) (charts.CosignKeys, *charts.CosignKeyless, error) {
	var s corev1.Secret
	if err := secrets.Get(ctx, client.ObjectKey{Namespace: namespace, Name: v.SecretRef.Name}, &s); err != nil {
		return nil, nil, fmt.Errorf("%s.secretRef: reading Secret %s: %w", field, v.SecretRef.Name, err)
	}
	if len(v.MatchOIDCIdentity) > 0 {
		k, err := keyless(field, v, &s)
		return nil, k, err
	}
	names := make([]string, 0, len(s.Data))
	for k := range s.Data {
		if strings.HasSuffix(k, ".pub") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var keys charts.CosignKeys
	for _, k := range names {
		keys = append(keys, s.Data[k])
	}
	if len(keys) == 0 {
		// Never verify against nothing: that would pass everything.
		return nil, nil, fmt.Errorf("%s.secretRef: Secret %s holds no public key (a key ending in .pub)", field, v.SecretRef.Name)
	}
	return keys, nil, nil
}

// dockerConfigAuth reads the credentials for url's registry from a
// .dockerconfigjson; errors never quote it.
func dockerConfigAuth(data []byte, url string) (string, string, error) {
	host, _, _ := strings.Cut(strings.TrimPrefix(url, "oci://"), "/")
	a, err := charts.DockerConfigAuth(data, host)
	if err != nil {
		return "", "", err
	}
	if a == nil {
		return "", "", fmt.Errorf(".dockerconfigjson has no credentials for %s", host)
	}
	return a.Username, a.Password, nil
}

// ValuesFrom reads the Helm values app takes from ConfigMaps and Secrets,
// merged in order, through c (the app's account), and a digest of them: a
// change to the values is a change to the app's source.
func ValuesFrom(ctx context.Context, c client.Reader, app *v1alpha1.Application) (map[string]any, string, error) {
	h := app.Spec.Source.Helm
	if h == nil || len(h.ValuesFrom) == 0 {
		return nil, "", nil
	}
	merged := map[string]any{}
	sum := sha256.New()
	for _, ref := range h.ValuesFrom {
		key := ref.Key
		if key == "" {
			key = "values.yaml"
		}
		var data []byte
		var found bool
		switch ref.Kind {
		case "ConfigMap":
			var cm corev1.ConfigMap
			err := c.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: ref.Name}, &cm)
			if err != nil && !(apierrors.IsNotFound(err) && ref.Optional) {
				return nil, "", fmt.Errorf("helm.valuesFrom: ConfigMap %s: %w", ref.Name, err)
			}
			v, ok := cm.Data[key]
			data, found = []byte(v), ok
		case "Secret":
			var s corev1.Secret
			err := c.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: ref.Name}, &s)
			if err != nil && !(apierrors.IsNotFound(err) && ref.Optional) {
				return nil, "", fmt.Errorf("helm.valuesFrom: Secret %s: %w", ref.Name, err)
			}
			data, found = s.Data[key]
		default:
			return nil, "", fmt.Errorf("helm.valuesFrom: kind %q: use ConfigMap or Secret", ref.Kind)
		}
		if !found {
			if ref.Optional {
				continue
			}
			return nil, "", fmt.Errorf("helm.valuesFrom: %s %s has no key %q", ref.Kind, ref.Name, key)
		}
		var v map[string]any
		if err := yaml.Unmarshal(data, &v); err != nil {
			// Not the content: it may be a Secret's.
			return nil, "", fmt.Errorf("helm.valuesFrom: %s %s key %q is not a YAML map of values", ref.Kind, ref.Name, key)
		}
		merged = loader.MergeMaps(merged, v)
		fmt.Fprintf(sum, "%s/%s/%s\x00%d\x00", ref.Kind, ref.Name, key, len(data))
		sum.Write(data)
	}
	return merged, hex.EncodeToString(sum.Sum(nil))[:12], nil
}

// maxSubstituteBytes bounds the variables of one app's postBuild (names
// and values): each is multiplied by its references in every object.
const maxSubstituteBytes = 4 << 20

// Substitution reads app's postBuild variables: each ConfigMap and Secret
// of SubstituteFrom in order (every key a variable), then Substitute, each
// overriding the ones before, read as the app's account through c. The
// digest identifies them, so that a change syncs as a new revision would;
// nil when the app has no postBuild.
func Substitution(ctx context.Context, c client.Reader, app *v1alpha1.Application) (*render.Substitution, string, error) {
	pb := app.Spec.Source.PostBuild
	if pb == nil {
		return nil, "", nil
	}
	vars := map[string]string{}
	set := func(field, name, value string) error {
		if err := render.CheckVarName(name); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		vars[name] = value
		return nil
	}
	for i, ref := range pb.SubstituteFrom {
		field := fmt.Sprintf("spec.source.postBuild.substituteFrom[%d] (%s %s)", i, ref.Kind, ref.Name)
		data := map[string]string{}
		switch ref.Kind {
		case "ConfigMap":
			var cm corev1.ConfigMap
			if err := c.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: ref.Name}, &cm); err != nil {
				if apierrors.IsNotFound(err) && ref.Optional {
					continue
				}
				return nil, "", fmt.Errorf("%s: %w", field, err)
			}
			data = cm.Data
		case "Secret":
			var s corev1.Secret
			if err := c.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: ref.Name}, &s); err != nil {
				if apierrors.IsNotFound(err) && ref.Optional {
					continue
				}
				return nil, "", fmt.Errorf("%s: %w", field, err)
			}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		default:
			return nil, "", fmt.Errorf("%s: kind %q: use ConfigMap or Secret", field, ref.Kind)
		}
		for k, v := range data {
			if err := set(field, k, v); err != nil {
				return nil, "", err
			}
		}
	}
	for k, v := range pb.Substitute {
		if err := set("spec.source.postBuild.substitute", k, v); err != nil {
			return nil, "", err
		}
	}
	names := make([]string, 0, len(vars))
	size := 0
	for k, v := range vars {
		names = append(names, k)
		size += len(k) + len(v)
	}
	if size > maxSubstituteBytes {
		return nil, "", fmt.Errorf("spec.source.postBuild: %d bytes of variables is more than the %d allowed", size, maxSubstituteBytes)
	}
	sort.Strings(names)
	sum := sha256.New()
	for _, k := range names {
		fmt.Fprintf(sum, "%s\x00%d\x00%s\x00", k, len(vars[k]), vars[k])
	}
	fmt.Fprintf(sum, "strict=%v", pb.Strict)
	return &render.Substitution{Vars: vars, Strict: pb.Strict}, hex.EncodeToString(sum.Sum(nil))[:12], nil
}

// DefaultIgnoreRules reads an agent-wide list of ignoreDifferences (YAML,
// shaped as spec.ignoreDifferences), compiled; errors name the file and
// the entry.
func DefaultIgnoreRules(data []byte, name string) ([]engine.IgnoreRule, error) {
	var list []v1alpha1.ResourceIgnoreDifferences
	if err := yaml.UnmarshalStrict(data, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	rules := make([]engine.IgnoreRule, 0, len(list))
	for i, d := range list {
		field := fmt.Sprintf("%s[%d]", name, i)
		r := engine.IgnoreRule{Group: d.Group, Kind: d.Kind, Name: d.Name, Namespace: d.Namespace,
			JSONPointers: d.JSONPointers, JQPathExpressions: d.JQPathExpressions, ManagedFieldsManagers: d.ManagedFieldsManagers, Field: field}
		if err := r.Compile(); err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// IgnoreRules are app's ignoreDifferences after defaults (the agent's,
// first), compiled: an error names the field of the first bad one.
func IgnoreRules(app *v1alpha1.Application, defaults []engine.IgnoreRule) ([]engine.IgnoreRule, error) {
	rules := append([]engine.IgnoreRule(nil), defaults...)
	for i, d := range app.Spec.IgnoreDifferences {
		field := fmt.Sprintf("spec.ignoreDifferences[%d]", i)
		rules = append(rules, engine.IgnoreRule{Group: d.Group, Kind: d.Kind, Name: d.Name, Namespace: d.Namespace,
			JSONPointers: d.JSONPointers, JQPathExpressions: d.JQPathExpressions, ManagedFieldsManagers: d.ManagedFieldsManagers, Field: field})
	}
	for i := range rules {
		if err := rules[i].Compile(); err != nil {
			return nil, err
		}
	}
	return rules, nil
}

// Inputs are what an app's render takes from the cluster besides its
// source: Helm values from ConfigMaps and Secrets and postBuild variables,
// read as the app's account. The agent and the previews read them through
// Read, so their revisions agree.
type Inputs struct {
	Values     map[string]any
	Substitute *render.Substitution
	// Decryption holds the keys of spec.decryption.
	Decryption   *render.Decryption
	valuesDigest string
	varsDigest   string
	keysDigest   string
}

// Read reads app's inputs through c.
func Read(ctx context.Context, c client.Reader, app *v1alpha1.Application) (Inputs, error) {
	var in Inputs
	var err error
	if in.Values, in.valuesDigest, err = ValuesFrom(ctx, c, app); err != nil {
		return in, err
	}
	if in.Substitute, in.varsDigest, err = Substitution(ctx, c, app); err != nil {
		return in, err
	}
	in.Decryption, in.keysDigest, err = DecryptionKeys(ctx, c, app)
	return in, err
}

// DecryptionKeys reads the keys of app's spec.decryption through c (the
// app's account): age identities from keys ending in .agekey, armored
// OpenPGP private keys from keys ending in .asc; any other key is refused
// by name. The digest identifies them (a new key may open what failed),
// nil when the app decrypts nothing.
func DecryptionKeys(ctx context.Context, c client.Reader, app *v1alpha1.Application) (*render.Decryption, string, error) {
	d := app.Spec.Decryption
	if d == nil {
		return nil, "", nil
	}
	field := "spec.decryption"
	if d.Provider != "sops" {
		return nil, "", fmt.Errorf("%s.provider %q: converge decrypts sops only", field, d.Provider)
	}
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: d.SecretRef.Name}, &s); err != nil {
		return nil, "", fmt.Errorf("%s.secretRef: Secret %s: %w", field, d.SecretRef.Name, err)
	}
	names := make([]string, 0, len(s.Data))
	for k := range s.Data {
		names = append(names, k)
	}
	sort.Strings(names)
	out := &render.Decryption{}
	sum := sha256.New()
	for _, k := range names {
		switch {
		case strings.HasSuffix(k, ".agekey"):
			out.Age = append(out.Age, string(s.Data[k]))
		case strings.HasSuffix(k, ".asc"):
			out.PGP = append(out.PGP, string(s.Data[k]))
		default:
			return nil, "", fmt.Errorf("%s.secretRef: Secret %s key %q: converge decrypts with age identities (keys ending in .agekey) and OpenPGP private keys (ending in .asc) only", field, s.Name, k)
		}
		fmt.Fprintf(sum, "%s\x00%d\x00", k, len(s.Data[k]))
		sum.Write(s.Data[k])
	}
	if len(names) == 0 {
		return nil, "", fmt.Errorf("%s.secretRef: Secret %s holds no keys", field, s.Name)
	}
	return out, hex.EncodeToString(sum.Sum(nil))[:12], nil
}

// Revision is rev with the inputs' digests: a change to them is a new
// revision ("<rev>+values:<digest>+vars:<digest>+keys:<digest>").
func (in Inputs) Revision(rev string) string {
	if in.valuesDigest != "" {
		rev += "+values:" + in.valuesDigest
	}
	if in.varsDigest != "" {
		rev += "+vars:" + in.varsDigest
	}
	if in.keysDigest != "" {
		rev += "+keys:" + in.keysDigest
	}
	return rev
}

// Apply puts the inputs into render options: the values after the values
// files and before the inline values, the variables as the substitution.
func (in Inputs) Apply(opts *render.Options) {
	if in.Values != nil {
		opts.Helm.Values = loader.MergeMaps(in.Values, opts.Helm.Values)
	}
	opts.Substitute = in.Substitute
	opts.Decryption = in.Decryption
}
