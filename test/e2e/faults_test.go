//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

func fetchFailed(contains ...string) func(*v1alpha1.Application) bool {
	return func(a *v1alpha1.Application) bool {
		ready := apimeta.FindStatusCondition(a.Status.Conditions, v1alpha1.ConditionReady)
		if ready == nil || ready.Reason != v1alpha1.ReasonFetchFailed {
			return false
		}
		for _, c := range contains {
			if !strings.Contains(ready.Message, c) {
				return false
			}
		}
		return true
	}
}

// A Git server that accepts connections and never answers fails its own
// apps' fetch within the agent's git timeout; apps on other servers keep
// syncing meanwhile.
func TestFaults_StallingGitServerFailsOnlyItsApps(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var held sync.WaitGroup
	defer func() { l.Close(); close(stop); held.Wait() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held.Add(1)
			go func() { defer held.Done(); defer c.Close(); <-stop }()
		}
	}()
	stalled := "http://" + l.Addr().String() + "/stall.git"
	for i := range 3 {
		app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("stalled-%d", i), Namespace: ns},
			Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: stalled}, SyncPolicy: automated(true, true)}}
		if err := a.client.Create(context.Background(), app); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.client.Delete(context.Background(), app) })
	}
	_, rev := a.newApp(t, ns, "healthy", automated(true, true))
	a.waitApp(t, ns, "healthy", 30*time.Second, "an app on another server syncs", synced(rev))
	a.waitApp(t, ns, "stalled-0", 30*time.Second, "the stalled fetch fails in time", fetchFailed(stalled, "no answer within 5s"))
}

// A force-push that rewrites history: the new tip syncs, and a rollback to
// a revision the server no longer has is refused with a clear message.
func TestFaults_ForcePushSyncsTheNewTipAndRollbackRefusesTheLostRevision(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, first := a.newApp(t, ns, "rewritten", automated(true, true))
	a.waitApp(t, ns, "rewritten", 30*time.Second, "synced", synced(first))
	rewritten, err := repo.Rewrite("main", "history rewritten", map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "rewritten")})
	if err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "rewritten", 30*time.Second, "the new tip synced", synced(rewritten))
	if mode := configMapMode(t, ns); mode != "rewritten" {
		t.Fatalf("mode = %q", mode)
	}
	r := converge(t, "rollback", "rewritten", first, "-n", ns, "--timeout", "30s")
	if r.code == 0 || !strings.Contains(r.output(), first[:12]+" is not in the history of branch main any more") {
		t.Fatalf("rollback to a lost revision: exit %d\n%s", r.code, r.output())
	}
	t.Logf("refused: %s", r.stderr)
	if mode := configMapMode(t, ns); mode != "rewritten" {
		t.Errorf("after the refused rollback: mode = %q", mode)
	}
}

// A repository deleted on the server: the app fails its fetch, naming the
// URL, and nothing it synced is pruned.
func TestFaults_DeletedRepositoryPrunesNothing(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, first := a.newApp(t, ns, "deleted", automated(true, true))
	a.waitApp(t, ns, "deleted", 30*time.Second, "synced", synced(first))
	if err := os.RemoveAll(repo.Bare); err != nil {
		t.Fatal(err)
	}
	if r := converge(t, "sync", "deleted", "-n", ns); r.code != 0 {
		t.Fatalf("sync request: %s", r.output())
	}
	got := a.waitApp(t, ns, "deleted", 30*time.Second, "FetchFailed naming the URL", fetchFailed(a.git.URL(repo.Name)))
	if got.Status.Sync.Revision != first {
		t.Errorf("revision %s, want the last synced %s", got.Status.Sync.Revision, first)
	}
	if mode := configMapMode(t, ns); mode != "first" {
		t.Errorf("the synced state was not kept: mode = %q", mode)
	}
}

// A flood of webhook deliveries for one repository coalesces: a handful
// of fetches, and one history entry for the new commit.
func TestFaults_WebhookFloodCoalesces(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, first := a.newApp(t, ns, "flooded", automated(true, true))
	a.waitApp(t, ns, "flooded", 30*time.Second, "synced", synced(first))
	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "second")}); err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit("main", "second")
	if err != nil {
		t.Fatal(err)
	}
	before := a.git.Fetches(repo.Name)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				resp, err := http.DefaultClient.Do(a.pushRequest(repo, "refs/heads/main"))
				if err != nil {
					continue
				}
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("answers: %v", codes)
	a.waitApp(t, ns, "flooded", 30*time.Second, "the new commit synced", synced(second))
	// The agent that serves the webhook reconciles the app: the pushes
	// were handed over in memory, and nothing was written to it.
	app := a.waitApp(t, ns, "flooded", 30*time.Second, "synced", synced(second))
	if at := app.Annotations[v1alpha1.AnnotationRequestedAt]; at != "" {
		t.Errorf("the webhook wrote a sync request (%s) to an app its own agent reconciles", at)
	}
	fetches := a.git.Fetches(repo.Name) - before
	if fetches > 20 {
		t.Errorf("%d deliveries made %d upload-pack requests; want them coalesced", 200, fetches)
	}
	r := converge(t, "history", "flooded", "-n", ns, "-o", "json")
	if n := strings.Count(r.stdout, second); n != 1 {
		t.Errorf("history mentions the new commit %d times, want once:\n%s", n, r.stdout)
	}
	t.Logf("200 deliveries: %d upload-pack requests", fetches)
}

// buildConverge builds the converge binary once per test binary.
var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

func convergeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := kubetest.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "converge-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "converge")
		build := exec.Command("go", "build", "-o", builtBin, "./cmd/converge")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// Two agent processes with leader election: the first holds the Lease and
// syncs; killed with SIGKILL (no chance to release it), the second takes
// over within the lease duration and syncs the next request.
func TestFaults_LeaderDiesAndTheOtherReplicaTakesOver(t *testing.T) {
	a := startAgent(t)
	sys := kubetest.Namespace(t, cluster.Client)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	// Each replica acts as an account of its own, so the audit log tells
	// whose writes are whose.
	users := map[string]string{}
	start := func(name string) *exec.Cmd {
		kubeconfig, user := identityKubeconfig(t, sys, name)
		users[name] = user
		return agentProcess(t, name, kubeconfig, "--system-namespace", sys, "--leader-elect", "--lease-duration", "4s",
			"--watch-label-selector", strictAgentLabel+"=ha")
	}
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	holder := func() string {
		var lease coordinationv1.Lease
		if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: sys, Name: "converge-agent.converge.dev"}, &lease); err != nil {
			return ""
		}
		if lease.Spec.HolderIdentity == nil {
			return ""
		}
		return *lease.Spec.HolderIdentity
	}
	first := start("replica-1")
	var leader string
	kubetest.Eventually(t, 30*time.Second, "the first replica leads", func(ctx context.Context) (bool, error) {
		leader = holder()
		return leader != "", fmt.Errorf("no Lease holder yet")
	})
	start("replica-2")

	repo, rev := a.labelledApp(t, ns, "ha", "first", map[string]string{strictAgentLabel: "ha"})
	a.waitApp(t, ns, "ha", 30*time.Second, "the leader syncs", synced(rev))

	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	kubetest.Eventually(t, 30*time.Second, "the other replica takes the Lease", func(ctx context.Context) (bool, error) {
		h := holder()
		return h != "" && h != leader, fmt.Errorf("holder %q", h)
	})
	took := time.Since(killed)
	t.Logf("the Lease changed hands %s after the kill", took.Round(10*time.Millisecond))
	if took > 4*time.Second+5*time.Second {
		t.Errorf("takeover took %s, want within the 4s lease plus a retry", took)
	}
	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "second")}); err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit("main", "second")
	if err != nil {
		t.Fatal(err)
	}
	if r := converge(t, "sync", "ha", "-n", ns); r.code != 0 {
		t.Fatalf("sync request: %s", r.output())
	}
	a.waitApp(t, ns, "ha", 30*time.Second, "the new leader syncs", synced(second))
	if mode := configMapMode(t, ns); mode != "second" {
		t.Errorf("mode = %q", mode)
	}
	// One writer at a time: the first replica wrote to the app's
	// namespace only before it died, the second only after.
	writes, err := audit.Since(func(e kubetest.AuditEvent) bool {
		return e.Write() && e.ObjectRef != nil && e.ObjectRef.Namespace == ns
	})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range writes {
		switch e.User.Username {
		case users["replica-1"]:
			count["replica-1"]++
			if e.Received.After(killed) {
				t.Errorf("replica-1 wrote after it was killed: %s %s", e.Verb, e.RequestURI)
			}
		case users["replica-2"]:
			count["replica-2"]++
			if e.Received.Before(killed) {
				t.Errorf("replica-2 wrote while replica-1 led: %s %s", e.Verb, e.RequestURI)
			}
		}
	}
	if count["replica-1"] == 0 || count["replica-2"] == 0 {
		t.Errorf("writes to the app's namespace by replica: %v; want both, one after the other", count)
	}
	t.Logf("writes to the app's namespace: %v, none overlapping", count)
}
