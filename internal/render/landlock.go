package render

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// readRootsEnv carries the directories a worker may read (JSON), when the
// agent confines its workers (see ConfineReads).
const readRootsEnv = "CONVERGE_RENDER_READ"

// ConfineReads makes every render worker started from now on confine
// itself with Landlock, where the kernel has it: it may read only below
// dirs (the agent's checkouts and charts), read and write only its own
// temporary directory, connect and bind no TCP port, and signal or reach
// (abstract Unix sockets) no process outside itself. The agent's
// ServiceAccount token, its kubeconfig and the rest of the file system are
// out of its reach. Without Landlock (before Linux 5.13, or where it is
// off) only the rlimits and the in-process refusals hold; LandlockABI
// says which.
func ConfineReads(dirs ...string) {
	workers.mu.Lock()
	defer workers.mu.Unlock()
	workers.readRoots = append([]string(nil), dirs...)
}

// LandlockABI is the kernel's Landlock version: 0 without Landlock, 4 and
// up restrict TCP too, 6 and up signals and abstract Unix sockets.
func LandlockABI() int {
	v, err := llsys.LandlockGetABIVersion()
	if err != nil {
		return 0
	}
	return v
}

// confineFiles restricts this process (every thread, for its life) to
// reading below roots and writing below tmp, with no TCP, as far as the
// kernel's Landlock allows.
func confineFiles(roots []string, tmp string) error {
	err := landlock.V7.BestEffort().Restrict(
		landlock.RODirs(roots...).IgnoreIfMissing(),
		landlock.RWDirs(tmp),
	)
	if err != nil {
		return fmt.Errorf("landlock: %w", err)
	}
	return nil
}

// confineFromEnv applies the confinement the parent asked for, if any.
func confineFromEnv() error {
	raw := os.Getenv(readRootsEnv)
	if raw == "" {
		return nil
	}
	var roots []string
	if err := json.Unmarshal([]byte(raw), &roots); err != nil {
		return fmt.Errorf("%s: %w", readRootsEnv, err)
	}
	return confineFiles(roots, os.TempDir())
}
