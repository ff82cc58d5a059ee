//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
)

// countingRegistry is go-containerregistry's registry on loopback,
// counting the requests it receives.
type countingRegistry struct {
	*httptest.Server
	host     string
	requests atomic.Int64
}

func newCountingRegistry(t *testing.T) *countingRegistry {
	t.Helper()
	r := &countingRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	r.host = strings.TrimPrefix(r.URL, "http://")
	return r
}

// pushImage pushes a random image to repository:tag and returns its
// digest.
func (r *countingRegistry) pushImage(t *testing.T, repository, tag string) string {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(r.host+"/"+repository+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d.String()
}

const webDeployment = `# The web tier. Its image is kept current by converge.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}   # flow style stays as it is
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: %s/team/web:1.0.0 # {"$imagepolicy": "%s:web"}
          ports: [{containerPort: 80}]
`

// imageAutomation makes the repository, policy and automation of one
// image in ns, writing to repo's main branch.
func imageAutomation(t *testing.T, a *agentEnv, ns string, reg *countingRegistry, repo *gitserver.Repo, edit func(*v1alpha1.ImageRepository, *v1alpha1.ImageUpdateAutomation)) {
	t.Helper()
	ir := &v1alpha1.ImageRepository{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: v1alpha1.ImageRepositorySpec{
		Image: reg.host + "/team/web", Insecure: true, Interval: &metav1.Duration{Duration: 10 * time.Second}}}
	policy := &v1alpha1.ImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: v1alpha1.ImagePolicySpec{
		ImageRepositoryRef: v1alpha1.LocalObjectReference{Name: "web"},
		Policy:             v1alpha1.ImagePolicyChoice{Semver: &v1alpha1.SemverPolicy{Range: ">=1.0.0 <2.0.0"}}}}
	auto := &v1alpha1.ImageUpdateAutomation{ObjectMeta: metav1.ObjectMeta{Name: "images", Namespace: ns}, Spec: v1alpha1.ImageUpdateAutomationSpec{
		RepoURL: a.git.URL(repo.Name), Branch: "main", Path: "deploy", Interval: &metav1.Duration{Duration: 10 * time.Second},
		Commit: v1alpha1.ImageCommit{AuthorName: "Image Bot", AuthorEmail: "bot@example.com"}}}
	if edit != nil {
		edit(ir, auto)
	}
	for _, obj := range []client.Object{ir, policy, auto} {
		if err := a.client.Create(context.Background(), obj); err != nil {
			t.Fatal(err)
		}
	}
}

func policyLatest(t *testing.T, a *agentEnv, ns, name string) *v1alpha1.ImagePolicy {
	t.Helper()
	p := &v1alpha1.ImagePolicy{}
	if err := a.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// A tag in range becomes exactly one commit, changing only the tag (every
// comment and the flow style kept), the app syncs it at once, and its
// history names the automation and the tags as the trigger. A prerelease
// and a tag outside the range are never chosen.
func TestImages_ANewTagBecomesOneReviewedCommitTheAppSyncs(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	reg := newCountingRegistry(t)
	for _, tag := range []string{"1.0.0", "1.1.0", "2.0.0-rc.1"} {
		reg.pushImage(t, "team/web", tag)
	}
	repo, err := a.git.NewRepo(ns + "-web")
	if err != nil {
		t.Fatal(err)
	}
	before := fmt.Sprintf(webDeployment, reg.host, ns)
	if err := repo.Write(map[string]string{"deploy/web.yaml": before}); err != nil {
		t.Fatal(err)
	}
	first, err := repo.Commit("main", "web at 1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: v1alpha1.ApplicationSpec{
		Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"}, SyncPolicy: automated(true, true)}}
	a.create(t, app)
	a.waitApp(t, ns, "web", 30*time.Second, "synced at 1.0.0", synced(first))

	// The team hears of each update through an Alert that asks for it.
	rcv := newReceiver(t)
	for _, obj := range []client.Object{
		&v1alpha1.Notifier{ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: ns}, Spec: v1alpha1.NotifierSpec{Type: "webhook", URL: rcv.URL + "/images"}},
		&v1alpha1.Alert{ObjectMeta: metav1.ObjectMeta{Name: "images", Namespace: ns}, Spec: v1alpha1.AlertSpec{
			NotifierRef: v1alpha1.LocalObjectReference{Name: "team"}, Events: []v1alpha1.NotifyEvent{v1alpha1.NotifyImageUpdated, v1alpha1.NotifyImageUpdateFailed}}},
	} {
		if err := a.client.Create(context.Background(), obj); err != nil {
			t.Fatal(err)
		}
	}
	imageAutomation(t, a, ns, reg, repo, nil)
	var second string
	kubetest.Eventually(t, 30*time.Second, "one commit on main", func(context.Context) (bool, error) {
		second = headOf(t, repo, "main")
		return second != first, nil
	})
	a.waitApp(t, ns, "web", 30*time.Second, "synced at the automation's commit", synced(second))
	if err := repo.Pull("main"); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(repo.Work, "deploy", "web.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(before, "/team/web:1.0.0 #", "/team/web:1.1.0 #", 1); string(after) != want {
		t.Errorf("deploy/web.yaml after the automation:\n%s\nwant (only the tag changed):\n%s", after, want)
	}
	show, _ := exec.Command("git", "-C", repo.Bare, "log", "-1", "--format=%an <%ae>%n%B", second).Output()
	if !strings.Contains(string(show), "Image Bot <bot@example.com>") || !strings.Contains(string(show), ns+":web") || !strings.Contains(string(show), "1.0.0 -> 1.1.0") {
		t.Errorf("commit message:\n%s\nwant the author and the policy's old and new tags", show)
	}
	if parent, _ := exec.Command("git", "-C", repo.Bare, "rev-parse", second+"^").Output(); strings.TrimSpace(string(parent)) != first {
		t.Errorf("the automation's commit's parent is %s, want %s (exactly one commit)", parent, first)
	}
	deploy := get(t, "apps/v1", "Deployment", ns, "web")
	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	if image := containers[0].(map[string]any)["image"]; image != reg.host+"/team/web:1.1.0" {
		t.Errorf("the Deployment runs %v, want 1.1.0", image)
	}
	h := history(t, ns, "web")
	if e := h.Entries[0]; e.Revision != second || e.Trigger.Type != engine.TriggerImageAutomation || !strings.Contains(e.Trigger.Detail, ns+":web 1.0.0 → 1.1.0") {
		t.Errorf("history entry %+v (trigger %+v): want the image automation with the old and new tags", e, e.Trigger)
	}
	p := policyLatest(t, a, ns, "web")
	if p.Status.LatestRef == nil || p.Status.LatestRef.Tag != "1.1.0" || p.Status.AppliedCommit != second || p.Status.AppliedAt == nil {
		t.Errorf("policy status %+v: want latest 1.1.0 applied at %s", p.Status, second)
	}

	// The web UI shows the policy's latest tag and the commit that applied it.
	kubeconfig, _ := kubetest.LocalKubeconfig()
	signInURL, _ := localUI(t, kubeconfig)
	b := newBrowser(t)
	b.run("images", chromedp.Navigate(signInURL), chromedp.Navigate(strings.SplitN(signInURL, "/login", 2)[0]+"/images"), visible("table.images"))
	if html := b.html(); !strings.Contains(html, ns+"/</span>web") || !strings.Contains(html, `<td class="mono latest">1.1.0</td>`) || !strings.Contains(html, second[:7]) {
		t.Errorf("the Images page does not show %s/web at 1.1.0 applied in %s", ns, second[:7])
	}
	b.accessible("the Images page")
	var note map[string]any
	if p := rcv.waitPost(t, "event", "ImageUpdated"); json.Unmarshal(p.body, &note) != nil || note["name"] != "images" || !strings.Contains(fmt.Sprint(note["message"]), "1.0.0 → 1.1.0") {
		t.Errorf("ImageUpdated notification: %s", p.body)
	}

	// A later tag in range: one more commit; one outside: none.
	reg.pushImage(t, "team/web", "2.0.0")
	reg.pushImage(t, "team/web", "1.2.0")
	var third string
	kubetest.Eventually(t, 60*time.Second, "a commit for 1.2.0", func(context.Context) (bool, error) {
		third = headOf(t, repo, "main")
		return third != second, nil
	})
	a.waitApp(t, ns, "web", 30*time.Second, "synced at 1.2.0", synced(third))
	if parent, _ := exec.Command("git", "-C", repo.Bare, "rev-parse", third+"^").Output(); strings.TrimSpace(string(parent)) != second {
		t.Errorf("the second automation commit's parent is %s, want %s", parent, second)
	}
}

// headOf is branch's commit on the server.
func headOf(t *testing.T, repo *gitserver.Repo, branch string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", repo.Bare, "rev-parse", branch).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// A policy of a repository that verifies signatures takes the best signed
// tag: an unsigned 1.2.0 is passed over for the signed 1.1.0.
func TestImages_ASignedImagesPolicyIgnoresAnUnsignedTag(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	reg := newCountingRegistry(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := cryptoutils.MarshalPublicKeyToPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.client.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cosign-keys", Namespace: ns}, Data: map[string][]byte{"cosign.pub": pub}}); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"1.0.0", "1.1.0"} {
		cosignSign(t, reg.host, "team/web", reg.pushImage(t, "team/web", tag), key)
	}
	reg.pushImage(t, "team/web", "1.2.0")
	ir := &v1alpha1.ImageRepository{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: v1alpha1.ImageRepositorySpec{
		Image: reg.host + "/team/web", Insecure: true, Verify: &v1alpha1.OCIVerification{Provider: "cosign", SecretRef: v1alpha1.LocalObjectReference{Name: "cosign-keys"}}}}
	policy := &v1alpha1.ImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: v1alpha1.ImagePolicySpec{
		ImageRepositoryRef: v1alpha1.LocalObjectReference{Name: "web"},
		Policy:             v1alpha1.ImagePolicyChoice{Semver: &v1alpha1.SemverPolicy{Range: ">=1.0.0 <2.0.0"}}}}
	for _, obj := range []client.Object{ir, policy} {
		if err := a.client.Create(context.Background(), obj); err != nil {
			t.Fatal(err)
		}
	}
	kubetest.Eventually(t, 30*time.Second, "the policy chooses 1.1.0", func(context.Context) (bool, error) {
		p := policyLatest(t, a, ns, "web")
		if p.Status.LatestRef == nil {
			return false, nil
		}
		if p.Status.LatestRef.Tag != "1.1.0" {
			return false, fmt.Errorf("chose %s", p.Status.LatestRef.Tag)
		}
		return true, nil
	})
	// Once 1.2.0 is signed, it is chosen.
	d, err := remote.Head(mustRef(t, reg.host+"/team/web:1.2.0"))
	if err != nil {
		t.Fatal(err)
	}
	cosignSign(t, reg.host, "team/web", d.Digest.String(), key)
	patch := client.MergeFrom(ir.DeepCopy())
	ir.Spec.TagLimit = 500 // a spec change scans again at once
	if err := a.client.Patch(context.Background(), ir, patch); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 30*time.Second, "the policy chooses the signed 1.2.0", func(context.Context) (bool, error) {
		p := policyLatest(t, a, ns, "web")
		return p.Status.LatestRef != nil && p.Status.LatestRef.Tag == "1.2.0", nil
	})
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// A tenant's ImageRepository naming a registry its Tenant does not allow
// is refused, naming the field, before the registry hears anything; its
// policy says why it has no tag.
func TestImages_ATenantsRegistryOutsideItsTenantIsRefusedUnasked(t *testing.T) {
	te := newTenant(t)
	reg := newCountingRegistry(t)
	reg.pushImage(t, "team/web", "1.0.0")
	asked := reg.requests.Load()
	ir := &v1alpha1.ImageRepository{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: te.ns}, Spec: v1alpha1.ImageRepositorySpec{Image: reg.host + "/team/web", Insecure: true}}
	policy := &v1alpha1.ImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: te.ns}, Spec: v1alpha1.ImagePolicySpec{
		ImageRepositoryRef: v1alpha1.LocalObjectReference{Name: "web"},
		Policy:             v1alpha1.ImagePolicyChoice{Semver: &v1alpha1.SemverPolicy{Range: ">=1.0.0"}}}}
	for _, obj := range []client.Object{ir, policy} {
		if err := te.client.Create(context.Background(), obj); err != nil {
			t.Fatal(err)
		}
	}
	kubetest.Eventually(t, 30*time.Second, "the ImageRepository is refused", func(ctx context.Context) (bool, error) {
		if err := te.client.Get(ctx, client.ObjectKeyFromObject(ir), ir); err != nil {
			return false, err
		}
		c := apimeta.FindStatusCondition(ir.Status.Conditions, v1alpha1.ConditionReady)
		return c != nil && c.Reason == v1alpha1.ReasonPolicyViolation && strings.Contains(c.Message, "imageRepos"), nil
	})
	kubetest.Eventually(t, 30*time.Second, "the policy says why", func(context.Context) (bool, error) {
		p := policyLatest(t, te.agentEnv, te.ns, "web")
		c := apimeta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "imageRepos") && p.Status.LatestRef == nil, nil
	})
	if n := reg.requests.Load() - asked; n != 0 {
		t.Errorf("the registry received %d requests for a refused repository, want 0", n)
	}
}

// 100 policies that see no new tags cost, per interval, no Git push and
// no apiserver write: a scan that finds the same tags, a policy that
// chooses the same tag and an automation with nothing to change write
// nothing.
func TestImages_HundredIdlePoliciesWriteNothing(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	reg := newCountingRegistry(t)
	reg.pushImage(t, "team/web", "1.0.0")
	repo, err := a.git.NewRepo(ns + "-idle")
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	files := map[string]string{}
	ctx := context.Background()
	for i := range n {
		files[fmt.Sprintf("deploy/web-%d.yaml", i)] = fmt.Sprintf("image: %s/team/web:1.0.0 # {\"$imagepolicy\": \"%s:web-%d\"}\n", reg.host, ns, i)
		if err := a.client.Create(ctx, &v1alpha1.ImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-%d", i), Namespace: ns}, Spec: v1alpha1.ImagePolicySpec{
			ImageRepositoryRef: v1alpha1.LocalObjectReference{Name: "web"},
			Policy:             v1alpha1.ImagePolicyChoice{Semver: &v1alpha1.SemverPolicy{Range: ">=1.0.0"}}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := repo.Write(files); err != nil {
		t.Fatal(err)
	}
	start, err := repo.Commit("main", "100 images")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.client.Create(ctx, &v1alpha1.ImageRepository{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: v1alpha1.ImageRepositorySpec{
		Image: reg.host + "/team/web", Insecure: true, Interval: &metav1.Duration{Duration: 10 * time.Second}}}); err != nil {
		t.Fatal(err)
	}
	if err := a.client.Create(ctx, &v1alpha1.ImageUpdateAutomation{ObjectMeta: metav1.ObjectMeta{Name: "images", Namespace: ns}, Spec: v1alpha1.ImageUpdateAutomationSpec{
		RepoURL: a.git.URL(repo.Name), Path: "deploy", Interval: &metav1.Duration{Duration: 10 * time.Second}}}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 60*time.Second, "100 policies choose 1.0.0 and the automation is up to date", func(ctx context.Context) (bool, error) {
		var list v1alpha1.ImagePolicyList
		if err := a.client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		chosen := 0
		for _, p := range list.Items {
			if p.Status.LatestRef != nil && p.Status.LatestRef.Tag == "1.0.0" {
				chosen++
			}
		}
		auto := &v1alpha1.ImageUpdateAutomation{}
		if err := a.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "images"}, auto); err != nil {
			return false, err
		}
		c := apimeta.FindStatusCondition(auto.Status.Conditions, v1alpha1.ConditionReady)
		return chosen == n && c != nil && c.Reason == "UpToDate" && strings.Contains(c.Message, fmt.Sprintf("of %d policies", n)), fmt.Errorf("%d chosen, automation %+v", chosen, c)
	})
	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	scans := reg.requests.Load()
	observe(t, 25*time.Second, "two idle intervals")
	writes, err := audit.Since(func(e kubetest.AuditEvent) bool { return e.Write() && e.ObjectRef.Namespace == ns })
	if err != nil {
		t.Fatal(err)
	}
	if len(writes) > 0 {
		t.Errorf("idle image automation made %d writes in its namespace, want 0: %v", len(writes), first(describeEvents(writes)))
	}
	if head := headOf(t, repo, "main"); head != start {
		t.Errorf("main moved to %s while idle, want no push", head)
	}
	if reg.requests.Load() == scans {
		t.Error("the registry was not scanned while idle: the test shows nothing")
	}
	t.Logf("25 s idle with 100 policies: 0 writes, 0 pushes, %d registry requests", reg.requests.Load()-scans)
}

func describeEvents(events []kubetest.AuditEvent) []string {
	out := make([]string, 0, len(events))
	for _, e := range events {
		b, _ := json.Marshal(e.ObjectRef)
		out = append(out, e.Verb+" "+string(b))
	}
	return out
}

// giteaPulls is the pull-request part of Gitea's API on loopback: it
// lists and opens pull requests, counting the ones it opens.
type giteaPulls struct {
	*httptest.Server
	mu     sync.Mutex
	open   []map[string]any
	opened int
}

func newGiteaPulls(t *testing.T, repository, token string) *giteaPulls {
	t.Helper()
	g := &giteaPulls{}
	path := "/api/v1/repos/" + repository + "/pulls"
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path || r.Header.Get("Authorization") != "token "+token {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		switch r.Method {
		case http.MethodGet:
			_ = json.NewEncoder(w).Encode(g.open)
		case http.MethodPost:
			var body struct{ Head, Base, Title string }
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Head == "" || body.Base == "" || body.Title == "" {
				http.Error(w, "bad request", http.StatusUnprocessableEntity)
				return
			}
			g.opened++
			pr := map[string]any{"html_url": fmt.Sprintf("%s/%s/pulls/%d", g.URL, repository, g.opened),
				"head": map[string]any{"ref": body.Head}, "base": map[string]any{"ref": body.Base}, "title": body.Title}
			g.open = append(g.open, pr)
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(pr)
		}
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *giteaPulls) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.opened
}

// In pull-request mode the commit goes to its own branch, rebuilt on main
// at every new tag, and one pull request is opened, then updated by the
// later push, never duplicated; main is left alone.
func TestImages_PullRequestModeKeepsOnePullRequest(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	reg := newCountingRegistry(t)
	reg.pushImage(t, "team/web", "1.0.0")
	repo, err := a.git.NewRepo(ns + "-pr")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{"deploy/web.yaml": fmt.Sprintf(webDeployment, reg.host, ns)}); err != nil {
		t.Fatal(err)
	}
	main, err := repo.Commit("main", "web at 1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	forge := newGiteaPulls(t, "team/web", "forge-secret")
	if err := a.client.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "forge", Namespace: ns}, StringData: map[string]string{"token": "forge-secret"}}); err != nil {
		t.Fatal(err)
	}
	imageAutomation(t, a, ns, reg, repo, func(_ *v1alpha1.ImageRepository, auto *v1alpha1.ImageUpdateAutomation) {
		auto.Spec.Push = &v1alpha1.ImagePush{Branch: "image-updates", PullRequest: &v1alpha1.ImagePullRequest{
			Provider: "gitea", URL: forge.URL, Repository: "team/web", SecretRef: v1alpha1.LocalObjectReference{Name: "forge"}}}
	})
	branchAt := func(tag string) string {
		var head string
		kubetest.Eventually(t, 60*time.Second, "image-updates holds "+tag, func(context.Context) (bool, error) {
			out, err := exec.Command("git", "-C", repo.Bare, "show", "image-updates:deploy/web.yaml").Output()
			if err != nil || !strings.Contains(string(out), "/team/web:"+tag+" #") {
				return false, nil
			}
			head = headOf(t, repo, "image-updates")
			return true, nil
		})
		if parent, _ := exec.Command("git", "-C", repo.Bare, "rev-parse", head+"^").Output(); strings.TrimSpace(string(parent)) != main {
			t.Errorf("image-updates at %s is not one commit on main (parent %s)", tag, parent)
		}
		return head
	}
	reg.pushImage(t, "team/web", "1.1.0")
	branchAt("1.1.0")
	kubetest.Eventually(t, 30*time.Second, "a pull request is opened", func(ctx context.Context) (bool, error) {
		auto := &v1alpha1.ImageUpdateAutomation{}
		if err := a.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "images"}, auto); err != nil {
			return false, err
		}
		return forge.count() == 1 && strings.HasSuffix(auto.Status.PullRequest, "/pulls/1"), nil
	})
	reg.pushImage(t, "team/web", "1.2.0")
	branchAt("1.2.0")
	// The automation's next run finds the open pull request.
	observe(t, 3*time.Second, "the automation after its push")
	if n := forge.count(); n != 1 {
		t.Errorf("%d pull requests opened, want 1 (updated, never duplicated)", n)
	}
	if head := headOf(t, repo, "main"); head != main {
		t.Errorf("main moved to %s in pull-request mode", head)
	}
}

// A tenant whose registry never answers holds at most its share of the
// scanning workers: another namespace's repository is scanned meanwhile.
func TestImages_ASlowTenantRegistryDoesNotHoldEveryScan(t *testing.T) {
	te := newTenant(t)
	ctx := context.Background()
	tenant := &v1alpha1.Tenant{}
	if err := te.client.Get(ctx, client.ObjectKey{Name: "e2e-" + te.ns}, tenant); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(tenant.DeepCopy())
	tenant.Spec.ImageRepos = []string{"127.0.0.1:*/**"}
	if err := te.client.Patch(ctx, tenant, patch); err != nil {
		t.Fatal(err)
	}
	// Every request hangs until the test ends.
	release := make(chan struct{})
	var asked atomic.Int64
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	host := strings.TrimPrefix(hang.URL, "http://")
	for i := range 10 {
		if err := te.client.Create(ctx, &v1alpha1.ImageRepository{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("slow-%d", i), Namespace: te.ns},
			Spec: v1alpha1.ImageRepositorySpec{Image: fmt.Sprintf("%s/team/slow-%d", host, i), Insecure: true}}); err != nil {
			t.Fatal(err)
		}
	}
	kubetest.Eventually(t, 20*time.Second, "the slow registry is asked", func(context.Context) (bool, error) {
		return asked.Load() >= 2, nil
	})
	ns := kubetest.Namespace(t, cluster.Client)
	reg := newCountingRegistry(t)
	reg.pushImage(t, "team/web", "1.0.0")
	for _, obj := range []client.Object{
		&v1alpha1.ImageRepository{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: v1alpha1.ImageRepositorySpec{Image: reg.host + "/team/web", Insecure: true}},
		&v1alpha1.ImagePolicy{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: v1alpha1.ImagePolicySpec{
			ImageRepositoryRef: v1alpha1.LocalObjectReference{Name: "web"}, Policy: v1alpha1.ImagePolicyChoice{Semver: &v1alpha1.SemverPolicy{Range: ">=1.0.0"}}}},
	} {
		if err := te.client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	kubetest.Eventually(t, 15*time.Second, "another namespace's policy chooses while the tenant's scans hang", func(context.Context) (bool, error) {
		p := policyLatest(t, te.agentEnv, ns, "web")
		return p.Status.LatestRef != nil && p.Status.LatestRef.Tag == "1.0.0", nil
	})
	if n := asked.Load(); n > 2 {
		t.Errorf("the tenant's slow registry holds %d scans at once, want at most 2", n)
	}
}
