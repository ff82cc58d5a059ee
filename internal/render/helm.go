package render

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"
	"helm.sh/helm/v4/pkg/chart/common"
	commonutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/engine"
	"sigs.k8s.io/yaml"
)

// HelmOptions configure rendering a chart.
type HelmOptions struct {
	// ReleaseName is .Release.Name; it defaults to the chart's name.
	ReleaseName string `json:"releaseName,omitempty"`
	// Namespace is .Release.Namespace; it defaults to "default".
	Namespace string `json:"namespace,omitempty"`
	// Dependencies are chart archives (from the chart cache) for the
	// dependencies that come from a Helm repository or an OCI registry,
	// by DependencyKey. One the render needs and lacks fails it with a
	// *MissingDependenciesError, which the caller may answer by fetching.
	Dependencies map[string]string `json:"dependencies,omitempty"`
	// ValuesFiles are merged in order over the chart's values.yaml. Paths
	// are relative to the chart directory and must stay inside the
	// repository.
	ValuesFiles []string `json:"valuesFiles,omitempty"`
	// Values are merged last, over the values files.
	Values map[string]any `json:"values,omitempty"`
	// KubeVersion is .Capabilities.KubeVersion; empty means Helm's default.
	KubeVersion string `json:"kubeVersion,omitempty"`
	// APIVersions is .Capabilities.APIVersions ("group/version" and
	// "group/version/Kind"): the target cluster's, from discovery. Empty
	// means Helm's default set.
	APIVersions []string `json:"apiVersions,omitempty"`
	// IgnoreMissingValueFiles skips values files that do not exist
	// (Argo CD's option); otherwise one missing fails the render.
	IgnoreMissingValueFiles bool `json:"ignoreMissingValueFiles,omitempty"`
	// SkipCRDs leaves the chart's crds/ out.
	SkipCRDs bool `json:"skipCRDs,omitempty"`
	// PostRenderers change what the chart renders, in order, as Kustomize
	// overlays over it (Flux's postRenderers.kustomize).
	PostRenderers []KustomizeOverrides `json:"postRenderers,omitempty"`
}

// renderHelm renders the chart at dir, with its dependencies vendored under
// charts/ (as directories or .tgz archives). Templates run without a cluster
// connection, so `lookup` finds nothing; test hooks are left out, and the
// chart's crds/ are included.
func renderHelm(ctx context.Context, sb *sandbox, dir string, opts HelmOptions) ([]Object, error) {
	ch, err := loadChart(sb, dir, opts.Dependencies, 0)
	if err != nil {
		return nil, err
	}
	return renderChart(ctx, sb, ch, dir, dir, opts)
}

// renderArchive renders a chart archive from the chart cache (a chart from
// a Helm repository or an OCI registry), with values files from dir in the
// repository.
func renderArchive(ctx context.Context, sb *sandbox, archivePath, dir string, opts HelmOptions) ([]Object, error) {
	ch, err := loadArchive(archivePath)
	if err != nil {
		return nil, err
	}
	for _, dep := range ch.Metadata.Dependencies {
		found := false
		for _, d := range ch.Dependencies() {
			found = found || d.Name() == dep.Name
		}
		if !found {
			return nil, fmt.Errorf("chart %s %s: dependency %q (%s) is not packaged in the chart", ch.Name(), ch.Metadata.Version, dep.Name, dep.Repository)
		}
	}
	return renderChart(ctx, sb, ch, "chart:"+ch.Name(), dir, opts)
}

// renderChart renders ch; source prefixes the templates' names in
// objects' Source, values files are relative to valuesDir.
func renderChart(ctx context.Context, sb *sandbox, ch *chart.Chart, dir, valuesDir string, opts HelmOptions) ([]Object, error) {
	values := map[string]any{}
	for _, f := range opts.ValuesFiles {
		name := path.Join(valuesDir, f)
		data, err := sb.readPlain(name)
		if opts.IgnoreMissingValueFiles && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("values file: %w", err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		values = loader.MergeMaps(values, v)
	}
	values = loader.MergeMaps(values, opts.Values)

	if err := chartutil.ProcessDependencies(ch, values); err != nil {
		return nil, fmt.Errorf("%s: dependencies: %w", dir, err)
	}
	release := common.ReleaseOptions{Name: opts.ReleaseName, Namespace: opts.Namespace, Revision: 1, IsInstall: true}
	if release.Name == "" {
		release.Name = ch.Name()
	}
	if release.Namespace == "" {
		release.Namespace = "default"
	}
	caps := common.DefaultCapabilities.Copy()
	if opts.KubeVersion != "" {
		kv, err := common.ParseKubeVersion(opts.KubeVersion)
		if err != nil {
			return nil, fmt.Errorf("helm kubeVersion: %w", err)
		}
		caps.KubeVersion = *kv
	}
	if len(opts.APIVersions) > 0 {
		caps.APIVersions = common.VersionSet(opts.APIVersions)
	}
	// Schema validation is skipped: a values.schema.json may $ref a URL, and
	// rendering never touches the network.
	renderValues, err := commonutil.ToRenderValuesWithSchemaValidation(ch, values, release, caps, true)
	if err != nil {
		return nil, fmt.Errorf("%s: values: %w", dir, err)
	}
	out, err := engine.Engine{}.RenderWithContext(ctx, ch, renderValues)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}

	var objs []Object
	for _, crd := range ch.CRDObjects() {
		if opts.SkipCRDs {
			break
		}
		got, err := decode(path.Join(dir, strings.TrimPrefix(crd.Filename, ch.Name()+"/")), crd.File.Data)
		if err != nil {
			return nil, err
		}
		objs = append(objs, got...)
	}
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		base := path.Base(name)
		if strings.HasPrefix(base, "_") || base == "NOTES.txt" || !isManifestFile(name) {
			continue
		}
		// name starts with the chart's name; make it a repository path.
		source := path.Join(dir, strings.TrimPrefix(name, ch.Name()+"/"))
		got, err := decode(source, []byte(out[name]))
		if err != nil {
			return nil, err
		}
		for _, o := range got {
			if isTestHook(o) {
				continue
			}
			objs = append(objs, o)
		}
	}
	for i := range opts.PostRenderers {
		if objs, err = postRender(objs, &opts.PostRenderers[i], fmt.Sprintf("spec.source.helm.postRenderers[%d]", i)); err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// maxChartDepth bounds how deep file:// dependencies may nest (a chart
// that depends on itself is refused long before).
const maxChartDepth = 8

// Dependency is a chart dependency from a Helm repository or an OCI
// registry.
type Dependency struct {
	Name       string `json:"name"`
	Version    string `json:"version,omitempty"`
	Repository string `json:"repository"`
}

// DependencyKey identifies d in HelmOptions.Dependencies.
func DependencyKey(d Dependency) string { return d.Repository + " " + d.Name + " " + d.Version }

// MissingDependenciesError lists the dependencies a chart needs from
// repositories and the render was not given.
type MissingDependenciesError struct {
	Chart string       `json:"chart"`
	Deps  []Dependency `json:"deps"`
}

func (e *MissingDependenciesError) Error() string {
	parts := make([]string, len(e.Deps))
	for i, d := range e.Deps {
		parts[i] = fmt.Sprintf("%q (version %q, %s)", d.Name, d.Version, orNone(d.Repository))
	}
	return fmt.Sprintf("%s: dependency %s is not in charts/: vendor it (helm dependency build), or let converge fetch it (converge fetches dependencies from Helm repositories and OCI registries; a file:// dependency must be inside the repository)",
		e.Chart, strings.Join(parts, ", "))
}

func orNone(repo string) string {
	if repo == "" {
		return "no repository"
	}
	return repo
}

// loadChart loads the chart at dir with its dependencies: those vendored
// under charts/ (directories or .tgz archives), file:// ones from
// elsewhere in the repository, and those from repositories given in deps
// (fetched by the caller). The versions of Chart.lock, when there is one,
// are the ones wanted. A dependency found nowhere fails the render, naming
// it: Helm itself refuses to install a chart with one missing, and
// rendering without it would silently leave its objects out.
func loadChart(sb *sandbox, dir string, deps map[string]string, depth int) (*chart.Chart, error) {
	if depth > maxChartDepth {
		return nil, fmt.Errorf("%s: file:// dependencies nest deeper than %d charts", dir, maxChartDepth)
	}
	var files []*archive.BufferedFile
	err := sb.walk(dir, nil, func(name string) error {
		data, err := sb.readFile(name)
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(name, dir+"/")
		if dir == "." {
			rel = name
		}
		files = append(files, &archive.BufferedFile{Name: rel, Data: data})
		return nil
	})
	if err != nil {
		return nil, err
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("%s: loading chart: %w", dir, err)
	}
	vendored := map[string]bool{}
	for _, d := range ch.Dependencies() {
		vendored[d.Name()] = true
	}
	locked := map[string]string{}
	if ch.Lock != nil {
		for _, d := range ch.Lock.Dependencies {
			locked[d.Name+" "+d.Repository] = d.Version
		}
	}
	missing := &MissingDependenciesError{Chart: dir}
	for _, dep := range ch.Metadata.Dependencies {
		if vendored[dep.Name] {
			continue
		}
		local, isFile := strings.CutPrefix(dep.Repository, "file://")
		if !isFile {
			d := Dependency{Name: dep.Name, Version: dep.Version, Repository: dep.Repository}
			if v, ok := locked[dep.Name+" "+dep.Repository]; ok {
				d.Version = v
			}
			archivePath, ok := deps[DependencyKey(d)]
			if !ok {
				missing.Deps = append(missing.Deps, d)
				continue
			}
			sub, err := loadArchive(archivePath)
			if err != nil {
				return nil, fmt.Errorf("%s: dependency %q: %w", dir, dep.Name, err)
			}
			if sub.Name() != dep.Name {
				return nil, fmt.Errorf("%s: dependency %q: %s serves chart %q", dir, dep.Name, dep.Repository, sub.Name())
			}
			ch.AddDependency(sub)
			continue
		}
		if path.IsAbs(local) {
			return nil, fmt.Errorf("%s: dependency %q: %s: %w", dir, dep.Name, dep.Repository, ErrOutsideRoot)
		}
		subDir, err := clean(path.Join(dir, local))
		if err != nil {
			return nil, fmt.Errorf("%s: dependency %q: %w", dir, dep.Name, err)
		}
		if !sb.exists(path.Join(subDir, "Chart.yaml")) {
			return nil, fmt.Errorf("%s: dependency %q: %s holds no Chart.yaml", dir, dep.Name, dep.Repository)
		}
		sub, err := loadChart(sb, subDir, deps, depth+1)
		if err != nil {
			var m *MissingDependenciesError
			if errors.As(err, &m) {
				missing.Deps = append(missing.Deps, m.Deps...)
				continue
			}
			return nil, fmt.Errorf("%s: dependency %q: %w", dir, dep.Name, err)
		}
		if sub.Name() != dep.Name {
			return nil, fmt.Errorf("%s: dependency %q: %s holds chart %q", dir, dep.Name, dep.Repository, sub.Name())
		}
		if err := versionMatches(dep.Version, sub.Metadata.Version); err != nil {
			return nil, fmt.Errorf("%s: dependency %q (%s): %w", dir, dep.Name, dep.Repository, err)
		}
		ch.AddDependency(sub)
	}
	if len(missing.Deps) > 0 {
		return nil, missing
	}
	return ch, nil
}

// loadArchive loads a chart archive from the chart cache.
func loadArchive(archivePath string) (*chart.Chart, error) {
	f, err := os.Open(archivePath)
	if err != nil {
		return nil, fmt.Errorf("chart archive: %w", err)
	}
	defer f.Close()
	ch, err := loader.LoadArchive(io.LimitReader(f, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("chart archive: %w", err)
	}
	return ch, nil
}

// versionMatches checks a chart version against a dependency's constraint
// (empty matches anything).
func versionMatches(constraint, version string) error {
	if constraint == "" {
		return nil
	}
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return fmt.Errorf("version %q: %w", constraint, err)
	}
	v, err := semver.NewVersion(version)
	if err != nil {
		return fmt.Errorf("chart version %q: %w", version, err)
	}
	if !c.Check(v) {
		return fmt.Errorf("chart version %s does not match %q", version, constraint)
	}
	return nil
}

func isTestHook(o Object) bool {
	hook := o.GetAnnotations()["helm.sh/hook"]
	for _, h := range strings.Split(hook, ",") {
		if strings.HasPrefix(strings.TrimSpace(h), "test") {
			return true
		}
	}
	return false
}
