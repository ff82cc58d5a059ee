package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The image's account: the agent never runs as root.
const (
	UID  = 65532
	User = "65532:65532"
	// Home is the agent's HOME: /tmp, the one writable place under a
	// read-only root filesystem (an emptyDir in converge install).
	Home = "/tmp"
)

// skipped are the parts of a package an image does not need.
var skipped = []string{"usr/share/doc/", "usr/share/man/", "usr/share/info/", "usr/share/locale/", "usr/share/lintian/", "usr/share/bug/"}

// layerWriter writes one layer's tar: every directory once, every file
// owned by root, times fixed.
type layerWriter struct {
	tw    *tar.Writer
	seen  map[string]bool
	mtime time.Time
}

func newLayerWriter(w io.Writer, mtime time.Time) *layerWriter {
	return &layerWriter{tw: tar.NewWriter(w), seen: map[string]bool{}, mtime: mtime}
}

// dirs writes the parents of name not written yet.
func (l *layerWriter) dirs(name string) error {
	var parents []string
	for d := path.Dir(name); d != "." && d != "/" && !l.seen[d]; d = path.Dir(d) {
		parents = append(parents, d)
	}
	slices.Reverse(parents)
	for _, d := range parents {
		if err := l.add(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}, nil); err != nil {
			return err
		}
	}
	return nil
}

// add writes hdr (and body), unless a directory is already there.
func (l *layerWriter) add(hdr *tar.Header, body io.Reader) error {
	name := strings.TrimSuffix(strings.TrimPrefix(path.Clean("/"+hdr.Name), "/"), "/")
	if name == "" {
		return nil
	}
	if l.seen[name] && hdr.Typeflag == tar.TypeDir {
		return nil
	}
	if err := l.dirs(name); err != nil {
		return err
	}
	l.seen[name] = true
	h := *hdr
	h.Name = name
	if h.Typeflag == tar.TypeDir {
		h.Name += "/"
	}
	if h.Uid == 0 && h.Gid == 0 {
		h.Uname, h.Gname = "root", "root"
	}
	h.ModTime, h.AccessTime, h.ChangeTime = l.mtime, time.Time{}, time.Time{}
	h.Format = tar.FormatPAX
	h.PAXRecords = nil
	if err := l.tw.WriteHeader(&h); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if body != nil {
		if _, err := io.Copy(l.tw, body); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func (l *layerWriter) file(name string, mode int64, uid int, data []byte) error {
	return l.add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), Uid: uid, Gid: uid}, bytes.NewReader(data))
}

func (l *layerWriter) dir(name string, mode int64, uid int) error {
	return l.add(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: uid}, nil)
}

func (l *layerWriter) close() error { return l.tw.Close() }

// baseLayer unpacks pkgs (dpkg-deb's file system archive of each, no
// maintainer scripts) into one layer, and adds what those scripts would
// have made that the agent needs: its account, the CA bundle, /tmp.
func baseLayer(ctx context.Context, pkgs []Package, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	l := newLayerWriter(&buf, mtime)
	var certs [][]byte
	for _, p := range pkgs {
		out, err := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", p.File).Output()
		if err != nil {
			return nil, fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w", p.File, err)
		}
		tr := tar.NewReader(bytes.NewReader(out))
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.File, err)
			}
			name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
			if slices.ContainsFunc(skipped, func(s string) bool { return strings.HasPrefix(name+"/", s) }) {
				continue
			}
			var body []byte
			if hdr.Typeflag == tar.TypeReg {
				if body, err = io.ReadAll(tr); err != nil {
					return nil, fmt.Errorf("%s: %s: %w", p.File, name, err)
				}
				if strings.HasPrefix(name, "usr/share/ca-certificates/") && strings.HasSuffix(name, ".crt") {
					certs = append(certs, body)
				}
			}
			h := *hdr
			h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
			if err := l.add(&h, bytes.NewReader(body)); err != nil {
				return nil, err
			}
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no CA certificates in the base's packages")
	}
	// update-ca-certificates' bundle, as its default configuration makes it.
	if err := l.file("etc/ssl/certs/ca-certificates.crt", 0o644, 0, bytes.Join(certs, nil)); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name, data string
	}{
		{"etc/passwd", fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nconverge:x:%d:%d:converge:%s:/usr/sbin/nologin\n", UID, UID, Home)},
		{"etc/group", fmt.Sprintf("root:x:0:\nconverge:x:%d:\n", UID)},
		{"etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"},
	} {
		if err := l.file(f.name, 0o644, 0, []byte(f.data)); err != nil {
			return nil, err
		}
	}
	if err := l.dir("tmp", 0o1777, 0); err != nil {
		return nil, err
	}
	if err := l.dir("var/cache/converge", 0o755, UID); err != nil {
		return nil, err
	}
	if err := l.close(); err != nil {
		return nil, err
	}
	return layerOf(buf.Bytes())
}

// binaryLayer holds the converge binary.
func binaryLayer(binary []byte, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	l := newLayerWriter(&buf, mtime)
	if err := l.file(BinaryPath[1:], 0o755, 0, binary); err != nil {
		return nil, err
	}
	if err := l.close(); err != nil {
		return nil, err
	}
	return layerOf(buf.Bytes())
}

// BinaryPath is where the image has converge.
const BinaryPath = "/usr/local/bin/converge"

func layerOf(data []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}
