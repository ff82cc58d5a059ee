// Command localcluster builds and runs the local Kubernetes cluster that
// converge's tests and demo use.
//
//	localcluster [flags] build|assets|up|down|status
//
// build and assets print the directory of the built binaries (assets is what
// envtest wants as KUBEBUILDER_ASSETS); up, down and status manage the
// cluster whose state lives in --dir.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"converge.dev/converge/tools/localcluster/internal/cluster"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("localcluster", flag.ContinueOnError)
	dir := fs.String("dir", ".cluster", "state directory: certificates, etcd data, logs, kubeconfig, audit log")
	cacheDir := fs.String("cache-dir", defaultCacheDir(), "where built binaries are cached, shared by checkouts ($CONVERGE_CACHE_DIR)")
	moduleDir := fs.String("module-dir", ".", "the tools/localcluster module to build from")
	name := fs.String("name", "a", "instance name, one letter: b, c, ... run beside a on their own ports")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: localcluster [flags] build|assets|up|down|status|stop COMPONENT\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 1 && !(fs.NArg() == 2 && fs.Arg(0) == "stop") {
		fs.Usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	builder := &cluster.Builder{ModuleDir: *moduleDir, CacheDir: *cacheDir, Log: os.Stderr}
	c, err := cluster.New(*dir, *cacheDir, *name, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		return 1
	}
	builder.CacheDir = c.CacheDir

	switch cmd := fs.Arg(0); cmd {
	case "build", "assets":
		bin, err := builder.Ensure(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "localcluster:", err)
			return 1
		}
		fmt.Println(bin)
	case "up":
		bin, err := builder.Ensure(ctx)
		if err == nil {
			err = c.Up(ctx, bin)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "localcluster: cluster-up failed:", err)
			return 1
		}
	case "down":
		if err := c.Down(); err != nil {
			fmt.Fprintln(os.Stderr, "localcluster:", err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "Local cluster stopped and its state removed")
	case "stop":
		if err := c.Stop(fs.Arg(1)); err != nil {
			fmt.Fprintln(os.Stderr, "localcluster:", err)
			return 1
		}
	case "status":
		if !c.Status(ctx, os.Stdout) {
			return 1
		}
	default:
		fs.Usage()
		return 2
	}
	return 0
}

func defaultCacheDir() string {
	if d := os.Getenv("CONVERGE_CACHE_DIR"); d != "" {
		return filepath.Join(d, "localcluster")
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "converge", "localcluster")
}
