package source

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strconv"
	"strings"
)

// CheckoutLimits bound what one checkout may write.
type CheckoutLimits struct {
	// MaxEntries bounds the files, links and directories of one tree.
	MaxEntries int
	// MaxBytes bounds the bytes written for one tree.
	MaxBytes int64
}

// DefaultCheckoutLimits fit large monorepos and stop a hostile tree from
// filling the agent's disk.
func DefaultCheckoutLimits() CheckoutLimits {
	return CheckoutLimits{MaxEntries: 200000, MaxBytes: 2 << 30}
}

// treeEntry is one line of `git ls-tree -r -t -z`.
type treeEntry struct {
	mode, typ, id, path string
}

// errUnsafeTree is wrapped by every refusal of a tree's shape.
var errUnsafeTree = errors.New("unsafe tree")

// parseTree parses `git ls-tree -r -t -z --full-tree` output and checks
// the tree's shape: every path is relative, clean and free of "." and ".."
// components; no path appears twice; and no entry lies below a path that
// is not a directory (a symlink "a" with a file "a/b", the shape that makes
// a naive extraction write through the link). Entries come back sorted so
// that directories precede what they hold.
func parseTree(out []byte, limits CheckoutLimits) ([]treeEntry, error) {
	var entries []treeEntry
	for len(out) > 0 {
		line, rest, _ := bytes.Cut(out, []byte{0})
		out = rest
		meta, name, ok := bytes.Cut(line, []byte{'\t'})
		f := strings.Fields(string(meta))
		if !ok || len(f) != 3 {
			return nil, fmt.Errorf("unexpected ls-tree line %q", line)
		}
		p := string(name)
		if err := checkTreePath(p); err != nil {
			return nil, err
		}
		entries = append(entries, treeEntry{mode: f[0], typ: f[1], id: f[2], path: p})
		if len(entries) > limits.MaxEntries {
			return nil, fmt.Errorf("the tree has more than %d entries", limits.MaxEntries)
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].path < entries[j].path })
	kind := make(map[string]string, len(entries))
	for _, e := range entries {
		if _, dup := kind[e.path]; dup {
			return nil, fmt.Errorf("%w: %q appears twice", errUnsafeTree, e.path)
		}
		kind[e.path] = e.typ
	}
	for _, e := range entries {
		for dir := path.Dir(e.path); dir != "."; dir = path.Dir(dir) {
			if t, ok := kind[dir]; ok && t != "tree" {
				return nil, fmt.Errorf("%w: %q lies below %q, which is not a directory", errUnsafeTree, e.path, dir)
			}
		}
	}
	return entries, nil
}

// checkTreePath refuses names git itself would refuse with fsck, and any
// that could leave the checkout.
func checkTreePath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || strings.ContainsRune(p, 0) {
		return fmt.Errorf("%w: path %q", errUnsafeTree, p)
	}
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".", "..":
			return fmt.Errorf("%w: path %q", errUnsafeTree, p)
		}
	}
	return nil
}

// extract writes the tree of commit into dir (which must exist and be
// empty), reading objects straight from the repository: no `git archive`,
// no checkout, so no attribute, filter or hook can run. Every write goes
// through an os.Root on dir, which refuses any path that leaves it, links
// included. Submodules are left out.
func extract(ctx context.Context, g *gitRunner, bare, commit, dir string, limits CheckoutLimits) error {
	out, err := g.run(ctx, bare, "ls-tree", "-r", "-t", "-z", "--full-tree", commit+"^{tree}")
	if err != nil {
		return err
	}
	entries, err := parseTree(out, limits)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()

	var blobs []treeEntry
	for _, e := range entries {
		switch e.typ {
		case "tree":
			if err := root.Mkdir(e.path, 0o755); err != nil {
				return fmt.Errorf("%s: %w", e.path, err)
			}
		case "blob":
			blobs = append(blobs, e)
		}
	}
	if len(blobs) == 0 {
		return nil
	}
	env, err := g.env()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "cat-file", "--batch")
	killGroup(cmd)
	cmd.Dir, cmd.Env = bare, env
	var ids bytes.Buffer
	for _, b := range blobs {
		ids.WriteString(b.id + "\n")
	}
	cmd.Stdin = &ids
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	writeErr := writeBlobs(root, bufio.NewReaderSize(pipe, 64<<10), blobs, limits)
	if writeErr != nil {
		cancel()
	}
	waitErr := cmd.Wait()
	if writeErr != nil {
		return writeErr
	}
	if waitErr != nil {
		return fmt.Errorf("git cat-file: %v: %s", waitErr, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// writeBlobs reads `git cat-file --batch` answers for blobs, in order, and
// writes each as a file or a symlink below root.
func writeBlobs(root *os.Root, r *bufio.Reader, blobs []treeEntry, limits CheckoutLimits) error {
	var total int64
	for _, b := range blobs {
		header, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading object %s: %w", b.id, err)
		}
		f := strings.Fields(header)
		if len(f) != 3 || f[0] != b.id || f[1] != "blob" {
			return fmt.Errorf("%s: unexpected object header %q", b.path, strings.TrimSpace(header))
		}
		size, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("%s: bad object size %q", b.path, f[2])
		}
		if total += size; total > limits.MaxBytes {
			return fmt.Errorf("the tree is larger than %d bytes", limits.MaxBytes)
		}
		body := io.LimitReader(r, size)
		switch b.mode {
		case "120000":
			target, err := io.ReadAll(body)
			if err != nil {
				return err
			}
			if err := root.Symlink(string(target), b.path); err != nil {
				return fmt.Errorf("%s: %w", b.path, err)
			}
		default:
			perm := os.FileMode(0o644)
			if b.mode == "100755" {
				perm = 0o755
			}
			// O_EXCL: the path is new; nothing already there (a link
			// above all) is ever opened for writing.
			w, err := root.OpenFile(b.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
			if err != nil {
				return fmt.Errorf("%s: %w", b.path, err)
			}
			n, err := io.Copy(w, body)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err == nil && n != size {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				return fmt.Errorf("%s: %w", b.path, err)
			}
		}
		if nl, err := r.ReadByte(); err != nil || nl != '\n' {
			return fmt.Errorf("%s: malformed cat-file output", b.path)
		}
	}
	return nil
}
