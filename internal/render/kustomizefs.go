package render

import (
	"bytes"
	"errors"
	"io/fs"
	"path"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// errReadOnly is returned by every write to the Kustomize file system.
var errReadOnly = errors.New("the repository is read-only during a render")

// kustomizeFS presents the sandbox to Kustomize as a read-only file system
// whose "/" is the repository root. Kustomize reads only what it needs, each
// read goes through the sandbox (symlink checks, size limits), and since
// ".." stops at "/", no path names anything outside the root.
type kustomizeFS struct{ sb *sandbox }

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
	fi, err := k.sb.stat(k.rel(p))
	return err == nil && fi.IsDir()
}

func (k kustomizeFS) ReadDir(p string) ([]string, error) {
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

func (k kustomizeFS) ReadFile(p string) ([]byte, error) { return k.sb.readPlain(k.rel(p)) }

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
