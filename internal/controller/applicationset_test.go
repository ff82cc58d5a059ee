package controller

import (
	"context"
	"sort"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// The clusters generator of a set under a Tenant sees only the Clusters
// the Tenant allows; a set no Tenant governs sees them all.
func TestAppSetClusters_OnlyWhatTheTenantAllows(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	tenant := &v1alpha1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "gen-" + ns},
		Spec: v1alpha1.TenantSpec{Namespaces: []string{ns}, ServiceAccountName: "deployer", Clusters: []string{"staging-*"}}}
	for _, c := range []string{"staging-" + ns, "prod-" + ns} {
		cl := &v1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: c}, Spec: v1alpha1.ClusterSpec{Server: "https://" + c + ".example.com", SecretRef: v1alpha1.LocalObjectReference{Name: c}}}
		if err := env.Client.Create(ctx, cl); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), cl) })
	}
	if err := env.Client.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), tenant) })
	r := &ApplicationSetReconciler{Client: env.Client, Apps: &ApplicationReconciler{Client: env.Client}}
	names := func(namespace string) []string {
		got, err := r.clusters(ctx, namespace)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range got {
			if c.Name == "staging-"+ns || c.Name == "prod-"+ns {
				out = append(out, c.Name)
			}
		}
		sort.Strings(out)
		return out
	}
	if got := names(ns); len(got) != 1 || got[0] != "staging-"+ns {
		t.Errorf("under the Tenant: %v, want only staging-%s", got, ns)
	}
	if got := names("default"); len(got) != 2 {
		t.Errorf("no Tenant: %v, want both", got)
	}
}

func TestTemplateVerifies(t *testing.T) {
	for raw, want := range map[string]bool{
		`{"source":{"repoURL":"x","verify":{"secretRef":{"name":"keys"}}}}`: true,
		`{"source":{"repoURL":"x"}}`:                                        false,
		`{"source":{"repoURL":"x","verify":null}}`:                          false,
	} {
		set := &v1alpha1.ApplicationSet{Spec: v1alpha1.ApplicationSetSpec{Template: v1alpha1.ApplicationTemplate{Spec: runtime.RawExtension{Raw: []byte(raw)}}}}
		if got := templateVerifies(set); got != want {
			t.Errorf("%s: %v, want %v", raw, got, want)
		}
	}
}
