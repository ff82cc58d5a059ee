package render

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

// ErrLimitExceeded is wrapped by the error of a render that went over one
// of its limits: memory, CPU time, wall time or output size.
var ErrLimitExceeded = errors.New("limit exceeded")

// workerEnv marks a process started to render one request. A binary that
// renders re-executes itself as the worker, so it must call
// ServeWorkerIfRequested first thing: the converge binary's main, and the
// TestMain of every test binary that renders.
const workerEnv = "CONVERGE_RENDER_WORKER"

// ServeWorkerIfRequested serves as a render worker, and exits, when this
// process was started as one; otherwise it returns at once.
func ServeWorkerIfRequested() {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(serveWorker(os.Stdin, os.Stdout))
	}
}

// MaxConcurrentRenders bounds the renders running at once in this process.
const MaxConcurrentRenders = 2

// workerRequest is what the parent sends the worker, one frame a render.
type workerRequest struct {
	Options Options `json:"options"`
}

// workerObject is one rendered object on the wire.
type workerObject struct {
	Object map[string]any `json:"object"`
	Source string         `json:"source"`
}

// workerResponse is what the worker answers, one frame a render.
type workerResponse struct {
	Kind     Kind           `json:"kind,omitempty"`
	Objects  []workerObject `json:"objects,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
	Nested   []string       `json:"nested,omitempty"`
	Error    string         `json:"error,omitempty"`
	// OutsideRoot marks an Error that wraps ErrOutsideRoot.
	OutsideRoot bool `json:"outsideRoot,omitempty"`
	// Missing is set when Error is a *MissingDependenciesError.
	Missing *MissingDependenciesError `json:"missing,omitempty"`
	// CPU is the CPU time the worker has used in all, for recycling.
	CPU time.Duration `json:"cpu,omitempty"`
}

// renderError is a worker's error, rebuilt in the parent so that
// errors.Is(err, ErrOutsideRoot) still holds.
type renderError struct {
	msg         string
	outsideRoot bool
}

func (e *renderError) Error() string { return e.msg }

func (e *renderError) Is(target error) bool { return e.outsideRoot && target == ErrOutsideRoot }

// renderIsolated renders opts in a child process of this same binary, a
// worker (see workerPool):
//   - the worker's memory and each render's CPU time are capped with
//     rlimits, so a YAML alias bomb or a Helm `repeat` loop kills the
//     worker, not the agent;
//   - the parent kills it after the wall-time limit and reads at most
//     MaxOutput bytes of its answer;
//   - in the worker, every HTTP request fails, PATH is empty (Kustomize
//     cannot run git) and TMPDIR is a directory of its own, emptied after
//     each render and removed with the worker.
//
// A worker serves the renders of one opts.Isolation only, one at a time.
func renderIsolated(ctx context.Context, opts Options) (*Result, error) {
	// At most MaxConcurrentRenders renders at a time: each worker may use
	// up to Limits.MaxMemory, and the agent's own memory limit must hold
	// them.
	// Tenants' renders share the slots fairly (see slots).
	release, err := workers.slots.acquire(ctx, opts.Queue)
	if err != nil {
		return nil, err
	}
	defer release()
	limits := opts.Limits
	req, err := json.Marshal(workerRequest{Options: opts})
	if err != nil {
		return nil, err
	}
	w, err := workers.get(opts.Isolation, limits, opts.ReadRoots)
	if err != nil {
		return nil, err
	}
	data, err := w.do(ctx, req, limits)
	if err != nil {
		workers.discard(w)
		switch {
		case errors.Is(err, errTooLarge):
			return nil, fmt.Errorf("%s: %w: the rendered output is over %d bytes", opts.Path, ErrLimitExceeded, limits.MaxOutput)
		case errors.Is(err, errTooLong):
			return nil, fmt.Errorf("%s: %w: rendering took longer than %s", opts.Path, ErrLimitExceeded, limits.MaxTime)
		case ctx.Err() != nil:
			return nil, ctx.Err()
		}
		return nil, workerFailure(opts, limits, w.exitErr(), w.stderr.String())
	}
	var resp workerResponse
	// util/json keeps integers int64, as the render made them.
	if err := utiljson.Unmarshal(data, &resp); err != nil {
		workers.discard(w)
		return nil, fmt.Errorf("%s: reading the render worker's answer: %w", opts.Path, err)
	}
	w.cpu = resp.CPU
	workers.put(w)
	if resp.Missing != nil {
		return nil, resp.Missing
	}
	if resp.Error != "" {
		return nil, &renderError{msg: resp.Error, outsideRoot: resp.OutsideRoot}
	}
	res := &Result{Kind: resp.Kind, Warnings: resp.Warnings, Nested: resp.Nested, Objects: make([]Object, len(resp.Objects))}
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

// serveWorker is the worker's side: render each request it reads, within
// its limits, and answer it, until its input ends.
func serveWorker(in io.Reader, out io.Writer) int {
	r, w := bufio.NewReader(in), bufio.NewWriter(out)
	confined := false
	for {
		data, err := readFrame(r, maxRequest)
		if err == io.EOF {
			return 0
		}
		var req workerRequest
		if err == nil {
			err = utiljson.Unmarshal(data, &req)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "render worker: reading the request:", err)
			return 2
		}
		limits := req.Options.Limits
		if !confined {
			if err := confine(limits); err != nil {
				fmt.Fprintln(os.Stderr, "render worker: setting limits:", err)
				return 2
			}
			confined = true
		}
		if err := allowCPU(limits.MaxCPU); err != nil {
			fmt.Fprintln(os.Stderr, "render worker: setting the CPU limit:", err)
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
			resp.Kind, resp.Warnings, resp.Nested = res.Kind, res.Warnings, res.Nested
			resp.Objects = make([]workerObject, len(res.Objects))
			for i, o := range res.Objects {
				resp.Objects[i] = workerObject{Object: o.Object, Source: o.Source}
			}
		}
		resp.CPU, _ = cpuUsed()
		data, err = json.Marshal(resp)
		if err == nil {
			err = writeFrame(w, data)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "render worker: writing the answer:", err)
			return 2
		}
		// An idle worker holds little: after a large render, what it
		// allocated goes back to the system before the next request.
		res, resp, data = nil, workerResponse{}, nil
		var mem runtime.MemStats
		if runtime.ReadMemStats(&mem); mem.HeapInuse > 64<<20 {
			debug.FreeOSMemory()
		}
	}
}

// confine applies the limits to this process for its life: private
// writable memory (RLIMIT_DATA, which counts the Go heap but not the
// address space the runtime only reserves); a hard CPU-time limit the
// worker cannot raise again, above what its recycling allows (see
// allowCPU); a soft memory target for the garbage collector below the
// memory limit; and no network.
func confine(l Limits) error {
	if err := syscall.Setrlimit(syscall.RLIMIT_DATA, &syscall.Rlimit{Cur: uint64(l.MaxMemory), Max: uint64(l.MaxMemory)}); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	hard := uint64((workerCPU + l.MaxCPU) / time.Second)
	if err := syscall.Setrlimit(syscall.RLIMIT_CPU, &syscall.Rlimit{Cur: hard, Max: hard + 1}); err != nil {
		return fmt.Errorf("CPU time: %w", err)
	}
	debug.SetMemoryLimit(l.MaxMemory / 2)
	if err := confineFromEnv(); err != nil {
		return err
	}
	http.DefaultTransport = refuseTransport{}
	http.DefaultClient = &http.Client{Transport: refuseTransport{}}
	return nil
}

// allowCPU lets the next render use max of CPU time beyond what the
// worker has used: past it, the kernel stops the worker.
func allowCPU(max time.Duration) error {
	used, err := cpuUsed()
	if err != nil {
		return err
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_CPU, &lim); err != nil {
		return err
	}
	soft := uint64((used+max+time.Second-1)/time.Second) + 1
	lim.Cur = min(soft, lim.Max)
	return syscall.Setrlimit(syscall.RLIMIT_CPU, &lim)
}

// cpuUsed is the CPU time this process has used.
func cpuUsed() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// refuseTransport fails every request: a render never uses the network.
type refuseTransport struct{}

func (refuseTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("%s: network access is refused while rendering", r.URL.Redacted())
}

// limitedBuffer keeps the first max bytes written to it since its last
// reset: what a worker said on stderr during one render.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *limitedBuffer) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Reset()
}
