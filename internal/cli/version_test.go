package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Execute(context.Background(), Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
	return out.String(), errOut.String(), code
}

func TestVersion_JSONHasVersionCommitAndGo(t *testing.T) {
	stdout, stderr, code := run(t, "version", "-o", "json")
	if code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var got struct {
		Version, Commit, GoVersion string
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout)
	}
	if got.Version == "" || got.Commit == "" || got.GoVersion != runtime.Version() {
		t.Errorf("got %+v", got)
	}
}

func TestVersion_RejectsUnknownOutputFormat(t *testing.T) {
	stdout, stderr, code := run(t, "version", "-o", "xml")
	if code != ExitFailure || stdout != "" || !strings.Contains(stderr, `unknown output format "xml"`) {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
