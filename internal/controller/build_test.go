package controller

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/preview"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
)

// The reconciler and the preview resolve an app through one builder: for
// the same app they name the same revision (commit and the digest of its
// postBuild variables), and a change to a variable changes both alike.
func TestBuild_PreviewAndReconcilerNameTheSameRevision(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	srv, err := gitserver.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	repo, err := srv.NewRepo("app")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{"deploy/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  env: ${env}\n"}); err != nil {
		t.Fatal(err)
	}
	commit, err := repo.Commit("main", "first")
	if err != nil {
		t.Fatal(err)
	}
	vars := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "vars", Namespace: ns}, Data: map[string]string{"env": "staging"}}
	if err := env.Client.Create(ctx, vars); err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns}, Spec: v1alpha1.ApplicationSpec{
		Source: v1alpha1.ApplicationSource{RepoURL: srv.URL("app"), Path: "deploy",
			PostBuild: &v1alpha1.PostBuild{SubstituteFrom: []v1alpha1.SubstituteReference{{Kind: "ConfigMap", Name: "vars"}}}}}}

	sources, err := source.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	chartCache, err := charts.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	builder := &appspec.Builder{Sources: sources, Charts: chartCache}
	eng, err := engine.New(env.Config, engine.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	r := &ApplicationReconciler{Client: env.Client, Engine: eng, Secrets: env.Client, Builder: builder}
	p := &preview.Previewer{Builder: builder}
	revisions := func() (string, string) {
		t.Helper()
		run := &attempt{app: app, key: client.ObjectKeyFromObject(app)}
		if err := r.govern(ctx, run); err != nil {
			t.Fatal(err)
		}
		if err := r.source(ctx, run); err != nil {
			t.Fatal(err)
		}
		res, err := p.Preview(ctx, preview.Request{Config: env.Config, Client: env.Client, App: app, Engine: eng})
		if err != nil {
			t.Fatal(err)
		}
		return run.artifact.Revision, res.Revision
	}
	synced, previewed := revisions()
	if synced != previewed || !strings.HasPrefix(synced, commit+"+vars:") {
		t.Fatalf("reconciler's revision %q, preview's %q: want the same, %s+vars:<digest>", synced, previewed, commit)
	}
	vars.Data["env"] = "prod"
	if err := env.Client.Update(ctx, vars); err != nil {
		t.Fatal(err)
	}
	synced2, previewed2 := revisions()
	if synced2 != previewed2 || synced2 == synced {
		t.Errorf("after a variable changed: reconciler's %q, preview's %q (before %q): want the same, and new", synced2, previewed2, synced)
	}
}
