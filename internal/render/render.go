package render

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Kind is the kind of source a path holds.
type Kind string

// Source kinds, chosen by the files at the path.
const (
	KindDirectory Kind = "directory"
	KindKustomize Kind = "kustomize"
	KindHelm      Kind = "helm"
	// KindJsonnet is a directory (or file) holding .jsonnet files, with
	// or without plain manifests beside them.
	KindJsonnet Kind = "jsonnet"
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
	// Isolation says which renders may share a worker process: only those
	// of the same Isolation (the agent: an app's namespace and account).
	Isolation string `json:"-"`
	// Queue is whose turn the render waits for: "" for the agent's own
	// apps and the CLI (they may use every render slot), a tenant's name
	// otherwise (at most half the slots: one tenant's slow renders never
	// hold back another's).
	Queue string `json:"-"`
	// ReadRoots, when set, confine the render's worker with Landlock,
	// where the kernel has it: it may read only below these directories
	// (the agent's checkouts and charts), read and write only its own
	// temporary directory, connect and bind no TCP port, and signal or
	// reach (abstract Unix sockets) nothing outside itself. The agent's
	// ServiceAccount token, its kubeconfig and the rest of the file
	// system are out of its reach. Without Landlock (before Linux 5.13,
	// or where it is off) only the rlimits and the in-process refusals
	// hold; LandlockABI says which. Workers are kept per ReadRoots too.
	ReadRoots []string `json:"-"`
	// Kustomize, when set, overrides the Kustomize root at Path (refused
	// for any other kind of source).
	Kustomize *KustomizeOverrides `json:"kustomize,omitempty"`
	// Decryption, when set, opens SOPS-encrypted manifests, Kustomize
	// inputs and values files as they are read (see Decryption).
	Decryption *Decryption `json:"decryption,omitempty"`
	// Substitute, when set, replaces ${var} references in what renders
	// (Flux's postBuild), inside the worker and its limits.
	Substitute *Substitution `json:"substitute,omitempty"`
	// Helm options apply when Path holds a chart.
	Helm HelmOptions `json:"helm,omitempty"`
	// Jsonnet options apply to .jsonnet files.
	Jsonnet JsonnetOptions `json:"jsonnet,omitempty"`
	// Chart, when set, is a chart archive from the chart cache, rendered
	// instead of what Path holds; Helm's values files are then relative to
	// Path in the repository. The archive is trusted to be the one its
	// digest named (the cache checked it), not to be small or well formed.
	Chart string `json:"chart,omitempty"`
}

// Result is a desired set.
type Result struct {
	Kind    Kind
	Objects []Object
	// Warnings are for people: files that were skipped and why.
	Warnings []string
	// Nested are the Kustomize roots and Helm charts below a plain
	// directory, skipped by its render (paths relative to the root):
	// converge migrate renders each in turn.
	Nested []string
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
	sb.decryption = opts.Decryption

	p, err := clean(opts.Path)
	if err != nil {
		return nil, err
	}
	if opts.Chart != "" && opts.Kustomize != nil {
		return nil, errors.New("spec.source.kustomize: the source is a chart, not a Kustomize root")
	}
	if opts.Chart != "" {
		objs, err := renderArchive(ctx, sb, opts.Chart, p, opts.Helm)
		if err == nil {
			err = substitute(objs, opts.Substitute)
		}
		if err != nil {
			return nil, err
		}
		res := &Result{Kind: KindHelm}
		if res.Objects, err = finish(objs, limits.MaxObjectSize); err != nil {
			return nil, err
		}
		return res, nil
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
	case !fi.IsDir() && isJsonnetFile(p):
		res.Kind = KindJsonnet
		objs, err = renderJsonnet(sb, p, opts.Jsonnet)
	case !fi.IsDir():
		res.Kind = KindDirectory
		objs, err = renderFile(sb, p)
	case sb.exists(path.Join(p, "Chart.yaml")):
		res.Kind = KindHelm
		objs, err = renderHelm(ctx, sb, p, opts.Helm)
	case kustomizationIn(sb, p) != "":
		res.Kind = KindKustomize
		objs, err = renderKustomize(sb, p, opts.Kustomize)
	default:
		res.Kind = KindDirectory
		var d dirRender
		d, err = renderDirectory(sb, p, opts.Jsonnet)
		objs, res.Warnings, res.Nested = d.objs, d.warnings, d.nested
		if d.jsonnet {
			res.Kind = KindJsonnet
		}
	}
	if err == nil && opts.Kustomize != nil && res.Kind != KindKustomize {
		// Flux builds every path with Kustomize: the overrides apply to
		// what the manifests or Jsonnet render.
		objs, err = postRender(objs, opts.Kustomize, "spec.source.kustomize")
	}
	if err == nil {
		err = substitute(objs, opts.Substitute)
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
	data, err := sb.readPlain(name)
	if err != nil {
		return nil, err
	}
	return decode(name, data)
}

// otherFormats are formats of desired state that converge does not render,
// by file extension. A directory holding them and nothing converge renders
// fails, naming them, rather than rendering nothing.
var otherFormats = map[string]string{
	".cue":   "CUE",
	".dhall": "Dhall",
	".pkl":   "Pkl",
	".k":     "KCL",
	".ncl":   "Nickel",
	".star":  "Starlark (ytt)",
	".hcl":   "HCL",
	".tf":    "Terraform",
}

// dirRender is what rendering a plain directory found.
type dirRender struct {
	objs     []Object
	warnings []string
	nested   []string
	// jsonnet says .jsonnet files were evaluated.
	jsonnet bool
}

// renderDirectory reads every YAML and JSON file below dir and evaluates
// every .jsonnet file (.libsonnet files are only imported). Subdirectories
// that are charts or Kustomize roots are skipped (they are rendered by
// pointing an app at them), as are files none of whose documents is a
// Kubernetes object; both are reported as warnings. A directory that
// yields no object but holds files of a format converge does not render
// fails, naming them.
func renderDirectory(sb *sandbox, dir string, jopts JsonnetOptions) (dirRender, error) {
	var d dirRender
	others := map[string][]string{}
	skip := func(sub string) bool {
		if sb.exists(path.Join(sub, "Chart.yaml")) {
			d.warnings = append(d.warnings, sub+": skipped: a Helm chart inside a plain directory")
			d.nested = append(d.nested, sub)
			return true
		}
		if kustomizationIn(sb, sub) != "" {
			d.warnings = append(d.warnings, sub+": skipped: a Kustomize root inside a plain directory")
			d.nested = append(d.nested, sub)
			return true
		}
		return false
	}
	err := sb.walk(dir, skip, func(name string) error {
		if isJsonnetFile(name) {
			got, err := renderJsonnet(sb, name, jopts)
			if err != nil {
				return err
			}
			d.jsonnet = true
			d.objs = append(d.objs, got...)
			return nil
		}
		if f, ok := otherFormats[strings.ToLower(path.Ext(name))]; ok {
			others[f] = append(others[f], name)
			return nil
		}
		if !isManifestFile(name) {
			return nil
		}
		got, err := renderFile(sb, name)
		if err != nil {
			return err
		}
		var manifests, notObjects []Object
		for _, o := range got {
			if isManifest(o.Unstructured) {
				manifests = append(manifests, o)
			} else {
				notObjects = append(notObjects, o)
			}
		}
		switch {
		case len(manifests) == 0 && len(notObjects) > 0:
			d.warnings = append(d.warnings, name+": skipped: holds no Kubernetes objects")
		case len(notObjects) > 0:
			return fmt.Errorf("%s: document has no apiVersion and no kind", notObjects[0].Source)
		}
		d.objs = append(d.objs, manifests...)
		return nil
	})
	if err != nil {
		return d, err
	}
	formats := make([]string, 0, len(others))
	for f := range others {
		formats = append(formats, f)
	}
	sort.Strings(formats)
	for _, f := range formats {
		files := others[f]
		if len(d.objs) == 0 {
			return d, fmt.Errorf("%s holds no manifests converge renders, but %d %s file(s) (%s): converge renders YAML, JSON, Jsonnet, Kustomize and Helm; render %s to YAML first",
				orDot(dir), len(files), f, strings.Join(firstN(files, 5), ", "), f)
		}
		d.warnings = append(d.warnings, fmt.Sprintf("skipped %d %s file(s) (%s): converge does not render %s", len(files), f, strings.Join(firstN(files, 5), ", "), f))
	}
	return d, nil
}

func firstN(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
}

func orDot(p string) string {
	if p == "" {
		return "."
	}
	return p
}
