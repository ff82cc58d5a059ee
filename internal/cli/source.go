package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"
	"helm.sh/helm/v4/pkg/strvals"

	"converge.dev/converge/internal/render"
)

// SourceFlags say how to render a path.
type SourceFlags struct {
	Root        string
	ReleaseName string
	Values      []string
	Set         []string
}

// Bind adds the render flags to fs.
func (f *SourceFlags) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.Root, "root", "", "repository root; nothing outside it is read (default: the enclosing Git work tree, else PATH)")
	fs.StringVar(&f.ReleaseName, "release-name", "", "Helm release name (default: the chart name)")
	fs.StringArrayVar(&f.Values, "values", nil, "Helm values file, relative to the chart (repeatable)")
	fs.StringArrayVar(&f.Set, "set", nil, "Helm value as key=value (repeatable)")
}

// Render renders path for namespace.
func (f *SourceFlags) Render(ctx context.Context, path, namespace string) (*render.Result, error) {
	root, rel, err := f.locate(path)
	if err != nil {
		return nil, err
	}
	values := map[string]any{}
	for _, s := range f.Set {
		if err := strvals.ParseInto(s, values); err != nil {
			return nil, fmt.Errorf("--set %s: %w", s, err)
		}
	}
	return render.Render(ctx, render.Options{
		Root: root,
		Path: rel,
		Helm: render.HelmOptions{ReleaseName: f.ReleaseName, Namespace: namespace, ValuesFiles: f.Values, Values: values},
	})
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
