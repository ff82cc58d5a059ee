package cluster

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Versions of the components the local cluster is built from. They must match
// go.mod; the cache key includes go.mod and go.sum, so a version bump always
// rebuilds.
const (
	KubernetesVersion = "v1.37.2"
	EtcdVersion       = "v3.7.0"
	KwokVersion       = "v0.8.0"
)

// controlPlane lists the components held by the multi-call k8s binary. Each
// gets a symlink of its own name in the bin directory.
var controlPlane = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"}

// Builder compiles the cluster binaries from the tools/localcluster module and
// caches them under CacheDir, keyed by versions and sources.
type Builder struct {
	// ModuleDir is the tools/localcluster module root.
	ModuleDir string
	// CacheDir holds one directory per build key.
	CacheDir string
	// Log receives progress for people.
	Log io.Writer
}

// key names the cache entry: component versions plus a hash of everything
// that decides the binaries' content.
func (b *Builder) key() (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), runtime.GOOS, runtime.GOARCH, ldflags())
	for _, f := range []string{"go.mod", "go.sum", "cmd/k8s/main.go", "cmd/kwok/main.go"} {
		data, err := os.ReadFile(filepath.Join(b.ModuleDir, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:12]
	return fmt.Sprintf("k8s-%s_etcd-%s_kwok-%s_%s", KubernetesVersion, EtcdVersion, KwokVersion, sum), nil
}

// BinDir returns the directory that holds (or will hold) the binaries.
func (b *Builder) BinDir() (string, error) {
	key, err := b.key()
	if err != nil {
		return "", err
	}
	return filepath.Join(b.CacheDir, key, "bin"), nil
}

// Ensure returns the bin directory, building the binaries first when the
// cache has none for the current key. A build prints a progress line at most
// every ten seconds.
func (b *Builder) Ensure(ctx context.Context) (string, error) {
	dir, err := b.BinDir()
	if err != nil {
		return "", err
	}
	if complete(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "bin-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)

	total := b.countPackages(ctx)
	fmt.Fprintf(b.Log, "Building the local cluster (Kubernetes %s, etcd %s, kwok %s) into %s\n", KubernetesVersion, EtcdVersion, KwokVersion, dir)
	fmt.Fprintf(b.Log, "A cold build takes about 15 minutes on 2 cores; later runs reuse it.\n")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-v", "-ldflags="+ldflags(), "-o", tmp+string(os.PathSeparator), "./cmd/k8s", "./cmd/kwok")
	cmd.Dir = b.ModuleDir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	var tail []string
	compiled, last := 0, time.Now()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, " ") || strings.HasPrefix(line, "#") {
			// Not a package path: a compiler message. Keep it for the error.
			tail = append(tail, line)
			if len(tail) > 40 {
				tail = tail[1:]
			}
			continue
		}
		compiled++
		if time.Since(last) >= 10*time.Second {
			last = time.Now()
			fmt.Fprintf(b.Log, "  %s compiled %d of at most %d packages (%s)\n", time.Since(start).Round(time.Second), compiled, total, line)
		}
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("building the local cluster failed: %w\n%s", err, strings.Join(tail, "\n"))
	}
	for _, name := range controlPlane {
		if err := os.Symlink("k8s", filepath.Join(tmp, name)); err != nil {
			return "", err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	fmt.Fprintf(b.Log, "Built the local cluster in %s\n", time.Since(start).Round(time.Second))
	return dir, nil
}

// ldflags strip debug information (a faster link, smaller binaries) and
// stamp the versions that a `go build` outside Kubernetes' own scripts
// leaves at v0.0.0: discovery, kubectl and Helm's capabilities read them.
func ldflags() string {
	major, minor, _ := strings.Cut(strings.TrimPrefix(KubernetesVersion, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	flags := []string{"-s", "-w"}
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags = append(flags,
			"-X", pkg+".gitVersion="+KubernetesVersion,
			"-X", pkg+".gitMajor="+major,
			"-X", pkg+".gitMinor="+minor,
			"-X", pkg+".gitTreeState=clean")
	}
	return strings.Join(flags, " ")
}

// countPackages estimates the build's size for progress; 0 when unknown.
func (b *Builder) countPackages(ctx context.Context) int {
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "./cmd/k8s", "./cmd/kwok")
	cmd.Dir = b.ModuleDir
	out, err := cmd.Output()
	if err != nil {
		return 0
	}
	return strings.Count(string(out), "\n")
}

func complete(dir string) bool {
	for _, name := range append([]string{"k8s", "kwok"}, controlPlane...) {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return false
		}
	}
	return true
}
