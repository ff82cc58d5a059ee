package render

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A worker process is kept between renders: starting one costs far more
// CPU than rendering a small app (the whole binary initialises), and a
// fleet of apps renders one after another. Its life is bounded so that
// what one render leaves behind (heap, files) does not pile up.
const (
	// workerIdle is how long an idle worker waits for its next render; an
	// agent with nothing to render keeps no worker.
	workerIdle = 30 * time.Second
	// workerRenders and workerCPU bound one worker's life.
	workerRenders = 500
	workerCPU     = 30 * time.Second
	// maxIdleWorkers bounds the idle workers kept, of every isolation.
	maxIdleWorkers = 4
	// maxRequest bounds a request frame (options with inline values).
	maxRequest = 64 << 20
)

var (
	errTooLarge = errors.New("answer over the output limit")
	errTooLong  = errors.New("over the wall-time limit")
)

// workerPool keeps idle workers by isolation key. A worker serves the
// renders of one key only: renders of different tenants never share a
// process, so one cannot see what another's render held (values from its
// Secrets), even if it broke out of the template engine.
type workerPool struct {
	slots *slots

	mu   sync.Mutex
	idle []*worker // oldest first
	// total counts the worker processes running, idle or not.
	total atomic.Int32
}

var workers = &workerPool{slots: newSlots(MaxConcurrentRenders)}

// worker is one render process.
type worker struct {
	key     string
	cmd     *exec.Cmd
	in      *os.File
	out     *os.File
	outR    *bufio.Reader
	stderr  *limitedBuffer
	tmp     string
	renders int
	cpu     time.Duration
	idleAt  time.Time

	done    chan struct{} // closed once the process has been waited for
	waitErr error
}

// workerKey says which renders may share a worker: those of one
// isolation, with the limits a worker takes for its life.
func workerKey(isolation string, l Limits, roots []string) string {
	return fmt.Sprintf("%s\x00%d\x00%d\x00%s", isolation, l.MaxMemory, l.MaxCPU, strings.Join(roots, "\x00"))
}

// get returns an idle worker for isolation and limits, or starts one.
func (p *workerPool) get(isolation string, l Limits, roots []string) (*worker, error) {
	key := workerKey(isolation, l, roots)
	p.mu.Lock()
	for i := len(p.idle) - 1; i >= 0; i-- {
		w := p.idle[i]
		if w.key != key {
			continue
		}
		p.idle = append(p.idle[:i], p.idle[i+1:]...)
		select {
		case <-w.done: // died while idle
			p.mu.Unlock()
			w.close()
			p.mu.Lock()
			continue
		default:
		}
		p.mu.Unlock()
		return w, nil
	}
	p.mu.Unlock()
	return p.start(key, roots)
}

// put keeps w for its key's next render, unless it has served its life.
func (p *workerPool) put(w *worker) {
	w.renders++
	if w.renders >= workerRenders || w.cpu >= workerCPU {
		w.close()
		return
	}
	// What the render left in its temporary directory goes now.
	if err := emptyDir(w.tmp); err != nil {
		w.close()
		return
	}
	w.idleAt = time.Now()
	var evict []*worker
	p.mu.Lock()
	p.idle = append(p.idle, w)
	for len(p.idle) > maxIdleWorkers {
		evict = append(evict, p.idle[0])
		p.idle = p.idle[1:]
	}
	p.mu.Unlock()
	for _, e := range evict {
		e.close()
	}
	time.AfterFunc(workerIdle, p.expire)
}

// expire closes the workers idle for workerIdle.
func (p *workerPool) expire() {
	var old []*worker
	p.mu.Lock()
	keep := p.idle[:0]
	for _, w := range p.idle {
		if time.Since(w.idleAt) >= workerIdle {
			old = append(old, w)
		} else {
			keep = append(keep, w)
		}
	}
	p.idle = keep
	p.mu.Unlock()
	for _, w := range old {
		w.close()
	}
}

// discard closes a worker whose render failed: it is never reused.
func (p *workerPool) discard(w *worker) { w.close() }

// CloseWorkers stops the render workers kept idle, removing their
// temporary directories; a program that rendered calls it before it exits
// (a worker outliving its parent is killed, but leaves its directory).
func CloseWorkers() { workers.closeIdle() }

// closeIdle closes every idle worker.
func (p *workerPool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, w := range idle {
		w.close()
	}
}

// start starts a worker process in a temporary directory of its own.
func (p *workerPool) start(key string, roots []string) (*worker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the render worker: %w", err)
	}
	tmp, err := os.MkdirTemp("", "converge-render-")
	if err != nil {
		return nil, err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		os.RemoveAll(tmp)
		return nil, err
	}
	w := &worker{key: key, in: inW, out: outR, outR: bufio.NewReader(outR), stderr: &limitedBuffer{max: 64 << 10}, tmp: tmp, done: make(chan struct{})}
	cmd := exec.Command(exe)
	cmd.Env = []string{workerEnv + "=1", "PATH=", "HOME=" + tmp, "TMPDIR=" + tmp, "LC_ALL=C",
		// Belt and braces: the worker replaces the HTTP transport too.
		"HTTP_PROXY=http://0.0.0.0:0", "HTTPS_PROXY=http://0.0.0.0:0", "NO_PROXY="}
	if len(roots) > 0 {
		raw, _ := json.Marshal(roots)
		cmd.Env = append(cmd.Env, readRootsEnv+"="+string(raw))
	}
	cmd.Dir = tmp
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, w.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("starting the render worker: %w", err)
	}
	w.cmd = cmd
	p.total.Add(1)
	go func() {
		w.waitErr = cmd.Wait()
		os.RemoveAll(tmp)
		p.total.Add(-1)
		close(w.done)
	}()
	return w, nil
}

// do sends one request and reads its answer, within the wall-time and
// output limits. On an error the worker is not to be used again; a worker
// stopped by the wall time or ctx is never handed back, even if its answer
// came in just before.
func (w *worker) do(ctx context.Context, req []byte, l Limits) ([]byte, error) {
	w.stderr.reset()
	timer := time.AfterFunc(l.MaxTime, w.kill)
	stop, stopped := make(chan struct{}), make(chan struct{})
	var canceled atomic.Bool
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			canceled.Store(true)
			w.kill()
		case <-stop:
		}
	}()
	data, err := w.exchange(req, l.MaxOutput)
	close(stop)
	<-stopped
	switch {
	case !timer.Stop():
		return nil, errTooLong
	case canceled.Load():
		return nil, ctx.Err()
	case err != nil:
		return nil, err
	}
	return data, nil
}

func (w *worker) exchange(req []byte, maxOutput int64) ([]byte, error) {
	if err := writeFrame(w.in, req); err != nil {
		return nil, err
	}
	return readFrame(w.outR, maxOutput)
}

// kill stops the worker and whatever it started.
func (w *worker) kill() {
	select {
	case <-w.done:
		return // waited for: its process group id may be another's now
	default:
	}
	_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
}

// close stops the worker, waits for it and releases its pipes.
func (w *worker) close() {
	w.kill()
	<-w.done
	w.in.Close()
	w.out.Close()
}

// exitErr waits for a worker that failed and says how it ended.
func (w *worker) exitErr() error {
	w.kill()
	<-w.done
	return w.waitErr
}

// writeFrame writes data with its length before it.
func writeFrame(out io.Writer, data []byte) error {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(data)))
	if _, err := out.Write(append(n[:], data...)); err != nil {
		return err
	}
	if f, ok := out.(interface{ Flush() error }); ok {
		return f.Flush()
	}
	return nil
}

// readFrame reads one frame of at most max bytes.
func readFrame(in io.Reader, max int64) ([]byte, error) {
	var n [8]byte
	if _, err := io.ReadFull(in, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint64(n[:])
	if size > uint64(max) {
		return nil, errTooLarge
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(in, data); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return data, nil
}

// emptyDir removes what dir holds, keeping dir.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
