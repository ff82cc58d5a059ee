package render

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Limits bound what one render may read, use and produce.
type Limits struct {
	// MaxFileSize is the largest file read, in bytes.
	MaxFileSize int64 `json:"maxFileSize,omitempty"`
	// MaxTotalSize bounds the bytes read by one render.
	MaxTotalSize int64 `json:"maxTotalSize,omitempty"`
	// MaxFiles bounds the files read by one render.
	MaxFiles int `json:"maxFiles,omitempty"`
	// MaxMemory bounds the render process's address space, in bytes.
	MaxMemory int64 `json:"maxMemory,omitempty"`
	// MaxCPU bounds the render's CPU time.
	MaxCPU time.Duration `json:"maxCPU,omitempty"`
	// MaxTime bounds the render's wall time.
	MaxTime time.Duration `json:"maxTime,omitempty"`
	// MaxOutput bounds the rendered objects' size, in bytes, all together.
	MaxOutput int64 `json:"maxOutput,omitempty"`
	// MaxObjectSize bounds one rendered object, in bytes of JSON; the
	// apiserver stores nothing larger than about 1.5 MB.
	MaxObjectSize int `json:"maxObjectSize,omitempty"`
}

// DefaultLimits are generous for real repositories (the largest public
// charts render in well under a tenth of them) and small enough that a
// hostile one cannot exhaust the agent.
func DefaultLimits() Limits {
	return Limits{
		MaxFileSize: 8 << 20, MaxTotalSize: 256 << 20, MaxFiles: 20000,
		MaxMemory: 1 << 30, MaxCPU: time.Minute, MaxTime: 2 * time.Minute,
		MaxOutput: 256 << 20, MaxObjectSize: 1536 << 10,
	}
}

// withDefaults fills the zero fields of l from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFileSize == 0 {
		l.MaxFileSize = d.MaxFileSize
	}
	if l.MaxTotalSize == 0 {
		l.MaxTotalSize = d.MaxTotalSize
	}
	if l.MaxFiles == 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxMemory == 0 {
		l.MaxMemory = d.MaxMemory
	}
	if l.MaxCPU == 0 {
		l.MaxCPU = d.MaxCPU
	}
	if l.MaxTime == 0 {
		l.MaxTime = d.MaxTime
	}
	if l.MaxOutput == 0 {
		l.MaxOutput = d.MaxOutput
	}
	if l.MaxObjectSize == 0 {
		l.MaxObjectSize = d.MaxObjectSize
	}
	return l
}

// sandbox reads files below one root directory and nowhere else.
type sandbox struct {
	root   *os.Root
	dir    string // the root's real path, for messages and symlink checks
	limits Limits
	// decryption opens SOPS-encrypted files (see readPlain); nil when
	// the app gives no keys.
	decryption *Decryption
	files      int
	bytes      int64
}

func openSandbox(dir string, limits Limits) (*sandbox, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(real)
	if err != nil {
		return nil, err
	}
	return &sandbox{root: root, dir: real, limits: limits}, nil
}

func (s *sandbox) Close() error { return s.root.Close() }

// ErrOutsideRoot is wrapped by errors for paths and symlinks that lead
// outside the repository root.
var ErrOutsideRoot = errors.New("points outside the repository root")

// clean validates a slash-separated path relative to the root.
func clean(p string) (string, error) {
	p = path.Clean(filepath.ToSlash(p))
	if p == ".." || strings.HasPrefix(p, "../") || path.IsAbs(p) {
		return "", fmt.Errorf("%s: %w", p, ErrOutsideRoot)
	}
	return p, nil
}

// readFile reads name (relative to the root) within the limits. A symlink
// leading outside the root fails with ErrOutsideRoot.
func (s *sandbox) readFile(name string) ([]byte, error) {
	name, err := clean(name)
	if err != nil {
		return nil, err
	}
	if err := s.checkLink(name); err != nil {
		return nil, err
	}
	f, err := s.root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s: is a directory", name)
	}
	if fi.Size() > s.limits.MaxFileSize {
		return nil, fmt.Errorf("%s: file is %d bytes, over the %d byte limit", name, fi.Size(), s.limits.MaxFileSize)
	}
	s.files++
	if s.files > s.limits.MaxFiles {
		return nil, fmt.Errorf("%s: render reads more than %d files", name, s.limits.MaxFiles)
	}
	data, err := io.ReadAll(io.LimitReader(f, s.limits.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(data)) > s.limits.MaxFileSize {
		return nil, fmt.Errorf("%s: file is over the %d byte limit", name, s.limits.MaxFileSize)
	}
	s.bytes += int64(len(data))
	if s.bytes > s.limits.MaxTotalSize {
		return nil, fmt.Errorf("%s: render reads more than %d bytes in all", name, s.limits.MaxTotalSize)
	}
	return data, nil
}

// readPlain reads name as readFile does and, when it is a SOPS-encrypted
// YAML, JSON or dotenv file, decrypts it: what the render sees is plain
// text, and its MAC was checked against the file as written. Without keys
// an encrypted file is an error: rendering it would apply ciphertext.
func (s *sandbox) readPlain(name string) ([]byte, error) {
	data, err := s.readFile(name)
	if err != nil {
		return nil, err
	}
	format, ok := sopsFormat(name, data)
	if !ok {
		return data, nil
	}
	plain, err := s.decryption.decrypt(data, format)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return plain, nil
}

// checkLink fails when name, or any directory on the way to it, is a symlink
// whose target lies outside the root. os.Root refuses to follow such links
// anyway; this gives the refusal a clear message.
func (s *sandbox) checkLink(name string) error {
	full := filepath.Join(s.dir, filepath.FromSlash(name))
	real, err := filepath.EvalSymlinks(full)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // the open reports it
		}
		return err
	}
	if real != s.dir && !strings.HasPrefix(real, s.dir+string(filepath.Separator)) {
		return fmt.Errorf("%s: symlink %w (%s)", name, ErrOutsideRoot, real)
	}
	return nil
}

// stat describes name relative to the root.
func (s *sandbox) stat(name string) (fs.FileInfo, error) {
	name, err := clean(name)
	if err != nil {
		return nil, err
	}
	if err := s.checkLink(name); err != nil {
		return nil, err
	}
	return s.root.Stat(name)
}

// exists reports whether the regular file name exists below the root.
func (s *sandbox) exists(name string) bool {
	fi, err := s.stat(name)
	return err == nil && fi.Mode().IsRegular()
}

// walk calls fn for every regular file below dir (relative to the root), in
// lexical order, skipping hidden entries (.git and the like). A directory for
// which skipDir returns true is not entered. A symlink to a file is followed
// if it stays inside the root, refused if it does not; symlinked directories
// are not entered.
func (s *sandbox) walk(dir string, skipDir func(dir string) bool, fn func(name string) error) error {
	dir, err := clean(dir)
	if err != nil {
		return err
	}
	if err := s.checkLink(dir); err != nil {
		return err
	}
	return fs.WalkDir(s.root.FS(), dir, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		switch {
		case d.IsDir():
			if name != dir && skipDir != nil && skipDir(name) {
				return fs.SkipDir
			}
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			if err := s.checkLink(name); err != nil {
				return err
			}
			fi, err := s.root.Stat(name)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if !fi.Mode().IsRegular() {
				return nil
			}
		case !d.Type().IsRegular():
			return nil
		}
		return fn(name)
	})
}
