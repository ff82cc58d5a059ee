// Command image builds the agent's OCI image without a container runtime
// (internal/image): `make image`. It builds converge for each platform
// (CGO_ENABLED=0), writes the image index with its SBOM and provenance to
// an OCI image layout, and pushes it when -push names a reference.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"converge.dev/converge/internal/image"
)

func main() {
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated platforms")
	out := flag.String("out", "bin/image", "OCI image layout directory to write")
	tag := flag.String("tag", "", "the image's reference (default ghcr.io/converge-dev/converge:VERSION)")
	push := flag.Bool("push", false, "push to -tag (credentials: the Docker config, as docker login writes it)")
	insecure := flag.Bool("insecure", false, "with -push: the registry speaks plain HTTP")
	version := flag.String("version", "dev", "converge's version")
	commit := flag.String("commit", "unknown", "converge's commit")
	source := flag.String("source", "https://github.com/converge-dev/converge", "the source repository's URL")
	cacheDir := flag.String("cache-dir", defaultCache(), "apt's state and the packages, kept between builds")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *platforms, *out, *tag, *push, *insecure, *version, *commit, *source, *cacheDir); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func defaultCache() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "converge-image")
	}
	return filepath.Join(dir, "converge", "image")
}

func run(ctx context.Context, platforms, out, tag string, push, insecure bool, version, commit, source, cacheDir string) error {
	if tag == "" {
		tag = "ghcr.io/converge-dev/converge:" + version
	}
	var nameOpts []name.Option
	if insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	ref, err := name.ParseReference(tag, nameOpts...)
	if err != nil {
		return fmt.Errorf("-tag: %w", err)
	}
	opts := image.Options{Version: version, Commit: commit, Source: source, Created: created(), Binaries: map[string]string{}, CacheDir: cacheDir,
		Progress: func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }}
	buildDir := filepath.Join(filepath.Dir(out), "image-build")
	for _, p := range strings.Split(platforms, ",") {
		goos, goarch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok {
			return fmt.Errorf("-platforms: %q is not OS/ARCH", p)
		}
		bin := filepath.Join(buildDir, "converge-"+goos+"-"+goarch)
		fmt.Fprintf(os.Stderr, "image: building converge for %s/%s\n", goos, goarch)
		if err := image.BuildBinary(ctx, ".", bin, goos, goarch, version, commit); err != nil {
			return err
		}
		opts.Binaries[goos+"/"+goarch] = bin
	}
	built, err := image.Build(ctx, opts)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := built.WriteLayout(out, ref.String()); err != nil {
		return err
	}
	d, err := built.Index.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "image: %s (%s) written to %s\n", ref, d, out)
	if push {
		if err := built.Push(ctx, ref, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "image: pushed %s@%s\n", ref, d)
	}
	fmt.Println(ref.Context().Digest(d.String()).String())
	return nil
}

// created is the time the image carries: SOURCE_DATE_EPOCH, else the
// commit's time, so that the same commit builds the same image.
func created() time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC()
		}
	}
	if out, err := exec.Command("git", "log", "-1", "--format=%ct").Output(); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil {
			return time.Unix(n, 0).UTC()
		}
	}
	return time.Unix(0, 0).UTC()
}
