//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/cli"
	"converge.dev/converge/internal/testutil/kubetest"
)

// The multi-tenant install's admission policies, bound here to one test
// namespace: only the agent writes history records, and a user names only
// themselves as the requester of a sync.
func TestAdmission_RecordsAndRequesterCannotBeForged(t *testing.T) {
	a := startAgent(t)
	ctx := context.Background()
	ns := kubetest.Namespace(t, cluster.Client)
	var nsObj corev1.Namespace
	if err := cluster.Client.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		t.Fatal(err)
	}
	objs, err := (&cli.InstallOptions{Namespace: "converge-system", Profile: cli.ProfileMultiTenant}).Manifests()
	if err != nil {
		t.Fatal(err)
	}
	suffix := "-" + ns
	for _, o := range objs {
		u := o.DeepCopy()
		switch u.GetKind() {
		case "ValidatingAdmissionPolicy":
		case "ValidatingAdmissionPolicyBinding":
			policy, _, _ := unstructured.NestedString(u.Object, "spec", "policyName")
			_ = unstructured.SetNestedField(u.Object, policy+suffix, "spec", "policyName")
			_ = unstructured.SetNestedMap(u.Object, map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{kubetest.TestLabel: nsObj.Labels[kubetest.TestLabel]}}}, "spec", "matchResources")
		default:
			continue
		}
		u.SetName(u.GetName() + suffix)
		if err := cluster.Client.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), u) })
	}
	agentUser := "system:serviceaccount:converge-system:converge-agent"
	for _, obj := range []client.Object{
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "editor", Namespace: ns}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"*"}},
			{APIGroups: []string{"converge.dev"}, Resources: []string{"applications"}, Verbs: []string{"*"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "editor", Namespace: ns},
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "editor"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: "alice"}, {Kind: "User", Name: "bob"}, {Kind: "User", Name: "ci"},
				{Kind: "ServiceAccount", Name: "converge-agent", Namespace: "converge-system"}}},
	} {
		if err := cluster.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	as := func(user string, groups ...string) client.Client {
		cfg := rest.CopyConfig(cluster.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
		c, err := client.New(cfg, client.Options{Scheme: a.client.Scheme()})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice, bob := as("alice", "system:authenticated"), as("bob", "system:authenticated")
	history := func(name string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{"converge.dev/record": "history", "converge.dev/app": "shop"}}, Data: map[string]string{"history": "[]"}}
	}
	// The policies take effect within a moment of their creation.
	kubetest.Eventually(t, 30*time.Second, "a forged history record is refused", func(ctx context.Context) (bool, error) {
		err := alice.Create(ctx, history("converge-history-forged"))
		if err == nil {
			_ = cluster.Client.Delete(ctx, history("converge-history-forged"))
			return false, nil
		}
		return strings.Contains(err.Error(), "written by the converge agent only"), err
	})
	if err := as("ci", "system:authenticated", cli.HistoryWritersGroup).Create(ctx, history("converge-history-ci")); err != nil {
		t.Errorf("a member of %s: %v", cli.HistoryWritersGroup, err)
	}
	if err := as(agentUser, "system:serviceaccounts").Create(ctx, history("converge-history-agent")); err != nil {
		t.Errorf("the agent: %v", err)
	}
	if err := alice.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: ns}}); err != nil {
		t.Errorf("an ordinary ConfigMap: %v", err)
	}
	if err := alice.Delete(ctx, history("converge-history-agent")); err == nil {
		t.Error("alice deleted a history record")
	}

	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns,
		Annotations: map[string]string{v1alpha1.AnnotationRequestedAt: "1", v1alpha1.AnnotationRequestedBy: "bob"}},
		Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: "https://git.example.com/shop.git"}, Suspend: true}}
	if err := alice.Create(ctx, app.DeepCopy()); err == nil || !strings.Contains(err.Error(), "may only name the requesting user (alice)") {
		t.Fatalf("alice naming bob: %v", err)
	}
	app.Annotations[v1alpha1.AnnotationRequestedBy] = "alice"
	if err := alice.Create(ctx, app); err != nil {
		t.Fatalf("alice naming herself: %v", err)
	}
	// Bob asks for a sync again, leaving alice's name on it.
	if err := bob.Get(ctx, client.ObjectKeyFromObject(app), app); err != nil {
		t.Fatal(err)
	}
	before := client.MergeFrom(app.DeepCopy())
	app.Annotations[v1alpha1.AnnotationRequestedAt] = "2"
	if err := bob.Patch(ctx, app, before); err == nil || !strings.Contains(err.Error(), "(bob)") {
		t.Fatalf("bob re-requesting under alice's name: %v", err)
	}
	if err := alice.Get(ctx, client.ObjectKeyFromObject(app), app); err != nil {
		t.Fatal(err)
	}
	before = client.MergeFrom(app.DeepCopy())
	app.Annotations[v1alpha1.AnnotationRequestedAt] = "3"
	app.Annotations[v1alpha1.AnnotationRequestedBy] = v1alpha1.RequestedByWebhook
	if err := as(agentUser, "system:serviceaccounts").Patch(ctx, app, before); err != nil {
		t.Errorf("the agent stamping a webhook request: %v", err)
	}
	// An edit that leaves the request alone needs no name.
	if err := alice.Get(ctx, client.ObjectKeyFromObject(app), app); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.Source.Path = "deploy"
	if err := alice.Patch(ctx, app, patch); err != nil {
		t.Errorf("an edit that is not a request: %v", err)
	}
}
