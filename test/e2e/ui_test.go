//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
)

const (
	// uiSecret is the value of a Secret in Git; uiLiveSecret is put in
	// the live Secret by hand. Neither may appear anywhere in the UI.
	uiSecret     = "ui-secret-value-3f9a"
	uiLiveSecret = "ui-live-secret-77c1"
)

// uiRepo is a repository with a CRD and one of its objects, a Deployment, a
// ConfigMap and a Secret, authored by Ada.
func uiRepo(t *testing.T, a *agentEnv, ns string) (*gitserver.Repo, string) {
	t.Helper()
	group := ns + ".example.com"
	repo, err := a.git.NewRepo(ns + "-web")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"deploy/crd.yaml": fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.%[1]s
spec:
  group: %[1]s
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
`, group),
		"deploy/widget.yaml": fmt.Sprintf("apiVersion: %s/v1\nkind: Widget\nmetadata:\n  name: gear\nspec:\n  size: 3\n", group),
		"deploy/web.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: registry.invalid/web:1
`,
		"deploy/cm.yaml":     fmt.Sprintf(agentCM, "first"),
		"deploy/secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: " + uiSecret + "\n",
	}
	if err := repo.Write(files); err != nil {
		t.Fatal(err)
	}
	sha, err := repo.CommitAs("main", "Add the web app", "Ada Lovelace", "ada@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return repo, sha
}

func uiApp(a *agentEnv, repo *gitserver.Repo, ns, name string, policy v1alpha1.SyncPolicy) *v1alpha1.Application {
	return &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
			SyncPolicy: policy,
		},
	}
}

func healthy(rev string) func(*v1alpha1.Application) bool {
	return func(app *v1alpha1.Application) bool {
		return synced(rev)(app) && app.Status.Health.Status == v1alpha1.HealthHealthy
	}
}

// noSecrets fails when any form of the Secret values is in s.
func noSecrets(t *testing.T, where, s string, values ...string) {
	t.Helper()
	for _, v := range values {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v))} {
			if strings.Contains(s, form) {
				t.Errorf("%s holds a Secret value (%q)", where, form)
			}
		}
	}
}

func TestUI_ShowsTheListTreeHistoryAndMaskedDiff(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, first := uiRepo(t, a, ns)
	// No self-heal: the live edits below stay for the diff to show.
	a.create(t, uiApp(a, repo, ns, "web", automated(true, false)))
	app := a.waitApp(t, ns, "web", 60*time.Second, "web synced and healthy", healthy(first))

	kubeconfig, _ := kubetest.LocalKubeconfig()
	signInURL, logs := localUI(t, kubeconfig)
	b := newBrowser(t)
	base := strings.SplitN(signInURL, "/login", 2)[0]
	row := fmt.Sprintf("#app-%s-web", ns)
	b.run("opening the list", chromedp.Navigate(signInURL), visible(row))
	sync := evalJS[string](b, fmt.Sprintf("document.querySelector(%q).dataset.sync", row))
	health := evalJS[string](b, fmt.Sprintf("document.querySelector(%q).dataset.health", row))
	if sync != string(app.Status.Sync.Status) || health != string(app.Status.Health.Status) {
		t.Errorf("the list shows sync %q, health %q; the Application says %s, %s", sync, health, app.Status.Sync.Status, app.Status.Health.Status)
	}
	if got := b.text(row + " .subject"); got != "Add the web app" {
		t.Errorf("the list's commit subject = %q", got)
	}
	b.run("filtering by namespace", chromedp.Navigate(base+"/?namespace="+ns), visible(row))
	b.screenshot("", "ui-apps.png")
	b.accessible("the Applications list")

	b.run("opening the app", chromedp.Navigate(base+"/apps/"+ns+"/web"), visible("#tree"))
	// The tree: the CRD before its Widget, the Deployment over its
	// ReplicaSet over its two Pods.
	refs := evalJS[[]string](b, `[...document.querySelectorAll("#tree li[data-ref]")].map(li => li.dataset.ref + " < " + li.dataset.parent)`)
	idx := func(prefix string) int {
		for i, r := range refs {
			if strings.HasPrefix(r, prefix) {
				return i
			}
		}
		return -1
	}
	if c, w := idx("CustomResourceDefinition/widgets."), idx("Widget/"+ns+"/gear"); c < 0 || w < 0 || c > w {
		t.Errorf("the tree does not put the CRD (%d) before its Widget (%d): %q", c, w, refs)
	}
	pods := 0
	for _, r := range refs {
		if strings.HasPrefix(r, "Pod/"+ns+"/web-") && strings.Contains(r, " < ReplicaSet/"+ns+"/web-") {
			pods++
		}
	}
	if idx("ReplicaSet/"+ns+"/web-") < 0 || !strings.HasSuffix(refs[idx("ReplicaSet/"+ns+"/web-")], " < Deployment/"+ns+"/web") || pods != 2 {
		t.Errorf("the tree does not show Deployment → ReplicaSet → 2 Pods: %q", refs)
	}
	b.screenshot("#tree", "ui-tree.png")
	// The same tree as a graph: every object a node linking to its page,
	// a line from each to what was made for it.
	b.run("drawing the graph", click("#view-graph"), visible("#graph"))
	nodes := evalJS[[]string](b, `[...document.querySelectorAll("#graph a.gnode")].map(a => a.dataset.ref)`)
	edges := evalJS[int](b, `document.querySelectorAll("#graph path.edge").length`)
	roots := 0
	for _, r := range refs {
		if strings.HasSuffix(r, " < ") {
			roots++
		}
	}
	if len(nodes) != len(refs) || edges != len(refs)-roots {
		t.Errorf("the graph has %d nodes and %d lines; the list %d objects, %d of them from Git: %q", len(nodes), edges, len(refs), roots, nodes)
	}
	b.accessible("an Application's graph")
	b.screenshot("#tree", "ui-graph.png")
	b.run("back to the list", click("#view-list"), visible("#tree li[data-ref]"))
	if h := b.text("#history tr[data-entry] .author"); !strings.Contains(h, "Ada Lovelace") {
		t.Errorf("the history's author = %q, want Ada Lovelace", h)
	}
	b.screenshot("#history", "ui-history.png")

	// Drift by hand: the diff shows both objects, the Secret masked.
	patch := func(obj client.Object, data string) {
		t.Helper()
		if err := cluster.Client.Patch(context.Background(), obj, client.RawPatch("application/merge-patch+json", []byte(data))); err != nil {
			t.Fatal(err)
		}
	}
	patch(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}}, `{"data":{"mode":"drifted"}}`)
	patch(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "creds"}}, `{"stringData":{"password":"`+uiLiveSecret+`"}}`)
	b.run("comparing", click("#diff-load"), visible("#diff-summary"))
	summary := b.text("#diff-summary")
	if !strings.Contains(summary, "2 to configure") {
		t.Errorf("diff summary = %q, want the ConfigMap and the Secret to configure", summary)
	}
	diff := b.text("#diff-body")
	for _, want := range []string{"ConfigMap/" + ns + "/settings", "Secret/" + ns + "/creds", "-  mode: drifted", "+  mode: first"} {
		if !strings.Contains(diff, want) {
			t.Errorf("the diff lacks %q:\n%s", want, diff)
		}
	}
	b.screenshot("#diff", "ui-diff.png")
	b.accessible("an Application's page with its diff")
	noSecrets(t, "the app page", b.html(), uiSecret, uiLiveSecret)
	data, err := os.ReadFile(logs)
	if err != nil {
		t.Fatal(err)
	}
	noSecrets(t, "converge ui's log", string(data), uiSecret, uiLiveSecret)
}

func TestUI_PushedCommitAppearsWithinASecondWithoutReload(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, first := a.newApp(t, ns, "live", automated(true, true))
	a.waitApp(t, ns, "live", 30*time.Second, "first synced", synced(first))
	kubeconfig, _ := kubetest.LocalKubeconfig()
	signInURL, _ := localUI(t, kubeconfig)
	base := strings.SplitN(signInURL, "/login", 2)[0]
	b := newBrowser(t)
	b.run("opening the app", chromedp.Navigate(signInURL), chromedp.Navigate(base+"/apps/"+ns+"/live"),
		visible("#live-dot.on"))
	// A mark that a reload would wipe.
	evalJS[bool](b, `window.notReloaded = true`)
	entries := func() int {
		return evalJS[int](b, `document.querySelectorAll("#history tr[data-entry]").length`)
	}
	before := entries()

	second := commitMode(t, repo, "second", "Second change", "Grace")
	a.push(t, repo, "refs/heads/main")
	// When the Application's status says so, and when the page does.
	seen := make(chan time.Time, 1)
	go func() {
		app := &v1alpha1.Application{}
		for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if a.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "live"}, app) == nil && app.Status.Sync.Revision == second {
				seen <- time.Now()
				return
			}
		}
		close(seen)
	}()
	var shown time.Time
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if rev := evalJS[string](b, `document.getElementById("app-revision").dataset.revision`); rev == second {
			shown = time.Now()
			break
		}
	}
	changed, ok := <-seen
	if !ok || shown.IsZero() {
		t.Fatalf("the new revision %s did not reach the status (%v) or the page (%v)", second[:12], ok, !shown.IsZero())
	}
	if lag := shown.Sub(changed); lag > time.Second {
		t.Errorf("the page showed the new revision %v after the Application's status did, want under 1s", lag)
	} else {
		t.Logf("the page showed the new revision %v after the status", lag.Round(time.Millisecond))
	}
	kubetest.Eventually(t, 5*time.Second, "the new history entry on the page", func(context.Context) (bool, error) {
		n := entries()
		return n > before, fmt.Errorf("%d entries, was %d", n, before)
	})
	if got := b.text("#history tr[data-entry] .author"); !strings.Contains(got, "Grace") {
		t.Errorf("newest history entry's author = %q, want Grace", got)
	}
	if kept := evalJS[bool](b, `window.notReloaded === true`); !kept {
		t.Error("the page reloaded to show the change")
	}
}

// viewer makes ServiceAccount ns/name with rules in ns and returns a token
// for it and its user name.
func viewer(t *testing.T, ns, name string, rules []rbacv1.PolicyRule) (string, string) {
	t.Helper()
	ctx := context.Background()
	c := cluster.Client
	for _, obj := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: rules},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}},
	} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	path := t.TempDir() + "/kubeconfig"
	user, err := kubetest.ServiceAccountKubeconfig(ctx, cluster.Config, ns, name, path)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return kc.AuthInfos[name].Token, user
}

var (
	readApps = rbacv1.PolicyRule{APIGroups: []string{"converge.dev"}, Resources: []string{"applications"}, Verbs: []string{"get", "list", "watch"}}
	readObjs = rbacv1.PolicyRule{APIGroups: []string{"", "apps"}, Resources: []string{"configmaps", "events", "pods", "deployments", "replicasets"}, Verbs: []string{"get", "list", "watch"}}
)

// signInBrowser signs the browser in to the agent's UI with token.
func (b *browser) signIn(base, token string) {
	b.t.Helper()
	b.run("signing in", chromedp.Navigate(base+"/login"), visible("#token"),
		setValue("#token", token), chromedp.Submit(chromedp.CSS("#token")),
		visible("#apps"))
}

func TestUI_ActionsFromThePageAreRecordedWithTheViewer(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, first := a.newApp(t, ns, "acts", automated(true, true))
	a.waitApp(t, ns, "acts", 30*time.Second, "first synced", synced(first))
	second := commitMode(t, repo, "second", "Second change", "Grace")
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "acts", 30*time.Second, "second synced", synced(second))
	token, user := viewer(t, ns, "operator", []rbacv1.PolicyRule{
		{APIGroups: []string{"converge.dev"}, Resources: []string{"applications"}, Verbs: []string{"get", "list", "watch", "patch", "update"}}, readObjs,
	})

	b := newBrowser(t)
	b.signIn(a.ui, token)
	if got := b.text(".who .user"); got != user {
		t.Errorf("signed in as %q, want %q", got, user)
	}
	page := a.ui + "/apps/" + ns + "/acts"
	open := func() { b.run("opening the app", chromedp.Navigate(page), visible("#summary")) }
	app := func() *v1alpha1.Application {
		got := &v1alpha1.Application{}
		if err := a.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "acts"}, got); err != nil {
			t.Fatal(err)
		}
		return got
	}

	open()
	b.confirm("#act-sync")
	if msg := b.text(".flash"); !strings.Contains(msg, "Sync requested") {
		t.Fatalf("after Sync the page says %q", msg)
	}
	requested := app().Annotations[v1alpha1.AnnotationRequestedAt]
	a.waitApp(t, ns, "acts", 30*time.Second, "the sync request handled", func(got *v1alpha1.Application) bool {
		return requested != "" && got.Status.LastHandledRequest == requested
	})

	b.confirm("#act-suspend")
	if !app().Spec.Suspend {
		t.Fatal("Suspend did not suspend the Application")
	}
	b.confirm("#act-resume")
	if app().Spec.Suspend {
		t.Fatal("Resume did not resume the Application")
	}

	// Pin to the first revision, then unpin.
	b.run("choosing the first revision", visible("#rollback-target"))
	b.confirm("#act-pin")
	a.waitApp(t, ns, "acts", 30*time.Second, "pinned to the first revision", func(got *v1alpha1.Application) bool {
		return got.Spec.Pin != nil && got.Spec.Pin.Revision == first && got.Status.Sync.Revision == first
	})
	open()
	b.confirm("#act-unpin")
	a.waitApp(t, ns, "acts", 30*time.Second, "unpinned and back at the tip", synced(second))

	// A Git-native rollback to the first revision's content.
	open()
	b.confirm("#act-rollback")
	a.waitApp(t, ns, "acts", 30*time.Second, "rolled back in Git", func(got *v1alpha1.Application) bool {
		return got.Status.Rollback != nil && got.Status.Rollback.Commit != "" && synced(got.Status.Rollback.Commit)(got)
	})
	if got := configMapMode(t, ns); got != "first" {
		t.Errorf("after the rollback mode = %q, want first", got)
	}

	h := history(t, ns, "acts", "--actions")
	did := map[string]string{}
	for _, act := range h.Actions {
		did[act.Action] = act.User
	}
	for _, want := range []string{"sync-request", "suspend", "resume", "pin", "unpin", "rollback"} {
		if did[want] != user {
			t.Errorf("action %s recorded by %q, want %q (actions: %v)", want, did[want], user, did)
		}
	}
	var manual bool
	for _, e := range history(t, ns, "acts").Entries {
		if e.Trigger.Type == engine.TriggerManual && e.Trigger.User == user {
			manual = true
		}
	}
	if !manual {
		t.Errorf("no sync in the history was triggered by %s", user)
	}
	open()
	if got := b.text("#actions tbody tr .user"); got != user {
		t.Errorf("the page's newest action is by %q, want %q", got, user)
	}
}

func TestUI_NamespaceViewerSeesOnlyItsNamespaceAndSyncIsRefused(t *testing.T) {
	a := startAgent(t)
	mine := kubetest.Namespace(t, cluster.Client)
	other := kubetest.Namespace(t, cluster.Client)
	_, rev := a.newApp(t, mine, "mine", automated(true, true))
	_, otherRev := a.newApp(t, other, "theirs", automated(true, true))
	a.waitApp(t, mine, "mine", 30*time.Second, "mine synced", synced(rev))
	a.waitApp(t, other, "theirs", 30*time.Second, "theirs synced", synced(otherRev))
	token, _ := viewer(t, mine, "reader", []rbacv1.PolicyRule{readApps, readObjs})

	b := newBrowser(t)
	b.signIn(a.ui, token)
	apps := evalJS[[]string](b, `[...document.querySelectorAll("#apps tbody tr")].map(tr => tr.dataset.app)`)
	if len(apps) != 1 || apps[0] != mine+"/mine" {
		t.Errorf("a viewer of %s sees %q, want only %s/mine", mine, apps, mine)
	}
	if html := b.html(); strings.Contains(html, other) {
		t.Errorf("the list page names the other namespace %s", other)
	}
	b.run("opening the other namespace's app", chromedp.Navigate(a.ui+"/apps/"+other+"/theirs"), visible("main h1"))
	if got := b.text("main h1"); got != "Not allowed" {
		t.Errorf("another namespace's app shows %q, want Not allowed", got)
	}

	b.run("opening its own app", chromedp.Navigate(a.ui+"/apps/"+mine+"/mine"), visible("#act-sync"))
	b.confirm("#act-sync")
	msg := b.text("#error")
	if !strings.Contains(msg, "refused by the cluster") || !strings.Contains(msg, "cannot patch resource") {
		t.Errorf("a refused sync says %q", msg)
	}
	got := &v1alpha1.Application{}
	if err := a.client.Get(context.Background(), client.ObjectKey{Namespace: mine, Name: "mine"}, got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations[v1alpha1.AnnotationRequestedAt] != "" {
		t.Error("the refused sync was requested anyway")
	}
}

func TestUI_RefusesRequestsWithoutSessionOrCSRFToken(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	_, rev := a.newApp(t, ns, "guarded", automated(true, true))
	a.waitApp(t, ns, "guarded", 30*time.Second, "synced", synced(rev))
	token, _ := viewer(t, ns, "operator", []rbacv1.PolicyRule{
		{APIGroups: []string{"converge.dev"}, Resources: []string{"applications"}, Verbs: []string{"get", "list", "watch", "patch"}}, readObjs,
	})
	action := a.ui + "/apps/" + ns + "/guarded/suspend"
	post := func(c *http.Client, form url.Values, header map[string]string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, action, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(&http.Client{}, url.Values{"csrf": {"anything"}}, nil); code != http.StatusUnauthorized {
		t.Errorf("POST without a session: %d, want 401", code)
	}
	c, csrf := signIn(t, a.ui, token)
	if code := post(c, url.Values{}, nil); code != http.StatusForbidden {
		t.Errorf("POST without a CSRF token: %d, want 403", code)
	}
	if code := post(c, url.Values{"csrf": {csrf + "x"}}, nil); code != http.StatusForbidden {
		t.Errorf("POST with a wrong CSRF token: %d, want 403", code)
	}
	if code := post(c, url.Values{"csrf": {csrf}}, map[string]string{"Origin": "https://evil.example"}); code != http.StatusForbidden {
		t.Errorf("POST from another origin: %d, want 403", code)
	}
	got := &v1alpha1.Application{}
	if err := a.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "guarded"}, got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Suspend {
		t.Fatal("a refused request suspended the Application")
	}
	if code := post(c, url.Values{"csrf": {csrf}}, nil); code != http.StatusSeeOther {
		t.Errorf("POST with the session's CSRF token: %d, want 303", code)
	}
	if err := a.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "guarded"}, got); err != nil {
		t.Fatal(err)
	}
	if !got.Spec.Suspend {
		t.Error("the good request did not suspend the Application")
	}
	// Sign-in refuses a token the cluster does not accept, and a page
	// without a session leads to sign-in.
	resp, err := (&http.Client{}).Get(a.ui + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.Path != "/login" {
		t.Errorf("a page without a session led to %s, want /login", resp.Request.URL.Path)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
}

func TestUI_SealsInTheBrowserForTheAgentToOpen(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	const plaintext = "sealed-in-the-page-5d2e"
	kubeconfig, _ := kubetest.LocalKubeconfig()
	kubetest.Eventually(t, 30*time.Second, "the sealing certificate published", func(ctx context.Context) (bool, error) {
		var cm corev1.ConfigMap
		err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: "converge-system", Name: "converge-sealing-cert"}, &cm)
		return err == nil, err
	})
	signInURL, logs := localUI(t, kubeconfig)
	base := strings.SplitN(signInURL, "/login", 2)[0]
	b := newBrowser(t)
	b.run("sealing", chromedp.Navigate(signInURL), chromedp.Navigate(base+"/sealedsecrets"),
		visible("#seal-form"),
		setValue("#seal-namespace", ns),
		setValue("#seal-name", "db"),
		setValue("#seal-value", plaintext),
		click("#seal-button"),
		chromedp.Poll[chromedp.Void](`document.getElementById("seal-output").value.startsWith("apiVersion")`))
	out := b.value("#seal-output")
	b.accessible("the Sealed Secrets page")
	noSecrets(t, "the sealing page after sealing", b.html(), plaintext)
	if strings.Contains(out, plaintext) {
		t.Fatal("the sealed YAML holds the plaintext")
	}
	ss := &v1alpha1.SealedSecret{}
	if err := yaml.UnmarshalStrict([]byte(out), ss); err != nil {
		t.Fatalf("the page's YAML: %v\n%s", err, out)
	}
	if err := a.client.Create(context.Background(), ss); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 30*time.Second, "the agent opened the sealed value", func(ctx context.Context) (bool, error) {
		var s corev1.Secret
		if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "db"}, &s); err != nil {
			return false, err
		}
		return string(s.Data["password"]) == plaintext, fmt.Errorf("Secret db has other data")
	})
	// The list shows it, its key and the key id, never the value.
	b.run("listing", chromedp.Navigate(base+"/sealedsecrets"), visible("table.sealed"))
	html := b.html()
	if !strings.Contains(html, ns+"/</span>db") {
		t.Errorf("the SealedSecret %s/db is not listed", ns)
	}
	noSecrets(t, "the SealedSecrets page", html, plaintext)
	for _, f := range []string{logs, a.logs} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		noSecrets(t, f, string(data), plaintext)
	}
}

func TestUI_OneWatchPerKindHoweverManyPagesAreOpen(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	_, rev := a.newApp(t, ns, "watched", automated(true, true))
	a.waitApp(t, ns, "watched", 30*time.Second, "synced", synced(rev))
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	// converge ui as an account of its own, so its requests stand apart.
	kubeconfig := t.TempDir() + "/kubeconfig"
	user, unbind, err := kubetest.AdminKubeconfig(context.Background(), cluster.Client, cluster.Config, ns, "ui-watcher", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	defer unbind()
	signInURL, _ := localUI(t, kubeconfig)
	base := strings.SplitN(signInURL, "/login", 2)[0]
	first := newBrowser(t)
	first.run("signing in", chromedp.Navigate(signInURL), visible("#apps"))
	// Six pages: three lists and three of the app, each in its own tab.
	var lists []*browser
	for i := 0; i < 6; i++ {
		tab := first.newTab()
		page := base + "/"
		if i%2 == 1 {
			page = base + "/apps/" + ns + "/watched"
		} else {
			lists = append(lists, tab)
		}
		tab.run("opening page "+page, chromedp.Navigate(page))
		tab.waitLive()
	}
	// A new Application appears on every open list.
	ns2 := kubetest.Namespace(t, cluster.Client)
	_, rev2 := a.newApp(t, ns2, "newcomer", automated(true, true))
	a.waitApp(t, ns2, "newcomer", 30*time.Second, "newcomer synced", synced(rev2))
	for _, tab := range lists {
		ctx, cancel := context.WithTimeout(tab.ctx, 10*time.Second)
		err := tab.waitJS(ctx, fmt.Sprintf(`(r => r !== null && r.dataset.sync === "Synced")(document.getElementById("app-%s-newcomer"))`, ns2))
		cancel()
		if err != nil {
			t.Fatalf("an open list did not show the new Application: %v", err)
		}
	}
	events, err := audit.Since(func(e kubetest.AuditEvent) bool { return e.User.Username == user && e.Verb == "watch" })
	if err != nil {
		t.Fatal(err)
	}
	watches := map[string]map[string]bool{}
	for _, e := range events {
		r := e.ObjectRef.Resource
		if watches[r] == nil {
			watches[r] = map[string]bool{}
		}
		watches[r][e.RequestURI+e.Received.String()] = true
	}
	for _, r := range []string{"applications", "configmaps", "events"} {
		if n := len(watches[r]); n != 1 {
			t.Errorf("%d watches of %s for six open pages, want 1", n, r)
		}
	}
	if len(watches) != 3 {
		t.Errorf("watched %d kinds, want 3: %v", len(watches), watches)
	}
}
