//go:build e2e

package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// receiver records what is posted to it.
type receiver struct {
	*httptest.Server
	mu  sync.Mutex
	got []posted
}

type posted struct {
	path   string
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, posted{path: req.URL.Path, header: req.Header.Clone(), body: body})
		r.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) posts() []posted {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]posted(nil), r.got...)
}

// waitPost waits for a post whose JSON body has field == value.
func (r *receiver) waitPost(t *testing.T, field, value string) posted {
	t.Helper()
	var found posted
	kubetest.Eventually(t, 20*time.Second, fmt.Sprintf("a post with %s %s", field, value), func(context.Context) (bool, error) {
		for _, p := range r.posts() {
			var m map[string]any
			if json.Unmarshal(p.body, &m) == nil && m[field] == value {
				found = p
				return true, nil
			}
		}
		return false, fmt.Errorf("%d posts so far", len(r.posts()))
	})
	return found
}

func notifyApp(a *agentEnv, ns, name, url string, targets ...v1alpha1.NotifyTarget) *v1alpha1.Application {
	return &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: url, Path: "deploy"},
			SyncPolicy: automated(true, true),
			Notify:     targets,
		}}
}

func TestNotify_SignedWebhookForASuccessfulAndAFailedSync(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	rcv := newReceiver(t)
	const key = "notify-hmac-key"
	if err := cluster.Client.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hooks", Namespace: ns},
		Data: map[string][]byte{"hmac": []byte(key)}}); err != nil {
		t.Fatal(err)
	}
	repo, first := a.repoWith(t, ns+"-notify", map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "first")}, "first")
	a.create(t, notifyApp(a, ns, "hooked", a.git.URL(repo.Name),
		v1alpha1.NotifyTarget{Type: "webhook", URL: rcv.URL + "/converge", SecretRef: &v1alpha1.LocalObjectReference{Name: "hooks"}}))
	a.waitApp(t, ns, "hooked", 30*time.Second, "synced", synced(first))

	ok := rcv.waitPost(t, "event", "SyncSucceeded")
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write(ok.body)
	if got, want := ok.header.Get("X-Converge-Signature"), "sha256="+hex.EncodeToString(mac.Sum(nil)); got != want {
		t.Errorf("signature %q, want %q", got, want)
	}
	var ev map[string]any
	_ = json.Unmarshal(ok.body, &ev)
	if ev["namespace"] != ns || ev["name"] != "hooked" || ev["revision"] != first {
		t.Errorf("the event says %v", ev)
	}

	// A commit that cannot render: SyncFailed, signed too.
	if err := repo.Write(map[string]string{"deploy/cm.yaml": "kind: ConfigMap\n  broken: [yaml\n"}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "broken"); err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	failed := rcv.waitPost(t, "event", "SyncFailed")
	mac = hmac.New(sha256.New, []byte(key))
	mac.Write(failed.body)
	if got := failed.header.Get("X-Converge-Signature"); got != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
		t.Errorf("the failure's signature %q is wrong", got)
	}
}

func TestNotify_GiteaReceivesACommitStatusForTheSyncedCommit(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	gitea := newReceiver(t)
	if err := cluster.Client.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "forge", Namespace: ns},
		Data: map[string][]byte{"token": []byte("gitea-token-1")}}); err != nil {
		t.Fatal(err)
	}
	repo, first := a.repoWith(t, ns+"-status", map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "first")}, "first")
	a.create(t, notifyApp(a, ns, "statused", a.git.URL(repo.Name),
		v1alpha1.NotifyTarget{Type: "gitea", URL: gitea.URL, Repository: "platform/deploy", SecretRef: &v1alpha1.LocalObjectReference{Name: "forge"},
			Events: []v1alpha1.NotifyEvent{v1alpha1.NotifySyncSucceeded, v1alpha1.NotifySyncFailed}}))
	a.waitApp(t, ns, "statused", 30*time.Second, "synced", synced(first))
	p := gitea.waitPost(t, "state", "success")
	if want := "/api/v1/repos/platform/deploy/statuses/" + first; p.path != want {
		t.Errorf("status posted to %s, want %s", p.path, want)
	}
	if got := p.header.Get("Authorization"); got != "token gitea-token-1" {
		t.Errorf("Authorization %q", got)
	}
	var st map[string]string
	_ = json.Unmarshal(p.body, &st)
	if st["context"] != "converge/"+ns+"/statused" {
		t.Errorf("status %v", st)
	}
}

func TestNotify_AReceiverThatIsDownDelaysNothing(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	// A port nobody listens on, and one that accepts and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	stall := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-stall }))
	t.Cleanup(func() { close(stall); hang.Close() })
	repo, first := a.repoWith(t, ns+"-down", map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "first")}, "first")
	start := time.Now()
	a.create(t, notifyApp(a, ns, "unheard", a.git.URL(repo.Name),
		v1alpha1.NotifyTarget{Type: "webhook", URL: closed}, v1alpha1.NotifyTarget{Type: "slack", URL: hang.URL}))
	a.waitApp(t, ns, "unheard", 10*time.Second, "synced", synced(first))
	took := time.Since(start)
	second := commitMode(t, repo, "second", "Second change", "Grace")
	a.push(t, repo, "refs/heads/main")
	pushed := time.Now()
	a.waitApp(t, ns, "unheard", 5*time.Second, "second synced", synced(second))
	t.Logf("synced in %v with both receivers down, the push in %v", took.Round(time.Millisecond), time.Since(pushed).Round(time.Millisecond))
	if d := time.Since(pushed); d > 3*time.Second {
		t.Errorf("a push took %v to sync with the receivers down", d)
	}
}

// Notifiers and Alerts: one receiver shared by the apps an Alert selects,
// each event sent once per Notifier however many Alerts want it, and an
// error-only Alert quiet until a failure.
func TestNotify_AlertsSendTheSelectedAppsEventsToASharedNotifier(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	rcv := newReceiver(t)
	ctx := context.Background()
	for _, obj := range []client.Object{
		&v1alpha1.Notifier{ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: ns}, Spec: v1alpha1.NotifierSpec{Type: "webhook", URL: rcv.URL + "/team"}},
		&v1alpha1.Alert{ObjectMeta: metav1.ObjectMeta{Name: "shop-succeeded", Namespace: ns}, Spec: v1alpha1.AlertSpec{
			NotifierRef: v1alpha1.LocalObjectReference{Name: "team"}, Events: []v1alpha1.NotifyEvent{v1alpha1.NotifySyncSucceeded}, Names: []string{"shop"}}},
		// A second Alert wanting the same events of the same app: still
		// one delivery.
		&v1alpha1.Alert{ObjectMeta: metav1.ObjectMeta{Name: "team-a-everything", Namespace: ns}, Spec: v1alpha1.AlertSpec{
			NotifierRef: v1alpha1.LocalObjectReference{Name: "team"}, Applications: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}},
			Events: []v1alpha1.NotifyEvent{v1alpha1.NotifySyncSucceeded}}},
		&v1alpha1.Alert{ObjectMeta: metav1.ObjectMeta{Name: "errors", Namespace: ns}, Spec: v1alpha1.AlertSpec{
			NotifierRef: v1alpha1.LocalObjectReference{Name: "team"}, Severity: v1alpha1.SeverityError}},
	} {
		if err := a.client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	repo, first := a.repoWith(t, ns+"-alerts", map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "first")}, "first")
	shop := notifyApp(a, ns, "shop", a.git.URL(repo.Name))
	shop.Labels = map[string]string{"team": "a"}
	a.create(t, shop)
	a.waitApp(t, ns, "shop", 30*time.Second, "synced", synced(first))
	rcv.waitPost(t, "event", "SyncSucceeded")

	other, otherFirst := a.repoWith(t, ns+"-alerts-other", map[string]string{"deploy/cm2.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n"}, "first")
	o := notifyApp(a, ns, "other", a.git.URL(other.Name))
	o.Labels = map[string]string{"team": "b"}
	a.create(t, o)
	a.waitApp(t, ns, "other", 30*time.Second, "synced", synced(otherFirst))

	// A failure of shop: the error-only Alert sends it.
	if err := repo.Write(map[string]string{"deploy/cm.yaml": "kind: ConfigMap\n  broken: [yaml\n"}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "broken"); err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	failed := rcv.waitPost(t, "event", "SyncFailed")
	if failed.path != "/team" {
		t.Errorf("posted to %s", failed.path)
	}
	observe(t, 2*time.Second, "late deliveries")
	count := map[string]int{}
	for _, p := range rcv.posts() {
		var m map[string]any
		if err := json.Unmarshal(p.body, &m); err != nil {
			t.Fatal(err)
		}
		count[fmt.Sprintf("%v %v", m["name"], m["event"])]++
	}
	if count["shop SyncSucceeded"] != 1 {
		t.Errorf("shop's SyncSucceeded sent %d times, want once: %v", count["shop SyncSucceeded"], count)
	}
	for k := range count {
		if strings.HasPrefix(k, "other ") || k == "shop SyncStarted" {
			t.Errorf("sent %s, which no Alert selects: %v", k, count)
		}
	}
}

// TestNotify_FailuresAreToldOnceEachAcrossAnAgentRestart: an Alert for
// failures sends each of 2 failing apps' SyncFailed once to a Teams
// receiver (with a template) and once to a webhook; an agent that starts
// again and finds them still failing in the same way tells nobody again.
func TestNotify_FailuresAreToldOnceEachAcrossAnAgentRestart(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	kubeconfig, _ := identityKubeconfig(t, ns, "notify-agent")
	args := []string{"--system-namespace", ns, "--watch-label-selector", strictAgentLabel + "=notify-restart"}
	first := agentProcess(t, "notify-agent", kubeconfig, args...)
	rcv := newReceiver(t)
	ctx := context.Background()
	for _, obj := range []client.Object{
		&v1alpha1.Notifier{ObjectMeta: metav1.ObjectMeta{Name: "teams", Namespace: ns}, Spec: v1alpha1.NotifierSpec{Type: "msteams", URL: rcv.URL + "/teams",
			Template: "{{.Name}} failed at {{.ShortRevision}}: {{.Message}}"}},
		&v1alpha1.Notifier{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: ns}, Spec: v1alpha1.NotifierSpec{Type: "webhook", URL: rcv.URL + "/hook"}},
		&v1alpha1.Alert{ObjectMeta: metav1.ObjectMeta{Name: "failures-to-teams", Namespace: ns}, Spec: v1alpha1.AlertSpec{
			NotifierRef: v1alpha1.LocalObjectReference{Name: "teams"}, Severity: v1alpha1.SeverityError}},
		&v1alpha1.Alert{ObjectMeta: metav1.ObjectMeta{Name: "failures-to-hook", Namespace: ns}, Spec: v1alpha1.AlertSpec{
			NotifierRef: v1alpha1.LocalObjectReference{Name: "hook"}, Events: []v1alpha1.NotifyEvent{v1alpha1.NotifySyncFailed}}},
	} {
		if err := a.client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	var repos []string
	for _, name := range []string{"cart", "shop"} {
		repo, _ := a.repoWith(t, ns+"-"+name, map[string]string{"deploy/cm.yaml": "kind: ConfigMap\n  broken: [yaml\n"}, "broken from the start")
		app := notifyApp(a, ns, name, a.git.URL(repo.Name))
		app.Labels = map[string]string{strictAgentLabel: "notify-restart"}
		a.create(t, app)
		repos = append(repos, repo.Name)
	}
	// told: receiver path and app → deliveries.
	told := func() map[string]int {
		out := map[string]int{}
		for _, p := range rcv.posts() {
			var m map[string]any
			if err := json.Unmarshal(p.body, &m); err != nil {
				t.Fatal(err)
			}
			switch p.path {
			case "/hook":
				out[fmt.Sprintf("hook %v %v", m["name"], m["event"])]++
			case "/teams":
				out[fmt.Sprintf("teams %v", m["text"])]++
			}
		}
		return out
	}
	kubetest.Eventually(t, 30*time.Second, "both failures told to both receivers", func(context.Context) (bool, error) {
		return len(told()) == 4, fmt.Errorf("told so far: %v", told())
	})
	before := told()
	for k, n := range before {
		if n != 1 || (strings.HasPrefix(k, "teams ") && !strings.Contains(k, " failed at ")) {
			t.Errorf("%s: told %d times (want once, teams in the template's words): %v", k, n, before)
		}
	}

	// Again: a new agent, with an empty cache, fetches and fails both apps
	// anew.
	_ = first.Process.Kill()
	_ = first.Wait()
	fetched := map[string]int64{}
	for _, r := range repos {
		fetched[r] = a.git.Fetches(r)
	}
	agentProcess(t, "notify-agent-again", kubeconfig, args...)
	kubetest.Eventually(t, 30*time.Second, "the new agent fetching both apps", func(context.Context) (bool, error) {
		for _, r := range repos {
			if a.git.Fetches(r) <= fetched[r] {
				return false, fmt.Errorf("%s fetched %d times, %d before the restart", r, a.git.Fetches(r), fetched[r])
			}
		}
		return true, nil
	})
	observe(t, 3*time.Second, "deliveries after the restart")
	if after := told(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("after the restart: %v, before: %v (want nothing told again)", after, before)
	}
}
