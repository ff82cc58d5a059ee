package render

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
)

// Kind is the kind of source a path holds.
type Kind string

// Source kinds, chosen by the files at the path.
const (
	KindDirectory Kind = "directory"
	KindKustomize Kind = "kustomize"
	KindHelm      Kind = "helm"
)

// Options say what to render.
type Options struct {
	// Root is the repository root. Nothing outside it is read.
	Root string `json:"root"`
	// Path is what to render, relative to Root: a directory, or one manifest
	// file. Empty means the root itself.
	Path string `json:"path,omitempty"`
	// Limits bound the render; zero fields take DefaultLimits.
	Limits Limits `json:"limits,omitempty"`
	// Helm options apply when Path holds a chart.
	Helm HelmOptions `json:"helm,omitempty"`
}

// Result is a desired set.
type Result struct {
	Kind    Kind
	Objects []Object
	// Warnings are for people: files that were skipped and why.
	Warnings []string
}

// kustomizationNames are the file names that make a directory a Kustomize
// root, in kustomize's own order of preference.
var kustomizationNames = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// Render renders opts.Path into a desired set. The result is sorted by
// group, kind, namespace and name, and holds no duplicates. An empty result is
// not an error here; the engine decides what an empty set may do.
//
// The render runs in a child process within opts.Limits (see
// renderIsolated): a hostile repository can fail its own render, with an
// error wrapping ErrLimitExceeded, and nothing else.
func Render(ctx context.Context, opts Options) (*Result, error) {
	opts.Limits = opts.Limits.withDefaults()
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("opening repository root: %w", err)
	}
	opts.Root = root
	return renderIsolated(ctx, opts)
}

// renderInProcess is Render in this process, as the worker runs it.
func renderInProcess(ctx context.Context, opts Options) (*Result, error) {
	limits := opts.Limits.withDefaults()
	sb, err := openSandbox(opts.Root, limits)
	if err != nil {
		return nil, fmt.Errorf("opening repository root: %w", err)
	}
	defer sb.Close()

	p, err := clean(opts.Path)
	if err != nil {
		return nil, err
	}
	fi, err := sb.stat(p)
	if err != nil {
		if errors.Is(err, ErrOutsideRoot) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	res := &Result{}
	var objs []Object
	switch {
	case !fi.IsDir():
		res.Kind = KindDirectory
		objs, err = renderFile(sb, p)
	case sb.exists(path.Join(p, "Chart.yaml")):
		res.Kind = KindHelm
		objs, err = renderHelm(ctx, sb, p, opts.Helm)
	case kustomizationIn(sb, p) != "":
		res.Kind = KindKustomize
		objs, err = renderKustomize(sb, p)
	default:
		res.Kind = KindDirectory
		objs, res.Warnings, err = renderDirectory(sb, p)
	}
	if err != nil {
		return nil, err
	}
	if res.Objects, err = finish(objs, limits.MaxObjectSize); err != nil {
		return nil, err
	}
	return res, nil
}

func kustomizationIn(sb *sandbox, dir string) string {
	for _, n := range kustomizationNames {
		if sb.exists(path.Join(dir, n)) {
			return n
		}
	}
	return ""
}

func isManifestFile(name string) bool {
	switch strings.ToLower(path.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

func renderFile(sb *sandbox, name string) ([]Object, error) {
	data, err := sb.readFile(name)
	if err != nil {
		return nil, err
	}
	return decode(name, data)
}

// renderDirectory reads every YAML and JSON file below dir. Subdirectories
// that are charts or Kustomize roots are skipped (they are rendered by
// pointing an app at them), as are files none of whose documents is a
// Kubernetes object; both are reported as warnings.
func renderDirectory(sb *sandbox, dir string) ([]Object, []string, error) {
	var objs []Object
	var warnings []string
	skip := func(d string) bool {
		if sb.exists(path.Join(d, "Chart.yaml")) {
			warnings = append(warnings, d+": skipped: a Helm chart inside a plain directory")
			return true
		}
		if kustomizationIn(sb, d) != "" {
			warnings = append(warnings, d+": skipped: a Kustomize root inside a plain directory")
			return true
		}
		return false
	}
	err := sb.walk(dir, skip, func(name string) error {
		if !isManifestFile(name) {
			return nil
		}
		got, err := renderFile(sb, name)
		if err != nil {
			return err
		}
		var manifests, others []Object
		for _, o := range got {
			if isManifest(o.Unstructured) {
				manifests = append(manifests, o)
			} else {
				others = append(others, o)
			}
		}
		switch {
		case len(manifests) == 0 && len(others) > 0:
			warnings = append(warnings, name+": skipped: holds no Kubernetes objects")
		case len(others) > 0:
			return fmt.Errorf("%s: document has no apiVersion and no kind", others[0].Source)
		}
		objs = append(objs, manifests...)
		return nil
	})
	return objs, warnings, err
}
