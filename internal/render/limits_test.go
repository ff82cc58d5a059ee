package render

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// aliasBomb is a kustomization of a few hundred bytes whose aliases expand
// to billions of nodes.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [cm.yaml]\ncommonAnnotations:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&b, "  a%d: &a%d [*a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d]\n", i, i, i-1)
	}
	return b.String()
}

func writeRepo(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const chartYAML = "apiVersion: v2\nname: bomb\nversion: 0.1.0\n"

func TestRender_BombsFailWithinTheirLimits(t *testing.T) {
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
	for name, tc := range map[string]struct {
		files map[string]string
		path  string
	}{
		"yaml alias bomb in a kustomization": {map[string]string{"k/kustomization.yaml": aliasBomb(), "k/cm.yaml": cm}, "k"},
		"yaml alias bomb in a manifest":      {map[string]string{"m/cm.yaml": strings.Replace(aliasBomb(), "resources: [cm.yaml]\n", "", 1)}, "m"},
		"helm repeat":                        {map[string]string{"c/Chart.yaml": chartYAML, "c/templates/cm.yaml": cm + "data:\n  a: {{ repeat 2000000000 \"x\" }}\n"}, "c"},
		"helm nested repeat": {map[string]string{"c/Chart.yaml": chartYAML, "c/templates/cm.yaml": cm +
			"data:\n{{- $s := repeat 1000000 \"x\" }}\n{{- range $i := until 100000 }}\n  k{{ $i }}: {{ $s }}\n{{- end }}\n"}, "c"},
		"helm endless loop": {map[string]string{"c/Chart.yaml": chartYAML, "c/templates/cm.yaml": cm +
			"data:\n{{- range $i := until 2000000000 }}{{- end }}\n"}, "c"},
	} {
		t.Run(name, func(t *testing.T) {
			root := writeRepo(t, tc.files)
			start := time.Now()
			_, err := Render(context.Background(), Options{Root: root, Path: tc.path,
				Limits: Limits{MaxMemory: 512 << 20, MaxCPU: 10 * time.Second, MaxTime: 20 * time.Second}})
			if err == nil {
				t.Fatal("the bomb rendered")
			}
			t.Logf("%s after %s", err, time.Since(start).Round(time.Millisecond))
			if strings.HasPrefix(tc.path, "c") && !errors.Is(err, ErrLimitExceeded) {
				t.Errorf("error %q does not wrap ErrLimitExceeded", err)
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name %s", err, tc.path)
			}
		})
	}
}

func TestRender_ObjectTooLargeForTheAPIServerIsAnError(t *testing.T) {
	big := strings.Repeat("x", 2<<20)
	root := writeRepo(t, map[string]string{"big/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\ndata:\n  a: " + big + "\n"})
	_, err := Render(context.Background(), Options{Root: root, Path: "big"})
	if err == nil || !strings.Contains(err.Error(), "ConfigMap/huge") || !strings.Contains(err.Error(), "over the 1572864 byte limit") {
		t.Fatalf("error = %v, want one naming ConfigMap/huge and the limit", err)
	}
}

func TestRender_OutputOverTheLimitIsRefused(t *testing.T) {
	var b strings.Builder
	for i := range 200 {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c%d\ndata:\n  a: %s\n", i, strings.Repeat("y", 10000))
	}
	root := writeRepo(t, map[string]string{"many/cms.yaml": b.String()})
	_, err := Render(context.Background(), Options{Root: root, Path: "many", Limits: Limits{MaxOutput: 1 << 20}})
	if !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("error = %v, want ErrLimitExceeded", err)
	}
}

// BenchmarkRender compares a render in a worker process with the same
// render in this process: the worker's cost is paid once per new revision
// (renders are cached by revision, path and options).
func BenchmarkRender(b *testing.B) {
	for _, path := range []string{"plain", "charts/web"} {
		b.Run("isolated/"+path, func(b *testing.B) {
			for b.Loop() {
				if _, err := Render(context.Background(), Options{Root: repo, Path: path}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("in-process/"+path, func(b *testing.B) {
			for b.Loop() {
				if _, err := renderInProcess(context.Background(), Options{Root: repo, Path: path}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A render leaves nothing in the temporary directory, even one Kustomize
// would have cloned a remote base into.
func TestRender_LeavesNoTemporaryDirectory(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	root := writeRepo(t, map[string]string{
		"k/kustomization.yaml": "resources: [cm.yaml]\n",
		"k/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
		"r/kustomization.yaml": "resources: [github.com/org/repo]\n",
	})
	if _, err := Render(context.Background(), Options{Root: root, Path: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Render(context.Background(), Options{Root: root, Path: "r"}); err == nil {
		t.Fatal("a remote base rendered")
	}
	// A worker kept for the next render keeps its directory, emptied.
	for _, e := range mustReadDir(t, tmp) {
		if inside := mustReadDir(t, filepath.Join(tmp, e.Name())); len(inside) != 0 {
			t.Errorf("left behind in the idle worker's TMPDIR %s: %v", e.Name(), inside)
		}
	}
	workers.closeIdle()
	if entries := mustReadDir(t, tmp); len(entries) != 0 {
		t.Errorf("left behind in TMPDIR: %v", entries)
	}
}

func mustReadDir(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// A worker serves one isolation only, renders again after a render that
// killed it, and goes when idle.
func TestRender_WorkersServeOneIsolationAndRecoverFromALimit(t *testing.T) {
	workers.closeIdle()
	root := writeRepo(t, map[string]string{
		"ok/cm.yaml":          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
		"c/Chart.yaml":        chartYAML,
		"c/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n{{- range $i := until 2000000000 }}{{- end }}\n",
		// Endless in time, small in memory: only the wall time stops it.
		"w/Chart.yaml":        chartYAML,
		"w/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n{{- range $i := until 100000 }}{{- range $j := until 100000 }}{{- end }}{{- end }}\n",
	})
	limits := Limits{MaxCPU: 2 * time.Second, MaxTime: 20 * time.Second}
	render := func(isolation, path string) error {
		_, err := Render(context.Background(), Options{Root: root, Path: path, Isolation: isolation, Limits: limits})
		return err
	}
	pids := func() map[string]int {
		workers.mu.Lock()
		defer workers.mu.Unlock()
		out := map[string]int{}
		for _, w := range workers.idle {
			out[w.key[:1]] = w.cmd.Process.Pid
		}
		return out
	}
	for _, iso := range []string{"a", "b", "a"} {
		if err := render(iso, "ok"); err != nil {
			t.Fatal(err)
		}
	}
	first := pids()
	if len(first) != 2 || first["a"] == first["b"] {
		t.Fatalf("idle workers by isolation: %v, want one each for a and b", first)
	}
	if err := render("a", "ok"); err != nil {
		t.Fatal(err)
	}
	if again := pids(); again["a"] != first["a"] {
		t.Errorf("a's second render ran in a new worker (%d, was %d)", again["a"], first["a"])
	}
	if err := render("a", "c"); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("endless loop: %v, want ErrLimitExceeded", err)
	}
	if err := render("a", "ok"); err != nil {
		t.Fatalf("render after a worker was killed: %v", err)
	}
	if after := pids(); after["a"] == first["a"] {
		t.Errorf("a's worker killed by its CPU limit is still the one in use")
	}
	// The wall-time limit too: the worker is killed, the next render works.
	_, err := Render(context.Background(), Options{Root: root, Path: "w", Isolation: "a", Limits: Limits{MaxCPU: time.Minute, MaxTime: time.Second}})
	if !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "took longer than 1s") {
		t.Fatalf("endless loop past the wall time: %v, want a wall-time limit error", err)
	}
	if err := render("a", "ok"); err != nil {
		t.Fatalf("render after a worker was stopped at its wall time: %v", err)
	}
	workers.closeIdle()
	if n := workers.total.Load(); n != 0 {
		t.Errorf("%d worker(s) left running", n)
	}
}
