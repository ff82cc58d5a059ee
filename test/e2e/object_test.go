//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/actions"
	"converge.dev/converge/internal/testutil/kubetest"
)

const dayTwoSecret = "day-two-s3cr3t-value"

// podLogFile is what the local cluster's fake containers print; the test
// puts it back as it was.
func podLogFile(t *testing.T) string {
	t.Helper()
	kc, err := kubetest.LocalKubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(filepath.Dir(kc), "pod.log")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the local cluster has no pod log (%v): run `make cluster-up` again", err)
	}
	t.Cleanup(func() { _ = os.WriteFile(path, before, 0o644) })
	return path
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// dayTwoApp is a Deployment, a Secret and a Job that fails (its pod fits
// no node and its deadline is 3 s).
func dayTwoApp(t *testing.T, a *agentEnv, ns string) string {
	t.Helper()
	repo, err := a.git.NewRepo(ns + "-daytwo")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{
		"deploy/web.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: registry.invalid/web:1
`,
		"deploy/secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: " + dayTwoSecret + "\n",
		"deploy/job.yaml": `apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 3
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {no-such-node: "true"}
      containers:
      - name: migrate
        image: registry.invalid/migrate:1
`,
	}); err != nil {
		t.Fatal(err)
	}
	sha, err := repo.Commit("main", "day two")
	if err != nil {
		t.Fatal(err)
	}
	app := uiApp(a, repo, ns, "daytwo", automated(true, false))
	if err := a.client.Create(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.client.Delete(context.Background(), app) })
	return sha
}

// TestUI_ObjectPagesShowLogsEventsManifestsAndAct opens the page of each
// kind of object of an app's tree in Chromium: a Pod's logs (served by the
// local cluster's kwok kubelets) and events, a Secret's manifest with its
// values hidden, and every resource action, each checked in the cluster
// and in the app's history as the viewer.
func TestUI_ObjectPagesShowLogsEventsManifestsAndAct(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	rev := dayTwoApp(t, a, ns)
	a.waitApp(t, ns, "daytwo", 60*time.Second, "synced (its Job fails, so not Ready)", func(app *v1alpha1.Application) bool {
		return app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.Sync.Revision == rev
	})
	token, user := viewer(t, ns, "oncall", []rbacv1.PolicyRule{
		{APIGroups: []string{"converge.dev"}, Resources: []string{"applications"}, Verbs: []string{"get", "list", "watch", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"pods", "events", "secrets"}, Verbs: []string{"get", "list", "watch", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments", "replicasets"}, Verbs: []string{"get", "list", "watch", "patch"}},
		{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"get", "list", "watch", "delete"}},
	})
	ctx := context.Background()
	b := newBrowser(t)
	b.signIn(a.ui, token)
	object := func(group, kind, name string) string {
		q := url.Values{"group": {group}, "kind": {kind}, "namespace": {ns}, "name": {name}}
		return a.ui + "/apps/" + ns + "/daytwo/object?" + q.Encode()
	}

	// The tree links to the Deployment's page; its manifest is live.
	b.run("opening the app", chromedp.Navigate(a.ui+"/apps/"+ns+"/daytwo"), visible("#tree"))
	b.run("following the Deployment's link", click(`#tree a.name[href*="kind=Deployment"]`), visible("#manifest-text"))
	if m := b.text("#manifest-text"); !strings.Contains(m, "kind: Deployment") || strings.Contains(m, "managedFields") {
		t.Errorf("the Deployment's manifest:\n%s", m)
	}
	b.confirm("#act-restart")
	if msg := b.text(".flash"); !strings.Contains(msg, "Restarted") {
		t.Fatalf("after Restart the page says %q", msg)
	}
	var dep appsv1.Deployment
	if err := a.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &dep); err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Template.Annotations[actions.RestartedAtAnnotation] == "" {
		t.Error("Restart did not stamp the pod template")
	}
	b.run("choosing 3 replicas", setValue("#scale-replicas", "3"))
	b.confirm("#act-scale")
	if err := a.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &dep); err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Errorf("after Scale the Deployment wants %v replicas, want 3", dep.Spec.Replicas)
	}

	// A pod of the restarted template (kwok runs it at once).
	var pod corev1.Pod
	if err := kubetest.WaitFor(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		if err := a.client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app": "web"}); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Annotations[actions.RestartedAtAnnotation] != "" {
				pod = p
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("no pod of the restarted Deployment ran: %v", err)
	}
	// A Pod: its logs from the (fake) kubelet, its events.
	b.run("opening the pod", chromedp.Navigate(object("", "Pod", pod.Name)), visible("#logs"))
	if logs := b.text("#log-text"); !strings.Contains(logs, "this pod runs on a kwok node") {
		t.Errorf("the pod's log shows %q", logs)
	}
	if ev := b.text("#events"); !strings.Contains(ev, "Scheduled") {
		t.Errorf("the pod's events: %q", ev)
	}
	// Followed, the log shows what the container prints next (kwok tails
	// the cluster's pod.log for every container).
	b.run("following the log", click("#log-follow"), until(`document.getElementById("log-follow").textContent === "Stop following"`))
	podLog := podLogFile(t)
	printed := fmt.Sprintf("printed while followed %d", time.Now().UnixNano())
	appendFile(t, podLog, time.Now().UTC().Format(time.RFC3339Nano)+" stdout F "+printed+"\n")
	b.run("waiting for the new line", until(fmt.Sprintf(`document.getElementById("log-text").textContent.includes(%q)`, printed)))
	b.run("stopping", click("#log-follow"), until(`document.getElementById("log-follow").textContent === "Follow"`))
	b.screenshot("main", "ui-object-pod.png")
	b.accessible("a pod's page")
	b.confirm("#act-delete")
	if err := kubetest.WaitFor(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		err := a.client.Get(ctx, client.ObjectKeyFromObject(&pod), &corev1.Pod{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	}); err != nil {
		t.Errorf("the deleted pod is still there: %v", err)
	}

	// A Secret's values never reach the page.
	b.run("opening the Secret", chromedp.Navigate(object("", "Secret", "creds")), visible("#manifest-text"))
	if m := b.text("#manifest-text"); !strings.Contains(m, "(hidden: ") {
		t.Errorf("the Secret's manifest:\n%s", m)
	}
	noSecrets(t, "the Secret's page", b.html(), dayTwoSecret)

	// A failed Job is run again.
	var job batchv1.Job
	if err := kubetest.WaitFor(ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
		if err := a.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "migrate"}, &job); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		for _, c := range job.Status.Conditions {
			if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("the Job never failed: %v", err)
	}
	b.run("opening the Job", chromedp.Navigate(object("batch", "Job", "migrate")), visible("#act-retry"))
	b.confirm("#act-retry")
	if err := kubetest.WaitFor(ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
		var again batchv1.Job
		if err := a.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "migrate"}, &again); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return again.UID != job.UID, nil
	}); err != nil {
		t.Errorf("the retried Job was not created again: %v", err)
	}

	h := history(t, ns, "daytwo", "--actions")
	did := map[string]string{}
	for _, act := range h.Actions {
		did[act.Action] = act.User + " " + act.Detail
	}
	for action, object := range map[string]string{"restart": "Deployment.apps " + ns + "/web", "scale": "to 3",
		"delete-pod": "Pod " + ns + "/" + pod.Name, "retry-job": "Job.batch " + ns + "/migrate"} {
		if got := did[action]; !strings.HasPrefix(got, user+" ") || !strings.Contains(got, object) {
			t.Errorf("history's %s: %q, want by %s naming %s", action, got, user, object)
		}
	}
}
