//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// The apiserver killed with SIGKILL while an agent applies 1,000 objects,
// then restarted: the sync retries and converges, and the status says
// what happened in between. (The file's name makes it run last: every
// client of the cluster sees the apiserver go.)
func TestFaults_ApiserverKilledMidSyncThenRestarted(t *testing.T) {
	a := startAgent(t)
	root, err := kubetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, _ := kubetest.LocalKubeconfig()
	dir := filepath.Dir(kubeconfig)
	pidData, err := os.ReadFile(filepath.Join(dir, "run", "kube-apiserver.pid"))
	if err != nil {
		t.Skipf("not the project's local cluster (%v)", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidData)))
	if err != nil {
		t.Fatal(err)
	}
	ns := kubetest.Namespace(t, cluster.Client)
	const n = 1000
	agentProcess(t, "apiserver-fault", kubeconfig, "--system-namespace", ns, "--watch-label-selector", strictAgentLabel+"=apiserver")
	rev := a.bigApp(t, ns, "big", n, "apiserver")
	at := waitMidSync(t, ns, "big", n)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the apiserver with %d of %d objects applied", at, n)
	// The agent meets the outage before the apiserver comes back.
	observe(t, 2*time.Second, "the agent without an apiserver")
	up := exec.Command(filepath.Join(root, "bin", "localcluster"), "--dir", dir, "--module-dir", filepath.Join(root, "tools", "localcluster"), "up")
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("restarting the apiserver: %v\n%s", err, out)
	}
	checkConverged(t, a, ns, "big", rev, n)
	app := a.waitApp(t, ns, "big", time.Minute, "synced", synced(rev))
	ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
	t.Logf("Ready: %s", ready.Message)
	if !strings.Contains(ready.Message, "failed attempt") {
		t.Errorf("Ready = %q: the status does not say the sync failed before it converged", ready.Message)
	}
}
