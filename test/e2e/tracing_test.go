//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
	"converge.dev/converge/internal/testutil/otlptest"
)

// With --otlp-endpoint, each reconcile is a trace: a reconcile span named
// for the app, with govern, source, render, plan, apply and the status
// write under it, sent
// to an OTLP/HTTP collector (here one on loopback).
func TestTracing_AReconcileIsATraceOfItsSteps(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	rcv := otlptest.New()
	defer rcv.Close()
	kubeconfig, _ := identityKubeconfig(t, ns, "traced-agent")
	agentProcess(t, "traced", kubeconfig, "--system-namespace", ns, "--watch-label-selector", strictAgentLabel+"=traced", "--otlp-endpoint", rcv.URL)

	repo, rev := a.repoWith(t, ns+"-traced", map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "traced")}, "traced")
	a.create(t, &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "traced", Namespace: ns, Labels: map[string]string{strictAgentLabel: "traced"}},
		Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"}, SyncPolicy: automated(true, true)}})
	a.waitApp(t, ns, "traced", 60*time.Second, "synced by the traced agent", synced(rev))

	want := []string{"apply", "govern", "plan", "render", "source", "status"}
	kubetest.Eventually(t, 30*time.Second, "the sync's trace received", func(context.Context) (bool, error) {
		spans := rcv.Spans()
		for _, root := range spans {
			if root.Name != "reconcile" || root.Attributes["app.name"] != "traced" || root.Attributes["app.namespace"] != ns || root.Attributes["revision"] != rev {
				continue
			}
			var children []string
			for _, s := range spans {
				if s.TraceID == root.TraceID && s.ParentID == root.ID {
					children = append(children, s.Name)
				}
			}
			sort.Strings(children)
			if strings.Join(children, ",") == strings.Join(want, ",") && root.Service == "converge-agent" {
				return true, nil
			}
		}
		return false, fmt.Errorf("%d spans, no reconcile of traced at %s with %v under it", len(spans), rev[:12], want)
	})
}
