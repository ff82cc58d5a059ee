package render

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"strconv"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// renderKustomize builds the Kustomize root at dir. Kustomize reads the
// repository through the sandbox (see kustomizeFS), so it can follow bases
// anywhere below the root and nowhere else.
// Plugins and exec functions stay off, and remote bases are refused before
// the build starts.
func renderKustomize(sb *sandbox, dir string, over *KustomizeOverrides) ([]Object, error) {
	seen := map[string]bool{}
	if err := refuseRemote(sb, dir, seen); err != nil {
		return nil, err
	}
	opts := krusty.MakeDefaultOptions()
	opts.PluginConfig = types.DisabledPluginConfig()
	opts.LoadRestrictions = types.LoadRestrictionsRootOnly
	kfs, target := kustomizeFS{sb: sb}, "/"+dir
	if over != nil {
		overlay, err := over.overlay(sb, dir, seen)
		if err != nil {
			return nil, err
		}
		kfs.overlay, target = overlay, overlayDir
	}
	resources, err := krusty.MakeKustomizer(opts).Run(kfs, target)
	if err != nil {
		return nil, fmt.Errorf("%s: kustomize: %s", dir, strings.ReplaceAll(err.Error(), "'/", "'"))
	}
	source := path.Join(dir, kustomizationIn(sb, dir))
	objs := make([]Object, 0, resources.Size())
	for _, r := range resources.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		u, err := decodeDocument(mustJSON(m))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		for _, o := range u {
			objs = append(objs, Object{Unstructured: o, Source: source})
		}
	}
	over.setMetadata(objs)
	return objs, nil
}

// KustomizeOverrides change what a Kustomize root builds (Argo CD's
// source.kustomize), applied as an overlay over it that the repository
// does not have; in kustomize's own types.
type KustomizeOverrides struct {
	Images       []types.Image     `json:"images,omitempty"`
	NamePrefix   string            `json:"namePrefix,omitempty"`
	NameSuffix   string            `json:"nameSuffix,omitempty"`
	Namespace    string            `json:"namespace,omitempty"`
	CommonLabels map[string]string `json:"commonLabels,omitempty"`
	// LabelWithoutSelector puts CommonLabels on objects only (templates
	// too with LabelIncludeTemplates), never on selectors.
	LabelWithoutSelector  bool              `json:"labelWithoutSelector,omitempty"`
	LabelIncludeTemplates bool              `json:"labelIncludeTemplates,omitempty"`
	CommonAnnotations     map[string]string `json:"commonAnnotations,omitempty"`
	Replicas              []types.Replica   `json:"replicas,omitempty"`
	Patches               []types.Patch     `json:"patches,omitempty"`
	// Components are relative to the root.
	Components []string `json:"components,omitempty"`
	// MetadataLabels and MetadataAnnotations are set on each object's own
	// metadata after the build (Flux's commonMetadata): no selector or
	// template is touched.
	MetadataLabels      map[string]string `json:"metadataLabels,omitempty"`
	MetadataAnnotations map[string]string `json:"metadataAnnotations,omitempty"`
}

// withAll is m with add's keys set (m itself when add is empty).
func withAll(m, add map[string]string) map[string]string {
	if len(add) == 0 {
		return m
	}
	if m == nil {
		m = make(map[string]string, len(add))
	}
	maps.Copy(m, add)
	return m
}

// kustomization is the part of the overlay that does not depend on where
// it is built: everything but its resources and components.
func (o *KustomizeOverrides) kustomization(field string) (types.Kustomization, error) {
	k := types.Kustomization{
		TypeMeta:          types.TypeMeta{APIVersion: types.KustomizationVersion, Kind: types.KustomizationKind},
		NamePrefix:        o.NamePrefix,
		NameSuffix:        o.NameSuffix,
		Namespace:         o.Namespace,
		CommonAnnotations: o.CommonAnnotations,
		Images:            o.Images,
		Replicas:          o.Replicas,
	}
	if o.LabelWithoutSelector {
		if len(o.CommonLabels) > 0 {
			k.Labels = []types.Label{{Pairs: o.CommonLabels, IncludeTemplates: o.LabelIncludeTemplates}}
		}
	} else {
		k.CommonLabels = o.CommonLabels
	}
	for i, p := range o.Patches {
		if p.Path != "" || p.Patch == "" {
			return k, fmt.Errorf("%s.patches[%d]: give the patch inline (patch), not a path", field, i)
		}
		k.Patches = append(k.Patches, p)
	}
	return k, nil
}

// setMetadata sets o's MetadataLabels and MetadataAnnotations on each
// object, replacing values of the same keys.
func (o *KustomizeOverrides) setMetadata(objs []Object) {
	if o == nil || (len(o.MetadataLabels) == 0 && len(o.MetadataAnnotations) == 0) {
		return
	}
	for _, obj := range objs {
		obj.SetLabels(withAll(obj.GetLabels(), o.MetadataLabels))
		obj.SetAnnotations(withAll(obj.GetAnnotations(), o.MetadataAnnotations))
	}
}

// overlay is the kustomization that applies o over the root at dir. Its
// components must be below the repository root and refer to nothing
// remote; patches are inline only.
func (o *KustomizeOverrides) overlay(sb *sandbox, dir string, seen map[string]bool) ([]byte, error) {
	k, err := o.kustomization("spec.source.kustomize")
	if err != nil {
		return nil, err
	}
	k.Resources = []string{".." + path.Clean("/"+dir)}
	for i, c := range o.Components {
		p, err := clean(path.Join(dir, c))
		if err != nil {
			return nil, fmt.Errorf("spec.source.kustomize.components[%d]: %w", i, err)
		}
		if kustomizationIn(sb, p) == "" {
			return nil, fmt.Errorf("spec.source.kustomize.components[%d]: %s is not a Kustomize component (no kustomization.yaml)", i, p)
		}
		if err := refuseRemote(sb, p, seen); err != nil {
			return nil, err
		}
		k.Components = append(k.Components, ".."+path.Clean("/"+p))
	}
	return yaml.Marshal(k)
}

// postRender runs a post-renderer over objs: a Kustomize overlay over
// them, built in memory (no repository file is read), components refused.
// Each object keeps the source it came from (an annotation carries it
// through the build, whatever the overlay renames).
func postRender(objs []Object, o *KustomizeOverrides, field string) ([]Object, error) {
	if len(o.Components) > 0 {
		return nil, fmt.Errorf("%s.components: components apply to a Kustomize root only", field)
	}
	mem := filesys.MakeFsInMemory()
	var buf strings.Builder
	for i, obj := range objs {
		marked := obj.DeepCopy()
		ann := marked.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[sourceMark] = strconv.Itoa(i)
		marked.SetAnnotations(ann)
		data, err := yaml.Marshal(marked.Object)
		if err != nil {
			return nil, err
		}
		buf.WriteString("---\n")
		buf.Write(data)
	}
	if err := mem.WriteFile("/rendered.yaml", []byte(buf.String())); err != nil {
		return nil, err
	}
	k, err := o.kustomization(field)
	if err != nil {
		return nil, err
	}
	k.Resources = []string{"rendered.yaml"}
	data, err := yaml.Marshal(k)
	if err != nil {
		return nil, err
	}
	if err := mem.WriteFile("/kustomization.yaml", data); err != nil {
		return nil, err
	}
	opts := krusty.MakeDefaultOptions()
	opts.PluginConfig = types.DisabledPluginConfig()
	opts.LoadRestrictions = types.LoadRestrictionsRootOnly
	resources, err := krusty.MakeKustomizer(opts).Run(mem, "/")
	if err != nil {
		return nil, fmt.Errorf("%s: kustomize: %v", field, err)
	}
	out := make([]Object, 0, resources.Size())
	for _, r := range resources.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		us, err := decodeDocument(mustJSON(m))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		for _, u := range us {
			src := field
			ann := u.GetAnnotations()
			if i, err := strconv.Atoi(ann[sourceMark]); err == nil && i >= 0 && i < len(objs) {
				src = objs[i].Source
			}
			delete(ann, sourceMark)
			if len(ann) == 0 {
				ann = nil
			}
			u.SetAnnotations(ann)
			out = append(out, Object{Unstructured: u, Source: src})
		}
	}
	o.setMetadata(out)
	return out, nil
}

// sourceMark carries an object's index through a post-render.
const sourceMark = "render.converge.dev/source-index"

func mustJSON(v any) []byte {
	data, err := yaml.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}

// refuseRemote fails when the kustomization in dir, or one it includes,
// refers to anything but a file or directory in the repository, or
// inflates a chart: rendering never touches the network or runs a
// program. Kustomize would fetch http(s) URLs named in any field and run
// git for anything that looks like a repository, in spellings no list of
// hosts can cover; so the check is the other way round: every reference
// that is not inline content must exist below the root. The worker
// process has no network and no git either (see renderIsolated).
func refuseRemote(sb *sandbox, dir string, seen map[string]bool) error {
	if seen[dir] {
		return nil
	}
	seen[dir] = true
	name := path.Join(dir, kustomizationIn(sb, dir))
	data, err := sb.readFile(name)
	if err != nil {
		return err
	}
	var k map[string]any
	if err := yaml.Unmarshal(data, &k); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, field := range []string{"helmCharts", "helmChartInflationGenerator", "helmGlobals"} {
		if k[field] != nil {
			return fmt.Errorf("%s: %s: inflating charts from Kustomize is not supported; point the app at the chart instead", name, field)
		}
	}
	for _, ref := range kustomizeReferences(k) {
		local := path.Join(dir, ref.path)
		fi, err := sb.stat(local)
		if errors.Is(err, ErrOutsideRoot) || strings.HasPrefix(path.Clean(local), "../") || path.Clean(local) == ".." {
			return fmt.Errorf("%s: %s: %q leads outside the repository root; nothing outside it is read (in push mode, --root sets the root; the agent's is the repository): %w", name, ref.field, ref.path, ErrOutsideRoot)
		}
		if err != nil {
			return fmt.Errorf("%s: %s: %q is not a file or directory in the repository: remote references are refused (rendering reads only the repository), and a local path must exist", name, ref.field, ref.path)
		}
		if fi.IsDir() && kustomizationIn(sb, local) != "" {
			if err := refuseRemote(sb, local, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

// reference is a path a kustomization names, and the field naming it.
type reference struct {
	field, path string
}

// kustomizeReferences lists every file or directory reference in a
// kustomization, in every field Kustomize loads from: resources, bases,
// components, crds, configurations, openapi, generators' files and envs,
// patches of every kind, replacements, and transformer, generator and
// validator entries. Inline content (a patch or a plugin configuration
// written into the kustomization) is not a reference.
func kustomizeReferences(k map[string]any) []reference {
	var refs []reference
	add := func(field string, v any) {
		if s, ok := v.(string); ok && s != "" && !strings.Contains(s, "\n") {
			refs = append(refs, reference{field, s})
		}
	}
	list := func(field string) []any {
		l, _ := k[field].([]any)
		return l
	}
	for _, field := range []string{"resources", "bases", "components", "crds", "configurations",
		"patchesStrategicMerge", "transformers", "generators", "validators"} {
		for i, e := range list(field) {
			add(fmt.Sprintf("%s[%d]", field, i), e)
		}
	}
	if o, ok := k["openapi"].(map[string]any); ok {
		add("openapi.path", o["path"])
	}
	for _, field := range []string{"configMapGenerator", "secretGenerator"} {
		for i, g := range list(field) {
			gm, _ := g.(map[string]any)
			for _, sub := range []string{"files", "envs"} {
				l, _ := gm[sub].([]any)
				for j, f := range l {
					s, _ := f.(string)
					if _, p, ok := strings.Cut(s, "="); ok {
						s = p
					}
					add(fmt.Sprintf("%s[%d].%s[%d]", field, i, sub, j), s)
				}
			}
			add(fmt.Sprintf("%s[%d].env", field, i), gm["env"])
		}
	}
	for _, field := range []string{"patches", "patchesJson6902", "replacements"} {
		for i, p := range list(field) {
			pm, _ := p.(map[string]any)
			add(fmt.Sprintf("%s[%d].path", field, i), pm["path"])
		}
	}
	return refs
}
