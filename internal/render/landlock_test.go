package render

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// confineProbeEnv runs this test binary as a probe: it confines itself as
// a worker does, then tries what a render that broke out of its template
// engine would try, and prints what happened.
const confineProbeEnv = "CONVERGE_TEST_CONFINE_PROBE"

func TestMain(m *testing.M) {
	ServeWorkerIfRequested()
	if os.Getenv(confineProbeEnv) != "" {
		os.Exit(confineProbe())
	}
	os.Exit(m.Run())
}

type probeResult struct {
	Confine, ReadInside, ReadOutside, WriteTmp, WriteInside, Dial string
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func confineProbe() int {
	var res probeResult
	res.Confine = errString(confineFromEnv())
	_, err := os.ReadFile(os.Getenv("PROBE_INSIDE"))
	res.ReadInside = errString(err)
	_, err = os.ReadFile(os.Getenv("PROBE_OUTSIDE"))
	res.ReadOutside = errString(err)
	res.WriteTmp = errString(os.WriteFile(filepath.Join(os.TempDir(), "scratch"), []byte("x"), 0o600))
	res.WriteInside = errString(os.WriteFile(os.Getenv("PROBE_INSIDE")+".new", []byte("x"), 0o600))
	conn, err := net.Dial("tcp", os.Getenv("PROBE_DIAL"))
	if err == nil {
		conn.Close()
	}
	res.Dial = errString(err)
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// A confined worker reads its roots and writes its temporary directory,
// and nothing else: not a token file beside them, not the roots
// themselves, and no TCP connection.
func TestReadRoots_ConfinedWorkerReachesOnlyItsRootsAndTmp(t *testing.T) {
	if LandlockABI() < 4 {
		t.Skipf("this kernel's Landlock ABI is %d: file and TCP confinement need 4 (docs/security.md says what holds without it)", LandlockABI())
	}
	root, outside, tmp := t.TempDir(), t.TempDir(), t.TempDir()
	inside := filepath.Join(root, "checkout", "deploy.yaml")
	token := filepath.Join(outside, "token")
	for _, f := range []string{inside, token} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	roots, _ := json.Marshal([]string{root})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), confineProbeEnv+"=1", readRootsEnv+"="+string(roots), "TMPDIR="+tmp,
		"PROBE_INSIDE="+inside, "PROBE_OUTSIDE="+token, "PROBE_DIAL="+l.Addr().String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	var res probeResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("probe said %q: %v", out, err)
	}
	for name, got := range map[string]string{"confine": res.Confine, "read inside": res.ReadInside, "write tmp": res.WriteTmp} {
		if got != "ok" {
			t.Errorf("%s: %s, want ok", name, got)
		}
	}
	for name, got := range map[string]string{"read outside": res.ReadOutside, "write inside the roots": res.WriteInside, "dial": res.Dial} {
		if got == "ok" {
			t.Errorf("%s succeeded; want it refused", name)
		}
	}
	t.Logf("confined worker: %+v", res)
}

// Confined workers still render Kustomize, Helm and plain YAML from their
// roots (the confinement takes nothing a render needs).
func TestReadRoots_ConfinedRendersStillWork(t *testing.T) {
	root, err := filepath.Abs(repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"plain", "app/overlays/prod", "charts/web"} {
		res, err := Render(context.Background(), Options{Root: root, Path: path, ReadRoots: []string{root}, Isolation: "confined-test",
			Helm: HelmOptions{ReleaseName: "r", Namespace: "ns"}})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(res.Objects) == 0 {
			t.Fatalf("%s rendered nothing", path)
		}
	}
}
