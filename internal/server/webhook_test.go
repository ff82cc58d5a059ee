package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/source"
)

func sign(key, body string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

func TestParse_VerifiesEachProvider(t *testing.T) {
	h := &Webhook{Secret: []byte("s3cret")}
	github := `{"ref":"refs/heads/main","repository":{"clone_url":"https://git.example.com/org/shop.git","ssh_url":"git@git.example.com:org/shop.git"}}`
	gitlab := `{"ref":"refs/heads/main","project":{"git_http_url":"https://gitlab.example.com/org/shop.git"}}`
	cases := []struct {
		name   string
		header http.Header
		body   string
		ok     bool
	}{
		{"github signed", http.Header{"X-Github-Event": {"push"}, "X-Hub-Signature-256": {"sha256=" + sign("s3cret", github)}}, github, true},
		{"github wrong key", http.Header{"X-Github-Event": {"push"}, "X-Hub-Signature-256": {"sha256=" + sign("other", github)}}, github, false},
		{"github unsigned", http.Header{"X-Github-Event": {"push"}}, github, false},
		{"gitea signed", http.Header{"X-Gitea-Event": {"push"}, "X-Gitea-Signature": {sign("s3cret", github)}}, github, true},
		{"gitlab token", http.Header{"X-Gitlab-Event": {"Push Hook"}, "X-Gitlab-Token": {"s3cret"}}, gitlab, true},
		{"gitlab wrong token", http.Header{"X-Gitlab-Event": {"Push Hook"}, "X-Gitlab-Token": {"guess"}}, gitlab, false},
		{"unknown sender", http.Header{}, github, false},
	}
	for _, tc := range cases {
		p, err := h.parse(tc.header, []byte(tc.body))
		if tc.ok && (err != nil || p == nil || p.ref != "refs/heads/main") {
			t.Errorf("%s: push %+v, error %v", tc.name, p, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestParse_OtherEventsAreIgnored(t *testing.T) {
	h := &Webhook{Secret: []byte("k")}
	body := `{"zen":"hi"}`
	p, err := h.parse(http.Header{"X-Github-Event": {"ping"}, "X-Hub-Signature-256": {"sha256=" + sign("k", body)}}, []byte(body))
	if err != nil || p != nil {
		t.Errorf("ping: push %+v, error %v", p, err)
	}
}

func TestNormalizeURL_FormsOfOneRepositoryCompareEqual(t *testing.T) {
	want := "git.example.com/org/shop"
	for _, u := range []string{
		"https://git.example.com/org/shop.git",
		"https://user:token@Git.Example.com/org/shop/",
		"ssh://git@git.example.com/org/shop.git",
		"git@git.example.com:org/shop.git",
		"http://git.example.com:80/org/shop",
	} {
		if got := source.NormalizeURL(u); got != want {
			t.Errorf("source.NormalizeURL(%q) = %q, want %q", u, got, want)
		}
	}
	if got := source.NormalizeURL("https://git.example.com:8443/org/shop"); got == want {
		t.Error("a non-default port must stay part of the identity")
	}
}

// Deliveries inside a window are merged: the first acts at once, the rest
// once when the window closes (so the last push is never lost), and a
// quiet window closes for good.
func TestWebhook_CoalescesDeliveriesAndNeverDropsTheLast(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "team"},
		Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: "https://git.example.com/org/shop.git"}}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(app).Build()
	var stamps atomic.Int64
	h := &Webhook{Client: interceptor.NewClient(c, interceptor.Funcs{Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
		stamps.Add(1)
		return cl.Patch(ctx, obj, p, opts...)
	}}), Coalesce: 50 * time.Millisecond, Log: logr.Discard()}
	p := &push{ref: "refs/heads/main", urls: []string{source.NormalizeURL(app.Spec.Source.RepoURL)}}
	if h.absorb(p) {
		t.Fatal("the first delivery was absorbed; it must act at once")
	}
	for range 20 {
		if !h.absorb(p) {
			t.Fatal("a delivery inside the window was not absorbed")
		}
	}
	lastDelivery := time.Now()
	var got v1alpha1.Application
	deadline := time.Now().Add(5 * time.Second)
	for stamps.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := stamps.Load(); n != 1 {
		t.Fatalf("%d stamps for 20 absorbed deliveries, want 1 when the window closes", n)
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(app), &got); err != nil {
		t.Fatal(err)
	}
	at, err := time.Parse(time.RFC3339Nano, got.Annotations[v1alpha1.AnnotationRequestedAt])
	if err != nil || at.Before(lastDelivery) || got.Annotations[v1alpha1.AnnotationRequestedBy] != v1alpha1.RequestedByWebhook {
		t.Errorf("annotations %v: want a webhook request stamped after the last delivery (%s)", got.Annotations, lastDelivery)
	}
	// A quiet window closes: the next delivery acts at once again.
	time.Sleep(200 * time.Millisecond)
	if h.absorb(p) {
		t.Error("a delivery after a quiet window was absorbed")
	}
}

// A push followed by many apps is answered before their sync requests are
// written (a forge gives a delivery 10 seconds), and every one of them is
// written after, never more than requestParallelism at once.
func TestWebhook_AnswersBeforeWritingTheRequests(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	const n = 100
	b := fake.NewClientBuilder().WithScheme(scheme)
	for i := range n {
		b.WithObjects(&v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%03d", i), Namespace: "team"},
			Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: "https://git.example.com/org/fleet.git"}}})
	}
	c := b.Build()
	release := make(chan struct{})
	var inFlight, most, done atomic.Int64
	h := &Webhook{Secret: []byte("s3cret"), Log: logr.Discard(), Client: interceptor.NewClient(c, interceptor.Funcs{
		Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			now := inFlight.Add(1)
			for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
			}
			<-release
			inFlight.Add(-1)
			defer done.Add(1)
			return cl.Patch(ctx, obj, p, opts...)
		}})}
	body := `{"ref":"refs/heads/main","repository":{"clone_url":"https://git.example.com/org/fleet.git"}}`
	req := httptest.NewRequest(http.MethodPost, "/hooks/git", strings.NewReader(body))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+sign("s3cret", body))
	rec := httptest.NewRecorder()
	answered := make(chan struct{})
	go func() { h.ServeHTTP(rec, req); close(answered) }()
	select {
	case <-answered: // although every write is held
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("the delivery was not answered while its requests were being written")
	}
	if rec.Code != http.StatusAccepted || !strings.Contains(rec.Body.String(), "team/app-099") {
		t.Fatalf("answer %d %s, want 202 naming the apps", rec.Code, rec.Body.String())
	}
	if done.Load() != 0 {
		t.Fatalf("%d requests written before the answer", done.Load())
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for done.Load() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var apps v1alpha1.ApplicationList
	if err := c.List(context.Background(), &apps); err != nil {
		t.Fatal(err)
	}
	for _, a := range apps.Items {
		if a.Annotations[v1alpha1.AnnotationRequestedAt] == "" || a.Annotations[v1alpha1.AnnotationRequestedBy] != v1alpha1.RequestedByWebhook {
			t.Errorf("%s: annotations %v, want a webhook sync request", a.Name, a.Annotations)
		}
	}
	if m := most.Load(); m > requestParallelism {
		t.Errorf("%d requests in flight at once, want at most %d", m, requestParallelism)
	}
}

// The apps this process reconciles take the push in memory and are not
// written to; the others are annotated.
func TestWebhook_LocalAppsAreAskedInMemory(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(scheme)
	for _, name := range []string{"mine", "theirs"} {
		b.WithObjects(&v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team"},
			Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: "https://git.example.com/org/fleet.git"}}})
	}
	c := b.Build()
	var patched atomic.Int64
	asked := map[string]time.Time{}
	var mu sync.Mutex
	h := &Webhook{Secret: []byte("s3cret"), Log: logr.Discard(), Client: interceptor.NewClient(c, interceptor.Funcs{
		Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			patched.Add(1)
			return cl.Patch(ctx, obj, p, opts...)
		}}),
		Local: func(app types.NamespacedName, at time.Time) bool {
			mu.Lock()
			defer mu.Unlock()
			if app.Name != "mine" {
				return false
			}
			asked[app.String()] = at
			return true
		}}
	body := `{"ref":"refs/heads/main","repository":{"clone_url":"https://git.example.com/org/fleet.git"}}`
	req := httptest.NewRequest(http.MethodPost, "/hooks/git", strings.NewReader(body))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+sign("s3cret", body))
	h.ServeHTTP(httptest.NewRecorder(), req)
	deadline := time.Now().Add(10 * time.Second)
	for patched.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if _, ok := asked["team/mine"]; !ok || len(asked) != 1 {
		t.Errorf("asked in memory: %v, want team/mine", asked)
	}
	var mine, theirs v1alpha1.Application
	_ = c.Get(context.Background(), client.ObjectKey{Namespace: "team", Name: "mine"}, &mine)
	_ = c.Get(context.Background(), client.ObjectKey{Namespace: "team", Name: "theirs"}, &theirs)
	if mine.Annotations[v1alpha1.AnnotationRequestedAt] != "" || patched.Load() != 1 {
		t.Errorf("mine annotated %v (%d patches): a push handed over in memory writes nothing", mine.Annotations, patched.Load())
	}
	if theirs.Annotations[v1alpha1.AnnotationRequestedAt] == "" {
		t.Errorf("theirs not annotated: %v", theirs.Annotations)
	}
}
