package render

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// readRootsEnv carries the directories a worker may read (JSON), when the
// render asks for confinement (Options.ReadRoots).
const readRootsEnv = "CONVERGE_RENDER_READ"

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
