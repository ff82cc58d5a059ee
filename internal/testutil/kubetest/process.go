package kubetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ProcessMemory returns the resident and peak resident memory of process
// pid, in MiB (Linux).
func ProcessMemory(pid int) (rss, peak float64, err error) {
	rss, peak, _, err = processMemory(pid)
	return rss, peak, err
}

// ProcessAnonMemory returns the part of process pid's resident memory that
// is its own (heap, stacks), in MiB: the rest are pages of its executable
// and libraries, shared with the page cache (Linux).
func ProcessAnonMemory(pid int) (float64, error) {
	_, _, anon, err := processMemory(pid)
	return anon, err
}

func processMemory(pid int) (rss, peak, anon float64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		case "RssAnon:":
			anon = kb / 1024
		}
	}
	return rss, peak, anon, nil
}

// ProcessCPU returns the user and system CPU time of process pid, in
// seconds (Linux).
func ProcessCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which may hold spaces, in parens.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100, nil // USER_HZ is 100 on Linux
}

// FindProcess returns the ID of a process whose command name (at most 15
// bytes, as /proc/PID/comm holds it) is comm and whose command line holds
// arg (Linux).
func FindProcess(comm, arg string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(data)) != comm {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(cmdline), arg) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process %q with %q in its command line", comm, arg)
}

// CPUMeter reads the CPU time of a set of processes by name.
type CPUMeter map[string]int

// NewClusterCPUMeter finds the local cluster's kube-apiserver and etcd
// (by its directory in their command lines: the second cluster `make
// test` starts runs the same binaries); one not running is left out.
func NewClusterCPUMeter() CPUMeter {
	m := CPUMeter{}
	kubeconfig, err := LocalKubeconfig()
	if err != nil {
		return m
	}
	dir := filepath.Dir(kubeconfig) + string(filepath.Separator)
	for _, n := range []string{"kube-apiserver", "etcd"} {
		if pid, err := FindProcess(n, dir); err == nil {
			m[n] = pid
		}
	}
	return m
}

// Read returns each process's CPU seconds so far.
func (m CPUMeter) Read() map[string]float64 {
	out := map[string]float64{}
	for n, pid := range m {
		if s, err := ProcessCPU(pid); err == nil {
			out[n] = s
		}
	}
	return out
}

// CPUSince is the CPU seconds each process spent since before, a Read.
func (m CPUMeter) CPUSince(before map[string]float64) map[string]float64 {
	now := m.Read()
	for n, s := range now {
		now[n] = s - before[n]
	}
	return now
}
