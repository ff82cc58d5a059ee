package cluster

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// component is one long-running process of the cluster.
type component struct {
	name string
	bin  string // file in the bin directory
	args []string
}

func (c *Cluster) pidFile(name string) string { return c.path("run", name+".pid") }

// pid returns the pid of a running component, or 0. A pid file whose process
// is gone, or whose pid now belongs to another program, counts as not running.
func (c *Cluster) pid(name string) int {
	data, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0
	}
	if !c.owns(pid) {
		return 0
	}
	return pid
}

// exited reports whether the component started last has ended: its pid
// file names a process that is gone or a zombie. Unlike pid, it does not
// require the process to look like a cluster binary yet: right after the
// fork, before exec, it still runs the launcher's executable.
func (c *Cluster) exited(name string) bool {
	data, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return false
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// owns reports whether pid is a live component started for this state
// directory: its executable is one of the cached cluster binaries and its
// command line names the state directory. That guards against pid reuse,
// against clusters of other checkouts, and against killing a shell or editor
// that merely mentions the directory.
func (c *Cluster) owns(pid int) bool {
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	exe, err := os.Readlink(filepath.Join(proc, "exe"))
	if err != nil || !strings.HasPrefix(exe, c.CacheDir+string(os.PathSeparator)) {
		return false
	}
	cmdline, err := os.ReadFile(filepath.Join(proc, "cmdline"))
	if err != nil {
		return false
	}
	if stat, err := os.ReadFile(filepath.Join(proc, "stat")); err == nil {
		// A zombie has exited; it only waits for its parent to reap it.
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return false
		}
	}
	// The directory as a prefix of a path in it: .cluster is not .cluster-b.
	return bytes.Contains(cmdline, []byte(c.Dir+string(os.PathSeparator)))
}

// start launches a component detached from the caller (its own session, its
// output appended to logs/NAME.log) and records its pid.
func (c *Cluster) start(comp component) error {
	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(c.path("run"), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(c.path("logs", comp.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "\n==== %s starting %s\n", time.Now().Format(time.RFC3339), comp.name)
	cmd := exec.Command(filepath.Join(c.binDir, comp.bin), comp.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", comp.name, err)
	}
	pid := cmd.Process.Pid
	// Reap the child if it dies while we still run, so that it does not linger
	// as a zombie that looks alive.
	go func() { _ = cmd.Wait() }()
	return os.WriteFile(c.pidFile(comp.name), []byte(strconv.Itoa(pid)+"\n"), 0o644)
}

// stopAll ends every process started for this state directory, those with
// pid files and any stray found in /proc: first everything but etcd, then
// etcd, so that no component spends its shutdown retrying a vanished store.
// Each phase waits up to 10 seconds for SIGTERM before it uses SIGKILL.
func (c *Cluster) stopAll() error {
	etcd := c.pid("etcd")
	var first []int
	for _, pid := range c.strays() {
		if pid != etcd {
			first = append(first, pid)
		}
	}
	if err := c.terminate(first); err != nil {
		return err
	}
	return c.terminate(c.strays())
}

// Stop kills one component at once, as a crash would, keeping the state:
// `up` starts it again. Tests use it to take a cluster's apiserver away and
// bring it back.
func (c *Cluster) Stop(name string) error {
	for _, comp := range c.components() {
		if comp.name != name {
			continue
		}
		if pid := c.pid(name); pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			for i := 0; c.owns(pid) && i < 250; i++ {
				time.Sleep(20 * time.Millisecond)
			}
			if c.owns(pid) {
				return fmt.Errorf("%s (pid %d) did not stop", name, pid)
			}
		}
		return nil
	}
	return fmt.Errorf("no component %q", name)
}

func (c *Cluster) terminate(pids []int) error {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for c.owns(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if c.owns(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, pid := range pids {
		for i := 0; c.owns(pid) && i < 250; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if c.owns(pid) {
			return fmt.Errorf("process %d did not stop", pid)
		}
	}
	return nil
}

// strays lists live processes whose command line names the state directory.
func (c *Cluster) strays() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if c.owns(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// sameArgs reports whether the running pid was started with comp's flags.
func (c *Cluster) sameArgs(pid int, comp component) bool {
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	got := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	return len(got) > 0 && slices.Equal(got[1:], comp.args)
}
