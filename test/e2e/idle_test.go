//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/testutil/kubetest"
)

// agentProcess runs `converge agent` as a process of its own (logs in
// $TMPDIR/converge-e2e-NAME.log), stopped when the test ends.
func agentProcess(t *testing.T, name, kubeconfig string, args ...string) *exec.Cmd {
	t.Helper()
	logs, err := os.Create(filepath.Join(os.TempDir(), "converge-e2e-"+name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(convergeBinary(t), append([]string{"agent", "--kubeconfig", kubeconfig, "--metrics-bind-address", "0",
		"--health-probe-bind-address", "0", "--webhook-bind-address", "", "--sealing-bind-address", "",
		"--cache-dir", t.TempDir(), "--key-bits", "2048"}, args...)...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logs.Close() })
	return cmd
}

// identityKubeconfig returns a kubeconfig for a ServiceAccount of its own
// in ns bound to cluster-admin, and the user name the audit log shows for
// it: an agent run with it can be told apart from every other client.
func identityKubeconfig(t *testing.T, ns, name string) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	user, unbind, err := kubetest.AdminKubeconfig(context.Background(), cluster.Client, cluster.Config, ns, name, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unbind)
	return path, user
}

// 100 idle apps cost the agent no API request beyond its watches, and one
// ls-remote per interval for their shared repository; and being idle
// misses nothing: a deleted or edited object is restored at once.
func TestFaults_HundredIdleAppsMakeNoAPIRequests(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	kubeconfig, user := identityKubeconfig(t, ns, "idle-agent")
	agentProcess(t, "idle-agent", kubeconfig, "--system-namespace", ns, "--watch-label-selector", strictAgentLabel+"=idle")

	const n = 100
	const interval = 3 * time.Second
	ctx := context.Background()
	repo, _ := a.manyApps(t, ns, n, interval, map[string]string{strictAgentLabel: "idle"})

	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	requests := func() []string {
		events, err := audit.Since(func(e kubetest.AuditEvent) bool { return e.User.Username == user && e.Verb != "watch" })
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range events {
			out = append(out, e.Verb+" "+e.RequestURI)
		}
		return out
	}
	// After a sync, each app plans once more from what its watches show;
	// from then on it is idle. Wait for a whole interval without a request.
	kubetest.Eventually(t, time.Minute, "the agent goes quiet", func(ctx context.Context) (bool, error) {
		if err := audit.Mark(); err != nil {
			return false, err
		}
		time.Sleep(interval)
		got := requests()
		return len(got) == 0, fmt.Errorf("%d requests in an interval, e.g. %v", len(got), first(got))
	})

	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	before := a.git.Fetches(repo.Name)
	window := 3 * interval
	observe(t, window, "three idle intervals")
	fetches := a.git.Fetches(repo.Name) - before
	if got := requests(); len(got) > 0 {
		t.Errorf("100 idle apps made %d API requests in %s, want 0: %v", len(got), window, first(got))
	}
	// One ls-remote per interval (two smart-HTTP requests), shared by all
	// 100 apps; one extra interval for timing at the edges.
	if max := int64(2 * (window/interval + 1)); fetches > max {
		t.Errorf("100 apps made %d upload-pack requests in %s; want at most %d (one ls-remote per interval)", fetches, window, max)
	}
	t.Logf("%s of idle for 100 apps: 0 API requests, %d upload-pack requests", window, fetches)

	// Idle misses nothing: a deletion and an edit are healed at once.
	cm := &corev1.ConfigMap{}
	if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cm-07"}, cm); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Client.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	edited := &corev1.ConfigMap{}
	if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cm-42"}, edited); err != nil {
		t.Fatal(err)
	}
	edited.Data["i"] = "tampered"
	if err := cluster.Client.Update(ctx, edited); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 15*time.Second, "drift healed", func(ctx context.Context) (bool, error) {
		var a, b corev1.ConfigMap
		if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cm-07"}, &a); err != nil {
			return false, err
		}
		if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cm-42"}, &b); err != nil {
			return false, err
		}
		return b.Data["i"] == "42", fmt.Errorf("cm-42 i=%q", b.Data["i"])
	})
}
