package render

import (
	"fmt"
	"path"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// renderKustomize builds the Kustomize root at dir. Kustomize reads the
// repository through the sandbox (see kustomizeFS), so it can follow bases
// anywhere below the root and nowhere else.
// Plugins and exec functions stay off, and remote bases are refused before
// the build starts.
func renderKustomize(sb *sandbox, dir string) ([]Object, error) {
	if err := refuseRemote(sb, dir, map[string]bool{}); err != nil {
		return nil, err
	}
	opts := krusty.MakeDefaultOptions()
	opts.PluginConfig = types.DisabledPluginConfig()
	opts.LoadRestrictions = types.LoadRestrictionsRootOnly
	resources, err := krusty.MakeKustomizer(opts).Run(kustomizeFS{sb}, "/"+dir)
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
	return objs, nil
}

func mustJSON(v any) []byte {
	data, err := yaml.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}

// refuseRemote fails when the kustomization in dir, or one it includes,
// refers to a remote base or resource, or inflates a chart: rendering never
// touches the network or runs a program. Kustomize would try both.
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
	var k struct {
		Resources  []string `json:"resources"`
		Bases      []string `json:"bases"`
		Components []string `json:"components"`
		HelmCharts []any    `json:"helmCharts"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if len(k.HelmCharts) > 0 {
		return fmt.Errorf("%s: helmCharts: inflating charts from Kustomize is not supported; point the app at the chart instead", name)
	}
	for _, field := range []struct {
		name    string
		entries []string
	}{{"resources", k.Resources}, {"bases", k.Bases}, {"components", k.Components}} {
		for i, e := range field.entries {
			if isRemote(e) {
				return fmt.Errorf("%s: %s[%d]: remote base %q refused: rendering reads only the repository", name, field.name, i, e)
			}
			sub := path.Join(dir, e)
			if strings.HasPrefix(sub, "../") || sub == ".." {
				continue // kustomize reports the escape
			}
			if fi, err := sb.stat(sub); err == nil && fi.IsDir() && kustomizationIn(sb, sub) != "" {
				if err := refuseRemote(sb, sub, seen); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func isRemote(ref string) bool {
	return strings.Contains(ref, "://") || strings.HasPrefix(ref, "git@") ||
		strings.Contains(ref, "?ref=") || strings.HasPrefix(ref, "github.com/") ||
		strings.HasPrefix(ref, "gitlab.com/") || strings.HasPrefix(ref, "bitbucket.org/")
}
