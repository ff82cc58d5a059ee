package appspec

import (
	"os"
	"testing"

	"converge.dev/converge/internal/render"
)

// TestMain serves as a render worker when this test binary is started as
// one (renders re-execute their own binary).
func TestMain(m *testing.M) {
	render.ServeWorkerIfRequested()
	os.Exit(m.Run())
}
