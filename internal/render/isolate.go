package render

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

// ErrLimitExceeded is wrapped by the error of a render that went over one
// of its limits: memory, CPU time, wall time or output size.
var ErrLimitExceeded = errors.New("limit exceeded")

// workerEnv marks a process started to render one request. Any binary that
// links this package can serve as the worker: the converge binary, and
// test binaries alike.
const workerEnv = "CONVERGE_RENDER_WORKER"

func init() {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(serveWorker(os.Stdin, os.Stdout))
	}
}

// MaxConcurrentRenders bounds the render workers running at once in this
// process.
const MaxConcurrentRenders = 2

var renderSlots = make(chan struct{}, MaxConcurrentRenders)

// workerRequest is what the parent sends the worker on stdin.
type workerRequest struct {
	Options Options `json:"options"`
}

// workerObject is one rendered object on the wire.
type workerObject struct {
	Object map[string]any `json:"object"`
	Source string         `json:"source"`
}

// workerResponse is what the worker answers on stdout.
type workerResponse struct {
	Kind     Kind           `json:"kind,omitempty"`
	Objects  []workerObject `json:"objects,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
	Error    string         `json:"error,omitempty"`
	// OutsideRoot marks an Error that wraps ErrOutsideRoot.
	OutsideRoot bool `json:"outsideRoot,omitempty"`
	// Missing is set when Error is a *MissingDependenciesError.
	Missing *MissingDependenciesError `json:"missing,omitempty"`
}

// renderError is a worker's error, rebuilt in the parent so that
// errors.Is(err, ErrOutsideRoot) still holds.
type renderError struct {
	msg         string
	outsideRoot bool
}

func (e *renderError) Error() string { return e.msg }

func (e *renderError) Is(target error) bool { return e.outsideRoot && target == ErrOutsideRoot }

// renderIsolated renders opts in a child process of this same binary:
//   - the child's memory and CPU time are capped with rlimits, so a
//     YAML alias bomb or a Helm `repeat` loop kills the child, not the agent;
//   - the parent kills it after the wall-time limit and reads at most
//     MaxOutput bytes of its answer;
//   - in the child, every HTTP request fails, PATH is empty (Kustomize
//     cannot run git) and TMPDIR is a directory the parent removes after.
func renderIsolated(ctx context.Context, opts Options) (*Result, error) {
	// At most MaxConcurrentRenders workers at a time: each may use up to
	// Limits.MaxMemory, and the agent's own memory limit must hold them.
	select {
	case renderSlots <- struct{}{}:
		defer func() { <-renderSlots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the render worker: %w", err)
	}
	tmp, err := os.MkdirTemp("", "converge-render-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	limits := opts.Limits
	req, err := json.Marshal(workerRequest{Options: opts})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, limits.MaxTime)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = []string{workerEnv + "=1", "PATH=", "HOME=" + tmp, "TMPDIR=" + tmp, "LC_ALL=C",
		// Belt and braces: the worker replaces the HTTP transport too.
		"HTTP_PROXY=http://0.0.0.0:0", "HTTPS_PROXY=http://0.0.0.0:0", "NO_PROXY="}
	cmd.Dir = tmp
	cmd.Stdin = bytes.NewReader(req)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{buf: &stderr, max: 64 << 10}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the render worker: %w", err)
	}
	data, readErr := io.ReadAll(io.LimitReader(out, limits.MaxOutput+1))
	if int64(len(data)) > limits.MaxOutput {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	waitErr := cmd.Wait()
	switch {
	case int64(len(data)) > limits.MaxOutput:
		return nil, fmt.Errorf("%s: %w: the rendered output is over %d bytes", opts.Path, ErrLimitExceeded, limits.MaxOutput)
	case ctx.Err() == context.DeadlineExceeded:
		return nil, fmt.Errorf("%s: %w: rendering took longer than %s", opts.Path, ErrLimitExceeded, limits.MaxTime)
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case waitErr != nil:
		return nil, workerFailure(opts, limits, waitErr, stderr.String())
	case readErr != nil:
		return nil, readErr
	}
	var resp workerResponse
	// util/json keeps integers int64, as the render made them.
	if err := utiljson.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("%s: reading the render worker's answer: %w", opts.Path, err)
	}
	if resp.Missing != nil {
		return nil, resp.Missing
	}
	if resp.Error != "" {
		return nil, &renderError{msg: resp.Error, outsideRoot: resp.OutsideRoot}
	}
	res := &Result{Kind: resp.Kind, Warnings: resp.Warnings, Objects: make([]Object, len(resp.Objects))}
	for i, o := range resp.Objects {
		res.Objects[i] = Object{Unstructured: &unstructured.Unstructured{Object: o.Object}, Source: o.Source}
	}
	return res, nil
}

// workerFailure explains a worker that died: most often a limit.
func workerFailure(opts Options, limits Limits, err error, stderr string) error {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			switch ws.Signal() {
			case syscall.SIGXCPU, syscall.SIGKILL:
				return fmt.Errorf("%s: %w: rendering used more than %s of CPU time", opts.Path, ErrLimitExceeded, limits.MaxCPU)
			}
		}
	}
	// At the memory limit the runtime fails whichever allocation comes
	// first: the heap, or a new thread's stack.
	if strings.Contains(stderr, "out of memory") || strings.Contains(stderr, "cannot allocate memory") ||
		strings.Contains(stderr, "pthread_create failed") || strings.Contains(stderr, "newosproc") {
		return fmt.Errorf("%s: %w: rendering needed more than %d MiB of memory", opts.Path, ErrLimitExceeded, limits.MaxMemory>>20)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(stderr), "\n")
	return fmt.Errorf("%s: the render worker failed (%v): %s", opts.Path, err, first)
}

// serveWorker is the child's side: limit itself, render one request, answer.
func serveWorker(in io.Reader, out io.Writer) int {
	var req workerRequest
	data, err := io.ReadAll(io.LimitReader(in, 16<<20))
	if err == nil {
		err = utiljson.Unmarshal(data, &req)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "render worker: reading the request:", err)
		return 2
	}
	limits := req.Options.Limits
	if err := confine(limits); err != nil {
		fmt.Fprintln(os.Stderr, "render worker: setting limits:", err)
		return 2
	}
	res, err := renderInProcess(context.Background(), req.Options)
	var resp workerResponse
	if err != nil {
		resp.Error, resp.OutsideRoot = err.Error(), errors.Is(err, ErrOutsideRoot)
		var missing *MissingDependenciesError
		if errors.As(err, &missing) {
			resp.Missing = missing
		}
	} else {
		resp.Kind, resp.Warnings = res.Kind, res.Warnings
		resp.Objects = make([]workerObject, len(res.Objects))
		for i, o := range res.Objects {
			resp.Objects[i] = workerObject{Object: o.Object, Source: o.Source}
		}
	}
	if err := json.NewEncoder(out).Encode(resp); err != nil {
		fmt.Fprintln(os.Stderr, "render worker: writing the answer:", err)
		return 2
	}
	return 0
}

// confine applies the limits to this process: private writable memory
// (RLIMIT_DATA, which counts the Go heap but not the address space the
// runtime only reserves) and CPU time by rlimit, which the kernel
// enforces; a soft memory target for the garbage collector below that;
// and no network.
func confine(l Limits) error {
	if err := syscall.Setrlimit(syscall.RLIMIT_DATA, &syscall.Rlimit{Cur: uint64(l.MaxMemory), Max: uint64(l.MaxMemory)}); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	cpu := uint64(l.MaxCPU / time.Second)
	if cpu < 1 {
		cpu = 1
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_CPU, &syscall.Rlimit{Cur: cpu, Max: cpu + 1}); err != nil {
		return fmt.Errorf("CPU time: %w", err)
	}
	debug.SetMemoryLimit(l.MaxMemory / 2)
	http.DefaultTransport = refuseTransport{}
	http.DefaultClient = &http.Client{Transport: refuseTransport{}}
	return nil
}

// refuseTransport fails every request: a render never uses the network.
type refuseTransport struct{}

func (refuseTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("%s: network access is refused while rendering", r.URL.Redacted())
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
