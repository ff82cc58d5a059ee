package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// The base of the image is Debian's own packages, fetched by apt from the
// archive the machine is configured for (signed indexes, checked hashes)
// and unpacked without running their maintainer scripts: what the agent
// runs (git, OpenSSH's client, the CA certificates) and what they link.

// BasePackages are what the agent needs besides itself: internal/source
// drives git, over HTTPS (libcurl) and SSH (ssh).
var BasePackages = []string{"git", "openssh-client", "ca-certificates"}

// notNeeded are dependencies left out of the base, and what cuts each one
// off is that nothing the agent runs uses it: perl serves git's scripted
// commands (send-email, svn, instaweb), never fetch, cat-file, commit or
// push; the rest only run package maintainer scripts, which an image does
// not run (dpkg, debconf, adduser, passwd: the image's accounts are
// written directly; openssl: update-ca-certificates, whose bundle the
// image builds itself); git-man and install-info are documentation.
var notNeeded = map[string]bool{
	"perl": true, "perl-base": true, "perl-modules-5.36": true, "libperl5.36": true, "liberror-perl": true,
	"dpkg": true, "debconf": true, "cdebconf": true, "adduser": true, "passwd": true, "openssl": true,
	"git-man": true, "install-info": true,
}

// Package is one Debian package in the image.
type Package struct {
	Name         string `json:"name"`
	Version      string `json:"version"`
	Architecture string `json:"architecture"`
	// SHA256 is the .deb file's.
	SHA256 string `json:"sha256"`
	// File is where the .deb was downloaded to.
	File string `json:"-"`
}

// apt runs apt-get and apt-cache for one architecture with a state of its
// own under dir: the machine's package sources and trusted keys, none of
// its installed packages, no root needed, nothing of the machine's
// changed.
type apt struct {
	dir  string
	arch string
}

func newAPT(cacheDir, arch string) (*apt, error) {
	a := &apt{dir: filepath.Join(cacheDir, "apt-"+arch), arch: arch}
	for _, d := range []string{"lists/partial", "archives/partial", "etc"} {
		if err := os.MkdirAll(filepath.Join(a.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(a.dir, "etc/status"), nil, 0o644); err != nil {
		return nil, err
	}
	return a, a.sources()
}

// sources are the machine's Debian sources (debian.sources, as Debian's
// installer and container images write it), else the Debian archive for
// the machine's release; never another repository the machine has added.
func (a *apt) sources() error {
	dir := filepath.Join(a.dir, "sources")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := os.ReadFile("/etc/apt/sources.list.d/debian.sources")
	name := "debian.sources"
	if err != nil {
		codename, err := osRelease("VERSION_CODENAME")
		if err != nil {
			return fmt.Errorf("no /etc/apt/sources.list.d/debian.sources and no release to name: %w", err)
		}
		name = "debian.list"
		data = fmt.Appendf(nil, "deb http://deb.debian.org/debian %[1]s main\ndeb http://deb.debian.org/debian %[1]s-updates main\ndeb http://deb.debian.org/debian-security %[1]s-security main\n", codename)
	}
	if err := os.WriteFile(filepath.Join(dir, "none.list"), nil, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), data, 0o644)
}

// osRelease reads key from /etc/os-release.
func osRelease(key string) (string, error) {
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok && v != "" {
			return strings.Trim(v, `"`), nil
		}
	}
	return "", fmt.Errorf("/etc/os-release: no %s", key)
}

func (a *apt) options() []string {
	return []string{
		"-o", "APT::Architecture=" + a.arch,
		"-o", "APT::Architectures::=" + a.arch,
		"-o", "Dir::State::Lists=" + filepath.Join(a.dir, "lists"),
		"-o", "Dir::State::status=" + filepath.Join(a.dir, "etc/status"),
		"-o", "Dir::Cache=" + a.dir,
		"-o", "Dir::Cache::archives=" + filepath.Join(a.dir, "archives"),
		"-o", "Dir::Etc::SourceParts=" + filepath.Join(a.dir, "sources"),
		"-o", "Dir::Etc::SourceList=" + filepath.Join(a.dir, "sources", "none.list"),
		"-o", "Debug::NoLocking=1",
		"-o", "Dir::Etc::Preferences=/dev/null",
		"-o", "Dir::Etc::PreferencesParts=" + filepath.Join(a.dir, "etc"),
		"-q",
	}
}

func (a *apt) run(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, append(a.options(), args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s (%s): %w\n%s", name, strings.Join(args, " "), a.arch, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// update fetches the package indexes for the architecture.
func (a *apt) update(ctx context.Context) error {
	_, err := a.run(ctx, a.dir, "apt-get", "update")
	return err
}

// closure is roots and everything they depend on (Depends, Pre-Depends;
// the first installable alternative), but for notNeeded, sorted.
func (a *apt) closure(ctx context.Context, roots []string) ([]string, error) {
	seen := map[string]bool{}
	next := slices.Clone(roots)
	for _, r := range roots {
		seen[r] = true
	}
	for len(next) > 0 {
		out, err := a.run(ctx, a.dir, "apt-cache", append([]string{"depends", "--no-recommends", "--no-suggests", "--no-conflicts",
			"--no-breaks", "--no-replaces", "--no-enhances"}, next...)...)
		if err != nil {
			return nil, err
		}
		next = nil
		for _, dep := range parseDepends(out) {
			if !seen[dep] && !notNeeded[dep] {
				seen[dep] = true
				next = append(next, dep)
			}
		}
	}
	out := make([]string, 0, len(seen))
	for name := range seen {
		out = append(out, name)
	}
	slices.Sort(out)
	return out, nil
}

// parseDepends reads `apt-cache depends` output: for each package, its
// Depends and PreDepends, one per group of alternatives (the first that
// is a real package, or the first provider of a virtual one).
func parseDepends(out []byte) []string {
	var deps []string
	var group []string // alternatives so far, the last one pending
	providers := map[string][]string{}
	var lastVirtual string
	flush := func() {
		for _, alt := range group {
			if name, virtual := strings.CutPrefix(alt, "<"); virtual {
				if p := providers[strings.TrimSuffix(name, ">")]; len(p) > 0 {
					deps = append(deps, p[0])
					group = nil
					return
				}
				continue
			}
			deps = append(deps, alt)
			break
		}
		group = nil
	}
	pendingOr := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "    "): // a provider of the virtual package above
			if lastVirtual != "" {
				providers[lastVirtual] = append(providers[lastVirtual], stripArch(strings.TrimSpace(line)))
			}
		case strings.HasPrefix(line, "  ") || strings.HasPrefix(line, " |"):
			field, value, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, " |")), ": ")
			if !ok || (field != "Depends" && field != "PreDepends") {
				continue
			}
			if !pendingOr && len(group) > 0 {
				flush()
			}
			value = stripArch(value)
			lastVirtual = ""
			if strings.HasPrefix(value, "<") {
				lastVirtual = strings.Trim(value, "<>")
				value = "<" + lastVirtual + ">"
			}
			group = append(group, value)
			pendingOr = strings.HasPrefix(line, " |")
		default: // the next package
			if len(group) > 0 {
				flush()
			}
			pendingOr, lastVirtual = false, ""
		}
	}
	if len(group) > 0 {
		flush()
	}
	return deps
}

// stripArch drops an architecture qualifier (perl:any).
func stripArch(s string) string {
	if i := strings.IndexByte(s, ':'); i > 0 && !strings.HasPrefix(s, "<") {
		return s[:i]
	}
	if strings.HasPrefix(s, "<") {
		if i := strings.IndexByte(s, ':'); i > 0 {
			return s[:i] + ">"
		}
	}
	return s
}

// download fetches the candidate version of each package, unless a file
// of the same name and hash is cached, and describes it.
func (a *apt) download(ctx context.Context, names []string) ([]Package, error) {
	dir := filepath.Join(a.dir, "debs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Each line: 'URL' FILE SIZE SHA256:HEX. Asked from an empty directory:
	// apt-get leaves out the files it finds in its working directory.
	query := filepath.Join(a.dir, "query")
	if err := os.MkdirAll(query, 0o755); err != nil {
		return nil, err
	}
	out, err := a.run(ctx, query, "apt-get", append([]string{"--print-uris", "download"}, names...)...)
	if err != nil {
		return nil, err
	}
	var pkgs []Package
	var missing []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || !strings.HasPrefix(f[3], "SHA256:") {
			return nil, fmt.Errorf("apt-get --print-uris download: unexpected line %q", line)
		}
		file := filepath.Join(dir, filepath.Base(f[1]))
		want := strings.TrimPrefix(f[3], "SHA256:")
		name, _, _ := strings.Cut(filepath.Base(f[1]), "_")
		if sum, err := fileSHA256(file); err != nil || sum != want {
			missing = append(missing, name)
		}
		pkgs = append(pkgs, Package{Name: name, SHA256: want, File: file})
	}
	if len(pkgs) != len(names) {
		return nil, fmt.Errorf("apt-get --print-uris download: %d files for %d packages", len(pkgs), len(names))
	}
	if len(missing) > 0 {
		if _, err := a.run(ctx, dir, "apt-get", append([]string{"download"}, missing...)...); err != nil {
			return nil, err
		}
	}
	for i := range pkgs {
		p := &pkgs[i]
		if sum, err := fileSHA256(p.File); err != nil || sum != p.SHA256 {
			return nil, fmt.Errorf("%s: not the file apt's index describes (%v)", p.File, err)
		}
		out, err := exec.CommandContext(ctx, "dpkg-deb", "--show", "--showformat", "${Package}\t${Version}\t${Architecture}", p.File).Output()
		if err != nil {
			return nil, fmt.Errorf("dpkg-deb --show %s: %w", p.File, err)
		}
		f := strings.Split(string(out), "\t")
		if len(f) != 3 || f[0] != p.Name {
			return nil, fmt.Errorf("%s: not the package %s (%q)", p.File, p.Name, out)
		}
		p.Version, p.Architecture = f[1], f[2]
	}
	return pkgs, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// DebianPackages resolves and downloads the base's packages for arch
// (Debian's name: amd64, arm64), caching apt's state and the files under
// cacheDir.
func DebianPackages(ctx context.Context, cacheDir, arch string) ([]Package, error) {
	a, err := newAPT(cacheDir, arch)
	if err != nil {
		return nil, err
	}
	if err := a.update(ctx); err != nil {
		return nil, err
	}
	names, err := a.closure(ctx, BasePackages)
	if err != nil {
		return nil, err
	}
	return a.download(ctx, names)
}
