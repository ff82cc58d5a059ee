package render

import (
	"bytes"
	"errors"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// errReadOnly is returned by every write to the Kustomize file system.
var errReadOnly = errors.New("the repository is read-only during a render")

// kustomizeFS presents the sandbox to Kustomize as a read-only file system
// whose "/" is the repository root. Kustomize reads only what it needs, each
// read goes through the sandbox (symlink checks, size limits), and since
// ".." stops at "/", no path names anything outside the root.
type kustomizeFS struct {
	sb *sandbox
	// overlay, when set, is a kustomization.yaml served in overlayDir, a
	// directory the repository does not have: the app's overrides over
	// its Kustomize root (see renderKustomize).
	overlay []byte
}

// overlayDir holds the overrides' kustomization; no file of the
// repository is read there.
const overlayDir = "/.converge-overrides"

// virtual is the overlay's file at p, if p names it.
func (k kustomizeFS) virtual(p string) ([]byte, bool) {
	if k.overlay == nil || path.Clean("/"+filepath.ToSlash(p)) != overlayDir+"/kustomization.yaml" {
		return nil, false
	}
	return k.overlay, true
}

// isOverlayDir says whether p names overlayDir.
func (k kustomizeFS) isOverlayDir(p string) bool {
	return k.overlay != nil && path.Clean("/"+filepath.ToSlash(p)) == overlayDir
}

// virtualInfo describes the overlay's file and directory.
type virtualInfo struct {
	name string
	size int64
	dir  bool
}

func (v virtualInfo) Name() string { return v.name }
func (v virtualInfo) Size() int64  { return v.size }
func (v virtualInfo) Mode() fs.FileMode {
	if v.dir {
		return fs.ModeDir | 0o555
	}
	return 0o444
}
func (v virtualInfo) ModTime() time.Time { return time.Time{} }
func (v virtualInfo) IsDir() bool        { return v.dir }
func (v virtualInfo) Sys() any           { return nil }

var _ filesys.FileSystem = kustomizeFS{}

// rel maps a Kustomize path to one relative to the root.
func (k kustomizeFS) rel(p string) string {
	p = path.Clean("/" + filepath.ToSlash(p))
	if p == "/" {
		return "."
	}
	return strings.TrimPrefix(p, "/")
}

func (k kustomizeFS) Create(string) (filesys.File, error) { return nil, errReadOnly }
func (k kustomizeFS) Mkdir(string) error                  { return errReadOnly }
func (k kustomizeFS) MkdirAll(string) error               { return errReadOnly }
func (k kustomizeFS) RemoveAll(string) error              { return errReadOnly }
func (k kustomizeFS) WriteFile(string, []byte) error      { return errReadOnly }

func (k kustomizeFS) Open(p string) (filesys.File, error) {
	if data, ok := k.virtual(p); ok {
		return &readOnlyFile{Reader: bytes.NewReader(data), info: virtualInfo{name: "kustomization.yaml", size: int64(len(data))}}, nil
	}
	data, err := k.sb.readPlain(k.rel(p))
	if err != nil {
		return nil, err
	}
	fi, err := k.sb.stat(k.rel(p))
	if err != nil {
		return nil, err
	}
	return &readOnlyFile{Reader: bytes.NewReader(data), info: fi}, nil
}

func (k kustomizeFS) IsDir(p string) bool {
	if k.isOverlayDir(p) {
		return true
	}
	fi, err := k.sb.stat(k.rel(p))
	return err == nil && fi.IsDir()
}

func (k kustomizeFS) ReadDir(p string) ([]string, error) {
	if k.isOverlayDir(p) {
		return []string{"kustomization.yaml"}, nil
	}
	entries, err := fs.ReadDir(k.sb.root.FS(), k.rel(p))
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}

func (k kustomizeFS) CleanedAbs(p string) (filesys.ConfirmedDir, string, error) {
	if k.isOverlayDir(p) {
		return filesys.ConfirmedDir(overlayDir), "", nil
	}
	if _, ok := k.virtual(p); ok {
		return filesys.ConfirmedDir(overlayDir), "kustomization.yaml", nil
	}
	rel := k.rel(p)
	fi, err := k.sb.stat(rel)
	if err != nil {
		return "", "", err
	}
	abs := "/" + strings.TrimPrefix(rel, ".")
	if fi.IsDir() {
		return filesys.ConfirmedDir(path.Clean(abs)), "", nil
	}
	return filesys.ConfirmedDir(path.Dir(abs)), path.Base(abs), nil
}

func (k kustomizeFS) Exists(p string) bool {
	if _, ok := k.virtual(p); ok || k.isOverlayDir(p) {
		return true
	}
	_, err := k.sb.stat(k.rel(p))
	return err == nil
}

func (k kustomizeFS) Glob(pattern string) ([]string, error) {
	matches, err := fs.Glob(k.sb.root.FS(), k.rel(pattern))
	if err != nil {
		return nil, err
	}
	for i, m := range matches {
		matches[i] = "/" + m
	}
	return matches, nil
}

func (k kustomizeFS) ReadFile(p string) ([]byte, error) {
	if data, ok := k.virtual(p); ok {
		return data, nil
	}
	return k.sb.readPlain(k.rel(p))
}

func (k kustomizeFS) Walk(p string, walkFn filepath.WalkFunc) error {
	return fs.WalkDir(k.sb.root.FS(), k.rel(p), func(name string, d fs.DirEntry, err error) error {
		var fi fs.FileInfo
		if err == nil {
			fi, err = d.Info()
		}
		return walkFn("/"+strings.TrimPrefix(name, "."), fi, err)
	})
}

type readOnlyFile struct {
	*bytes.Reader
	info fs.FileInfo
}

func (f *readOnlyFile) Write([]byte) (int, error)  { return 0, errReadOnly }
func (f *readOnlyFile) Close() error               { return nil }
func (f *readOnlyFile) Stat() (fs.FileInfo, error) { return f.info, nil }
