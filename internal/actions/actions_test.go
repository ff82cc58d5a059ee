package actions

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/testutil/kubetest"
)

var env *kubetest.Env

func TestMain(m *testing.M) { kubetest.Main(m, kubetest.WithConvergeAPI(kubetest.EnvOptions{}), &env) }

// Each action changes the Application as it says, and the audit trail
// (history record and Event) names who did what.
func TestActions_RecordWhoDidWhat(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: "https://git.example.com/shop", Path: "."}}}
	if err := env.Client.Create(ctx, app); err != nil {
		t.Fatal(err)
	}
	a := As(env.Client, "alice", "cli")
	if _, err := a.Suspend(ctx, ns, "shop"); err != nil {
		t.Fatal(err)
	}
	d, err := a.Resume(ctx, ns, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if d.App.Spec.Suspend || d.Request == "" || d.App.Annotations[v1alpha1.AnnotationRequestedBy] != "alice" || d.App.Annotations[v1alpha1.AnnotationRequestedAt] != d.Request {
		t.Errorf("resumed app: suspend %v, annotations %v, request %q", d.App.Spec.Suspend, d.App.Annotations, d.Request)
	}
	if _, err := a.Unpin(ctx, ns, "shop"); err == nil || !strings.Contains(err.Error(), "not pinned") {
		t.Errorf("unpin of an unpinned app: %v", err)
	}
	h, err := engine.LoadHistory(ctx, env.Client, engine.App{Name: "shop", Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range h.Actions {
		got = append(got, e.User+" "+e.Action)
	}
	// Newest first; the refused unpin is not an action done.
	if strings.Join(got, ", ") != "alice resume, alice suspend" {
		t.Errorf("recorded actions: %v", got)
	}
	var events corev1.EventList
	if err := env.Client.List(ctx, &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range events.Items {
		if e.Reason == v1alpha1.ReasonAction {
			msgs = append(msgs, e.Message)
		}
	}
	if all := strings.Join(msgs, "|"); !strings.Contains(all, "suspend by alice") || !strings.Contains(all, "resume by alice") {
		t.Errorf("events: %v", msgs)
	}
}
