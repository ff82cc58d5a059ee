package v1alpha1_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

var env *kubetest.Env

func TestMain(m *testing.M) {
	kubetest.Main(m, kubetest.EnvOptions{
		CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd")},
		AddToScheme:       []func(*runtime.Scheme) error{v1alpha1.AddToScheme},
	}, &env)
}

func app(ns, name string, ref *v1alpha1.GitRef) *v1alpha1.Application {
	return &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{
			RepoURL: "https://git.example.com/shop.git", Path: "deploy", Ref: ref,
		}},
	}
}

func TestApplication_DefaultsAreApplied(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	a := app(ns, "shop", &v1alpha1.GitRef{Branch: "main"})
	if err := env.Client.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	var got v1alpha1.Application
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(a), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.SyncPolicy.Interval == nil || got.Spec.SyncPolicy.Interval.Duration.String() != "3m0s" || got.Spec.DeletionPolicy != v1alpha1.DeletionPolicyDelete {
		t.Errorf("defaults: interval %v, deletionPolicy %q", got.Spec.SyncPolicy.Interval, got.Spec.DeletionPolicy)
	}
}

func TestApplication_RejectsTwoRefsAndBadCommit(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	cases := map[string]struct {
		ref  *v1alpha1.GitRef
		want string
	}{
		"branch and tag": {&v1alpha1.GitRef{Branch: "main", Tag: "v1"}, "set at most one of branch, tag, semver and commit"},
		"short commit":   {&v1alpha1.GitRef{Commit: "abc123"}, "spec.source.ref.commit"},
	}
	i := 0
	for name, tc := range cases {
		i++
		err := env.Client.Create(ctx, app(ns, fmt.Sprintf("bad-%d", i), tc.ref))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want it to contain %q", name, err, tc.want)
		}
	}
	bad := app(ns, "no-scheme", nil)
	bad.Spec.Source.RepoURL = "git.example.com/shop"
	if err := env.Client.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "spec.source.repoURL") {
		t.Errorf("a repoURL without scheme: error = %v", err)
	}
}
