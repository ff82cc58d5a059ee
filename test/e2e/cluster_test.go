//go:build e2e

// Package e2e holds end-to-end tests that run against the local cluster
// (make cluster-up): a real control plane with a scheduler, a controller
// manager and kwok nodes, so workloads really roll out.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/testutil/kubetest"
)

var cluster *kubetest.Env

func TestMain(m *testing.M) {
	// The in-process CLI's renders re-execute this binary as their worker.
	render.ServeWorkerIfRequested()
	// controller-runtime keeps the first logger set in a process: set it
	// before any in-process converge command does, so the agent's logs
	// (reconciles included) land in one file.
	if f, err := os.Create(filepath.Join(os.TempDir(), "converge-e2e-controller.log")); err == nil {
		ctrllog.SetLogger(funcr.NewJSON(func(obj string) { fmt.Fprintln(f, obj) }, funcr.Options{Verbosity: 1}))
	}
	var err error
	cluster, err = kubetest.LocalCluster()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := m.Run()
	if agent != nil {
		// The shared agent's repositories and Git cache.
		_ = os.RemoveAll(agent.git.Root)
	}
	os.Exit(code)
}

func TestDeployment_BecomesAvailableOnKwokNodes(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, cluster.Client)
	replicas := int32(3)
	labels := map[string]string{"app": "web"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "nginx", Image: "nginx"}}},
			},
		},
	}
	if err := cluster.Client.Create(ctx, deploy); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 90*time.Second, "deployment web Available with 3 replicas", func(ctx context.Context) (bool, error) {
		var d appsv1.Deployment
		if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(deploy), &d); err != nil {
			return false, err
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue && d.Status.AvailableReplicas == replicas {
				return true, nil
			}
		}
		return false, fmt.Errorf("available %d/%d, conditions %v", d.Status.AvailableReplicas, replicas, d.Status.Conditions)
	})

	var pods corev1.PodList
	if err := cluster.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName == "" || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			t.Errorf("pod %s: node %q, phase %s, IP %q; want scheduled, Running, with an IP", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP)
		}
	}
}

func TestAuditLog_RecordsRequestsByVerbResourceAndUserAgent(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, cluster.Client)
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(cluster.Config)
	cfg.UserAgent = "converge-e2e-audit-probe"
	c, err := client.New(cfg, client.Options{Scheme: cluster.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: ns}}
	if err := c.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 5*time.Second, "the create in the audit log", func(context.Context) (bool, error) {
		events, err := audit.Since(func(e kubetest.AuditEvent) bool {
			return e.UserAgent == cfg.UserAgent && e.ObjectRef != nil && e.ObjectRef.Namespace == ns
		})
		if err != nil {
			return false, err
		}
		for _, e := range events {
			if e.Verb == "create" && e.ObjectRef.Resource == "configmaps" && e.Write() && !e.DryRun() {
				return true, nil
			}
		}
		return false, fmt.Errorf("%d matching events, none a create of configmaps", len(events))
	})
}
