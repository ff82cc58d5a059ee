//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// An agent given --watch-namespace reconciles the Applications there and
// leaves every other namespace's alone.
func TestAgent_WatchNamespaceScopesTheAgent(t *testing.T) {
	a := startAgent(t)
	mine := kubetest.Namespace(t, cluster.Client)
	other := kubetest.Namespace(t, cluster.Client)
	kubeconfig, _ := identityKubeconfig(t, mine, "scoped-agent")
	agentProcess(t, "scoped-agent", kubeconfig, "--system-namespace", mine,
		"--watch-namespace", mine, "--selector", strictAgentLabel+"=scoped")

	rev := a.bigApp(t, mine, "in-scope", 2, "scoped")
	a.bigApp(t, other, "out-of-scope", 2, "scoped")
	a.waitApp(t, mine, "in-scope", 60*time.Second, "the app in the watched namespace synced", synced(rev))
	// A sync request made after the other app, answered: the agent has
	// seen everything made before it that it would ever see.
	if r := converge(t, "sync", "in-scope", "-n", mine, "--wait", "--timeout", "60s"); r.code != 0 {
		t.Fatalf("a sync request to the scoped agent: exit %d\n%s", r.code, r.output())
	}
	var app v1alpha1.Application
	if err := a.client.Get(context.Background(), client.ObjectKey{Namespace: other, Name: "out-of-scope"}, &app); err != nil {
		t.Fatal(err)
	}
	if app.Status.ObservedGeneration != 0 || app.Status.Sync.Revision != "" {
		t.Errorf("the app outside --watch-namespace was reconciled: %+v", app.Status)
	}
	if n, err := ownedConfigMaps(context.Background(), other, "out-of-scope"); err != nil || n != 0 {
		t.Errorf("the app outside --watch-namespace has %d objects (%v)", n, err)
	}
}
