package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"helm.sh/helm/v4/pkg/strvals"

	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/render"
)

// SourceFlags say how to render a path.
type SourceFlags struct {
	Root        string
	ReleaseName string
	Values      []string
	Set         []string
	SetString   []string
	SetFile     []string
	ExtStr      []string
	TLAStr      []string
	JPath       []string
	KubeVersion string
	APIVersions []string
}

// Bind adds the render flags to fs.
func (f *SourceFlags) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.Root, "root", "", "repository root; nothing outside it is read (default: the enclosing Git work tree, else PATH)")
	fs.StringVar(&f.ReleaseName, "release-name", "", "Helm release name (default: --app, as the agent uses the Application's name; for build, the chart's name)")
	fs.StringArrayVar(&f.Values, "values", nil, "Helm values file, relative to the chart (repeatable)")
	fs.StringArrayVar(&f.Set, "set", nil, "Helm value as key=value (repeatable)")
	fs.StringArrayVar(&f.SetString, "set-string", nil, "Helm value as key=value, always a string (repeatable)")
	fs.StringArrayVar(&f.SetFile, "set-file", nil, "Helm value as key=path: the content of a file inside the root (repeatable)")
	fs.StringArrayVar(&f.ExtStr, "ext-str", nil, "Jsonnet external variable as key=value (repeatable)")
	fs.StringArrayVar(&f.TLAStr, "tla-str", nil, "Jsonnet top-level argument as key=value (repeatable)")
	fs.StringArrayVar(&f.JPath, "jpath", nil, "Jsonnet library directory, relative to the root (repeatable)")
	fs.StringVar(&f.KubeVersion, "kube-version", "", "Helm .Capabilities.KubeVersion (default: the cluster's; for build, Helm's)")
	fs.StringArrayVar(&f.APIVersions, "api-versions", nil, "Helm .Capabilities.APIVersions, as group/version or group/version/Kind (default: the cluster's; for build, Helm's) (repeatable)")
}

// keyValues parses key=value flags.
func keyValues(flag string, in []string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(in))
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: want key=value", flag, kv)
		}
		out[k] = v
	}
	return out, nil
}

// Render renders path for namespace.
func (f *SourceFlags) Render(ctx context.Context, path, namespace string) (*render.Result, error) {
	root, rel, err := f.locate(path)
	if err != nil {
		return nil, err
	}
	valuesFiles, err := f.valuesFiles(root, rel)
	if err != nil {
		return nil, err
	}
	values := map[string]any{}
	for _, s := range f.Set {
		if err := strvals.ParseInto(s, values); err != nil {
			return nil, fmt.Errorf("--set %s: %w", s, err)
		}
	}
	for _, s := range f.SetString {
		if err := strvals.ParseIntoString(s, values); err != nil {
			return nil, fmt.Errorf("--set-string %s: %w", s, err)
		}
	}
	for _, s := range f.SetFile {
		err := strvals.ParseIntoFile(s, values, func(rs []rune) (any, error) {
			return readInRoot(root, string(rs))
		})
		if err != nil {
			return nil, fmt.Errorf("--set-file %s: %w", s, err)
		}
	}
	ext, err := keyValues("ext-str", f.ExtStr)
	if err != nil {
		return nil, err
	}
	tla, err := keyValues("tla-str", f.TLAStr)
	if err != nil {
		return nil, err
	}
	cache, err := chartCache()
	if err != nil {
		return nil, err
	}
	return cache.Render(ctx, render.Options{
		Root: root,
		Path: rel,
		Helm: render.HelmOptions{ReleaseName: f.ReleaseName, Namespace: namespace, ValuesFiles: valuesFiles, Values: values,
			KubeVersion: f.KubeVersion, APIVersions: f.APIVersions},
		Jsonnet: render.JsonnetOptions{ExtVars: ext, TLAs: tla, LibPaths: f.JPath},
	}, 0, nil)
}

// chartCache is where the CLI keeps the chart dependencies it fetches:
// $XDG_CACHE_HOME/converge/charts (or the system's equivalent).
func chartCache() (*charts.Cache, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return charts.NewCache(filepath.Join(dir, "converge", "charts"))
}

// valuesFiles makes each --values path relative to the chart at rel: a
// path that names a file from the working directory (or an absolute one)
// is taken as such, and must be inside root; any other is relative to the
// chart already.
func (f *SourceFlags) valuesFiles(root, rel string) ([]string, error) {
	out := make([]string, 0, len(f.Values))
	chart := filepath.Join(root, filepath.FromSlash(rel))
	for _, v := range f.Values {
		if _, err := os.Stat(v); err != nil && !filepath.IsAbs(v) {
			out = append(out, v) // relative to the chart; the render checks it
			continue
		}
		abs, err := filepath.Abs(v)
		if err == nil {
			abs, err = filepath.EvalSymlinks(abs)
		}
		if err != nil {
			return nil, fmt.Errorf("--values %s: %w", v, err)
		}
		r, err := filepath.Rel(root, abs)
		if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
			return nil, fmt.Errorf("--values %s: outside the root %s; nothing outside it is read (see --root)", v, root)
		}
		fromChart, err := filepath.Rel(chart, abs)
		if err != nil {
			return nil, fmt.Errorf("--values %s: %w", v, err)
		}
		out = append(out, filepath.ToSlash(fromChart))
	}
	return out, nil
}

// locate splits path into a repository root and a path relative to it.
func (f *SourceFlags) locate(path string) (root, rel string, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", err
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return "", "", fmt.Errorf("%s: %w", path, err)
	}
	root = f.Root
	if root == "" {
		root = gitRoot(abs)
	}
	if root == "" {
		root = abs
		if fi, err := os.Stat(abs); err == nil && !fi.IsDir() {
			root = filepath.Dir(abs)
		}
	}
	if root, err = filepath.Abs(root); err != nil {
		return "", "", err
	}
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return "", "", err
	}
	if rel, err = filepath.Rel(root, abs); err != nil || rel == ".." || filepath.IsAbs(rel) || len(rel) > 2 && rel[:3] == "../" {
		return "", "", fmt.Errorf("%s is outside the root %s", path, root)
	}
	return root, filepath.ToSlash(rel), nil
}

// gitRoot returns the nearest directory at or above p holding .git, or "".
func gitRoot(p string) string {
	for dir := p; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
			return dir
		}
		if dir == filepath.Dir(dir) {
			return ""
		}
	}
}

// isChart reports whether path holds a Helm chart.
func isChart(path string) bool {
	_, err := os.Stat(filepath.Join(path, "Chart.yaml"))
	return err == nil
}

// readInRoot reads the file name (from the working directory, or relative
// to root) if it is inside root: --set-file reads nothing the render could
// not.
func readInRoot(root, name string) (string, error) {
	abs := name
	if !filepath.IsAbs(abs) {
		if _, err := os.Stat(name); err != nil {
			abs = filepath.Join(root, name)
		}
	}
	abs, err := filepath.Abs(abs)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(root, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%s is outside the root %s; nothing outside it is read (see --root)", name, root)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if fi.Size() > 1<<20 {
		return "", fmt.Errorf("%s is over 1 MiB", name)
	}
	data, err := os.ReadFile(abs)
	return string(data), err
}
