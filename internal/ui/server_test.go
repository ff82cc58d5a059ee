package ui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

var env *kubetest.Env

func TestMain(m *testing.M) {
	kubetest.Main(m, kubetest.WithConvergeAPI(kubetest.EnvOptions{}), &env)
}

func TestCommitURL_LinksKnownForges(t *testing.T) {
	const sha = "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct{ repo, revision, want string }{
		{"https://github.com/acme/shop.git", sha, "https://github.com/acme/shop/commit/" + sha},
		{"https://user:token@github.com/acme/shop", sha, "https://github.com/acme/shop/commit/" + sha},
		{"git@github.com:acme/shop.git", sha, "https://github.com/acme/shop/commit/" + sha},
		{"ssh://git@gitlab.com/group/sub/shop.git", sha, "https://gitlab.com/group/sub/shop/-/commit/" + sha},
		{"https://codeberg.org/acme/shop", sha + "+sha256:abc", "https://codeberg.org/acme/shop/commit/" + sha},
		{"https://bitbucket.org/acme/shop.git", sha, "https://bitbucket.org/acme/shop/commits/" + sha},
		// Unknown layouts, plain HTTP, files and non-commits get no link.
		{"https://git.internal.example/acme/shop.git", sha, ""},
		{"http://github.com/acme/shop", sha, ""},
		{"file:///srv/git/shop", sha, ""},
		{"https://github.com/acme", sha, ""},
		{"https://github.com/acme/shop", "sha256:abc", ""},
		{"javascript:alert(1)//github.com/a/b", sha, ""},
	} {
		if got := commitURL(tc.repo, tc.revision); got != tc.want {
			t.Errorf("commitURL(%q, %q) = %q, want %q", tc.repo, tc.revision, got, tc.want)
		}
	}
}

func TestSessions_EndWhenIdleOrOld(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := newSessions()
	s.now = func() time.Time { return now }
	ss, _ := s.add("alice", nil, nil)
	req := func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: ss.id})
		return r
	}
	now = now.Add(sessionIdle - time.Minute)
	if s.get(req()) == nil {
		t.Fatal("a session used within the idle time ended")
	}
	for now.Sub(ss.created) < sessionLifetime-sessionIdle {
		now = now.Add(sessionIdle / 2)
		if s.get(req()) == nil {
			t.Fatalf("a session in use ended after %v", now.Sub(ss.created))
		}
	}
	now = ss.created.Add(sessionLifetime + time.Second)
	if s.get(req()) != nil || s.alive(ss.id) {
		t.Fatal("a session outlived its lifetime")
	}
	other, _ := s.add("bob", nil, nil)
	now = now.Add(sessionIdle + time.Second)
	if s.get(httptest.NewRequest(http.MethodGet, "/", nil)) != nil {
		t.Fatal("a request without a cookie found a session")
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: other.id})
	if s.get(r) != nil {
		t.Fatal("an idle session did not end")
	}
}

// Mass sign-ins by one user end only that user's oldest sessions; with
// every slot taken by live sessions, a new sign-in is refused and nobody
// is signed out.
func TestSessions_OneUserCannotSignOthersOut(t *testing.T) {
	s := newSessions()
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { now = now.Add(time.Millisecond); return now }
	alice, _ := s.add("alice", nil, nil)
	var first *session
	for i := range 10 * maxSessionsPerUser {
		ss, err := s.add("mallory", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = ss
		}
	}
	if !s.alive(alice.id) {
		t.Fatal("another user's sign-ins ended alice's session")
	}
	if s.alive(first.id) {
		t.Fatal("mallory's oldest session outlived the per-user limit")
	}
	n := 0
	for _, ss := range s.byID {
		if ss.user == "mallory" {
			n++
		}
	}
	if n != maxSessionsPerUser {
		t.Fatalf("mallory holds %d sessions, want %d", n, maxSessionsPerUser)
	}
	for i := len(s.byID); i < maxSessions; i++ {
		if _, err := s.add(fmt.Sprintf("user-%d", i), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.add("late", nil, nil); !errors.Is(err, errTooManySessions) {
		t.Fatalf("sign-in with every slot taken: err = %v", err)
	}
	if !s.alive(alice.id) {
		t.Fatal("a full table signed alice out")
	}
}

func TestHub_SlowPageIsToldToReload(t *testing.T) {
	h := &Hub{subs: map[chan Change]struct{}{}}
	ch, cancel := h.Subscribe()
	defer cancel()
	for i := 0; i < cap(ch)+10; i++ {
		h.publish(Change{Kind: "app", Namespace: "team", Name: fmt.Sprint(i)})
	}
	var reload bool
	for len(ch) > 0 {
		if (<-ch).Kind == "reload" {
			reload = true
		}
	}
	if !reload {
		t.Fatal("a subscriber that fell behind was not told to reload")
	}
}

// localUI serves the UI in local mode against envtest, signed in.
func localUI(t testing.TB) (http.Handler, *http.Cookie) {
	t.Helper()
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	hub, err := NewHub(env.Config, HubOptions{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = hub.Start(ctx) }()
	if !hub.WaitForSync(ctx) {
		t.Fatal("the hub did not sync")
	}
	ui := &Server{Cluster: env.Config, Local: true, LoginKey: "key", Hosts: []string{"ui.test"}, Hub: hub, Scheme: scheme, Log: logr.Discard()}
	h, err := ui.Handler()
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://ui.test/login?key=key", nil))
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("signing in: %d %s", rec.Code, rec.Body)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == sessionCookie {
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
				t.Errorf("session cookie %+v is not HTTP-only and SameSite=Strict", c)
			}
			return h, c
		}
	}
	t.Fatal("no session cookie")
	return nil, nil
}

func TestUI_LocalRefusesOtherHostsAndKeys(t *testing.T) {
	h, cookie := localUI(t)
	for _, tc := range []struct {
		name, url, origin string
		post              bool
		cookie            bool
		want              int
	}{
		{"another host name (DNS rebinding)", "http://evil.example/", "", false, true, http.StatusMisdirectedRequest},
		{"a wrong sign-in key", "http://ui.test/login?key=nope", "", false, false, http.StatusUnauthorized},
		{"a page without a session", "http://ui.test/", "", false, false, http.StatusSeeOther},
		{"a POST from another origin", "http://ui.test/apps/a/b/sync", "http://evil.example", true, true, http.StatusForbidden},
		{"a POST without a CSRF token", "http://ui.test/apps/a/b/sync", "", true, true, http.StatusForbidden},
		{"a live stream without a session", "http://ui.test/live", "", false, false, http.StatusUnauthorized},
		{"the list", "http://ui.test/", "", false, true, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := http.MethodGet
			if tc.post {
				method = http.MethodPost
			}
			r := httptest.NewRequest(method, tc.url, strings.NewReader(""))
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.cookie {
				r.AddCookie(cookie)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tc.want {
				t.Errorf("%s %s: %d, want %d: %s", method, tc.url, rec.Code, tc.want, rec.Body)
			}
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("Content-Security-Policy = %q", csp)
			}
		})
	}
}

// BenchmarkUI_ListPage1000 serves the Applications page for 1,000
// Applications, each with ten objects in its status, from the hub's cache.
func BenchmarkUI_ListPage1000(b *testing.B) {
	ctx := context.Background()
	ns := kubetest.Namespace(b, env.Client)
	const apps = 1000
	for i := range apps {
		app := &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%04d", i), Namespace: ns},
			Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{
				RepoURL: "https://github.com/acme/platform.git", Path: fmt.Sprintf("apps/app-%04d", i)}},
		}
		if err := env.Client.Create(ctx, app); err != nil {
			b.Fatal(err)
		}
		now := metav1.Now()
		app.Status = v1alpha1.ApplicationStatus{
			Sync: v1alpha1.SyncStatus{Status: v1alpha1.SyncStatusSynced, Revision: "0123456789abcdef0123456789abcdef01234567",
				Commit: &v1alpha1.CommitInfo{Author: "Ada Lovelace", Subject: "Raise the replicas of the checkout service"}},
			Health:       v1alpha1.HealthStatus{Status: v1alpha1.HealthHealthy},
			LastSyncTime: &now,
			Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonSynced,
				Message: "synced and healthy", LastTransitionTime: now}},
		}
		for j := range 10 {
			app.Status.Resources = append(app.Status.Resources, v1alpha1.ResourceStatus{Version: "v1", Kind: "ConfigMap",
				Namespace: ns, Name: fmt.Sprintf("config-%d", j), Status: v1alpha1.SyncStatusSynced, Health: v1alpha1.HealthHealthy})
		}
		if err := env.Client.Status().Update(ctx, app); err != nil {
			b.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h, cookie := localUI(b)
	runtime.GC()
	runtime.ReadMemStats(&after)
	hubMiB := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	get := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "http://ui.test/?namespace="+ns, nil)
		r.AddCookie(cookie)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	rec := get()
	if rows := strings.Count(rec.Body.String(), "<tr id=\"app-"); rec.Code != http.StatusOK || rows != apps {
		b.Fatalf("the list: %d, %d rows", rec.Code, rows)
	}
	pageKiB := float64(rec.Body.Len()) / 1024
	for b.Loop() {
		if rec := get(); rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
	b.ReportMetric(hubMiB, "hub-MiB")
	b.ReportMetric(pageKiB, "page-KiB")
}
