//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/cli"
	"converge.dev/converge/internal/testutil/kubetest"
)

// result is what one converge invocation left behind.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) output() string { return r.stdout + r.stderr }

// converge runs the CLI in-process against the local cluster.
func converge(t *testing.T, args ...string) result {
	t.Helper()
	kubeconfig, err := kubetest.LocalKubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	return convergeWith(t, kubeconfig, args...)
}

// convergeWith runs the CLI in-process against the cluster of kubeconfig.
func convergeWith(t *testing.T, kubeconfig string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append(args, "--kubeconfig", kubeconfig)
	code := cli.Execute(context.Background(), cli.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
	r := result{stdout: out.String(), stderr: errOut.String(), code: code}
	t.Logf("converge %s -> exit %d\n%s", strings.Join(args[:len(args)-2], " "), code, r.stderr)
	return r
}

// convergeOffline runs a CLI command that needs no cluster (build, seal
// --cert), in-process.
func convergeOffline(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Execute(context.Background(), cli.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
	r := result{stdout: out.String(), stderr: errOut.String(), code: code}
	t.Logf("converge %s -> exit %d\n%s", strings.Join(args, " "), code, r.stderr)
	return r
}

// writeTree writes files (path -> content) under a fresh directory and
// returns it. Content may use {{NS}} for the test's namespace.
func writeTree(t *testing.T, ns string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), strings.ReplaceAll(content, "{{NS}}", ns))
	}
	return dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// get reads an object; nil when it does not exist.
func get(t *testing.T, apiVersion, kind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u)
	if client.IgnoreNotFound(err) != nil {
		t.Fatalf("get %s %s/%s: %v", kind, ns, name, err)
	}
	if err != nil {
		return nil
	}
	return u
}

// convergeRequests returns the requests converge's CLI made since the mark.
func convergeRequests(t *testing.T, audit *kubetest.AuditLog) []kubetest.AuditEvent {
	t.Helper()
	events, err := audit.Since(func(e kubetest.AuditEvent) bool { return e.UserAgent == "converge" })
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// observe lets d pass while the test watches for what must not happen
// (writes in the audit log, Job creations, history growth): a window the
// test states, never a wait for something to happen.
func observe(t *testing.T, d time.Duration, what string) {
	t.Helper()
	t.Logf("observing %s for %s", what, d)
	time.Sleep(d)
}

// corpusRepo is a repository of the corpus (test/e2e/compat/name) as it
// is, with each @@KEY@@ of vars replaced; its README.md is left out.
func corpusRepo(t *testing.T, name string, vars map[string]string) map[string]string {
	t.Helper()
	files := map[string]string{}
	for p, s := range corpus(t, name, ".") {
		p = strings.TrimPrefix(p, "./")
		if p == "README.md" {
			continue
		}
		for k, v := range vars {
			s = strings.ReplaceAll(s, "@@"+k+"@@", v)
		}
		if i := strings.Index(s, "@@"); i >= 0 {
			t.Fatalf("%s/%s: a placeholder is left: %.40s", name, p, s[i:])
		}
		files[p] = s
	}
	return files
}
