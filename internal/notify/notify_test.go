package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

const sha = "0123456789abcdef0123456789abcdef01234567"

func TestRequest_CommitStatusPerForge(t *testing.T) {
	ev := Event{Type: "SyncSucceeded", Namespace: "team", Name: "web", Revision: sha + "+sha256:abc", Message: "synced"}
	for _, tc := range []struct {
		recv                  Receiver
		url, auth, authHeader string
		state                 string
	}{
		{Receiver{Type: "github", Repository: "acme/shop", Token: "t1"}, "https://api.github.com/repos/acme/shop/statuses/" + sha, "token t1", "Authorization", "success"},
		{Receiver{Type: "gitea", URL: "https://gitea.example.com/", Repository: "acme/shop", Token: "t2"}, "https://gitea.example.com/api/v1/repos/acme/shop/statuses/" + sha, "token t2", "Authorization", "success"},
		{Receiver{Type: "gitlab", URL: "https://gitlab.example.com", Repository: "group/sub/shop", Token: "t3"}, "https://gitlab.example.com/api/v4/projects/group%2Fsub%2Fshop/statuses/" + sha, "t3", "PRIVATE-TOKEN", "success"},
		// Bitbucket Cloud: an app password as username:password, or an
		// access token.
		{Receiver{Type: "bitbucket", Repository: "acme/shop", Token: "ada:app-pw"}, "https://api.bitbucket.org/2.0/repositories/acme/shop/commit/" + sha + "/statuses/build", "Basic YWRhOmFwcC1wdw==", "Authorization", "SUCCESSFUL"},
		{Receiver{Type: "bitbucket", Repository: "acme/shop", Token: "at"}, "https://api.bitbucket.org/2.0/repositories/acme/shop/commit/" + sha + "/statuses/build", "Bearer at", "Authorization", "SUCCESSFUL"},
	} {
		url, body, header, err := request(tc.recv, ev)
		if err != nil {
			t.Fatal(err)
		}
		if url != tc.url || header.Get(tc.authHeader) != tc.auth {
			t.Errorf("%s: %s %v, want %s with %s", tc.recv.Type, url, header, tc.url, tc.auth)
		}
		var got map[string]string
		if err := json.Unmarshal(body, &got); err != nil || got["state"] != tc.state || got["description"] != "SyncSucceeded: synced" {
			t.Errorf("%s: body %s", tc.recv.Type, body)
		}
	}
	// Bitbucket wants a link and a key of at most 40 characters, and
	// says FAILED and INPROGRESS.
	long := Event{Type: "SyncFailed", Namespace: "a-rather-long-namespace-name", Name: "and-a-long-app-name", Revision: sha}
	_, body, _, err := request(Receiver{Type: "bitbucket", Repository: "acme/shop"}, long)
	var bb map[string]string
	if err != nil || json.Unmarshal(body, &bb) != nil || len(bb["key"]) > 40 || bb["state"] != "FAILED" ||
		bb["name"] != "converge/a-rather-long-namespace-name/and-a-long-app-name" || bb["url"] != "https://bitbucket.org/acme/shop/commits/"+sha {
		t.Errorf("bitbucket, a long name failing: %s (%v)", body, err)
	}
	if _, body, _, _ = request(Receiver{Type: "bitbucket", Repository: "acme/shop"}, Event{Type: "SyncStarted", Revision: sha}); !strings.Contains(string(body), `"INPROGRESS"`) {
		t.Errorf("bitbucket, a sync started: %s", body)
	}
	if _, _, _, err := request(Receiver{Type: "github", Repository: "acme/shop"}, Event{Type: "SyncFailed", Revision: "sha256:abc"}); err == nil {
		t.Error("a status without a commit was built")
	}
}

func TestNotifier_SignsAndRetriesUntilDelivered(t *testing.T) {
	var calls atomic.Int32
	got := make(chan *http.Request, 1)
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		body, _ = io.ReadAll(r.Body)
		got <- r
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := New(ctx, logr.Discard(), nil)
	n.Backoff = 10 * time.Millisecond
	key := []byte("k3y")
	n.Send(Receiver{Type: "webhook", URL: srv.URL, HMACKey: key}, Event{Type: "SyncSucceeded", Namespace: "team", Name: "web"})
	select {
	case r := <-got:
		mac := hmac.New(sha256.New, key)
		mac.Write(body)
		if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); r.Header.Get("X-Converge-Signature") != want {
			t.Errorf("signature %q, want %q", r.Header.Get("X-Converge-Signature"), want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("not delivered after %d calls", calls.Load())
	}
	if calls.Load() != 3 {
		t.Errorf("%d calls, want 3 (two 503s, then delivered)", calls.Load())
	}
}

func TestNotifier_SendNeverBlocks(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := New(ctx, logr.Discard(), nil)
	// A receiver that never answers: far more events than its queue.
	stall := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-stall }))
	defer srv.Close()
	defer close(stall)
	start := time.Now()
	for range 10 * queueSize {
		n.Send(Receiver{Type: "webhook", URL: srv.URL}, Event{Type: "SyncStarted"})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("sending to a stalled receiver took %v", d)
	}
}

// 1,000 receiver URLs, one after another, leave no queue and no goroutine
// behind once delivered; a namespace never holds more than its share of
// queues however many URLs it names at once.
func TestNotifier_QueuesDoNotOutliveTheirEvents(t *testing.T) {
	var delivered atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { delivered.Add(1) }))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := New(ctx, logr.Discard(), nil)
	n.IdleTimeout = 20 * time.Millisecond
	before := runtime.NumGoroutine()
	for i := range 1000 {
		n.Send(Receiver{Type: "webhook", URL: fmt.Sprintf("%s/hook/%d", srv.URL, i)}, Event{Type: "SyncSucceeded", Namespace: fmt.Sprintf("team-%d", i%40), Name: "web"})
		if q := n.Queues(); q > 40*MaxQueuesPerNamespace {
			t.Fatalf("%d queues", q)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for n.Queues() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if q := n.Queues(); q != 0 {
		t.Fatalf("%d queues left after delivery", q)
	}
	if delivered.Load() == 0 {
		t.Fatal("nothing delivered")
	}
	// Goroutines are back to where they were (the HTTP client's idle
	// connections aside, closed here).
	srv.CloseClientConnections()
	n.client.CloseIdleConnections()
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before+2 {
		t.Fatalf("%d goroutines, %d before", g, before)
	}

	// One namespace naming more receivers at once than its share: the
	// rest are dropped, not queued.
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer slow.Close()
	defer close(block)
	for i := range 3 * MaxQueuesPerNamespace {
		n.Send(Receiver{Type: "webhook", URL: fmt.Sprintf("%s/%d", slow.URL, i)}, Event{Type: "SyncFailed", Namespace: "greedy", Name: "web"})
	}
	if q := n.Queues(); q != MaxQueuesPerNamespace {
		t.Fatalf("%d queues for one namespace, want %d", q, MaxQueuesPerNamespace)
	}
}

// Teams, Discord and Alertmanager receivers get their own shapes: a
// MessageCard, a message with no mentions, and alerts that a failure fires
// and the next success resolves (a start is not for Alertmanager).
func TestRequest_TeamsDiscordAndAlertmanager(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	failed := Event{Type: "SyncFailed", Namespace: "team", Name: "web", Revision: sha, Message: "deploy/x.yaml: bad", Time: at}

	_, body, _, err := request(Receiver{Type: "msteams", URL: "https://example.webhook.office.com/x"}, failed)
	var card map[string]any
	if err != nil || json.Unmarshal(body, &card) != nil || card["@type"] != "MessageCard" || card["themeColor"] != "D93F0B" ||
		card["title"] != "converge: team/web SyncFailed" || card["text"] != "Revision 0123456789ab: deploy/x.yaml: bad" {
		t.Errorf("teams: %v %s", err, body)
	}

	_, body, _, err = request(Receiver{Type: "discord", URL: "https://discord.com/api/webhooks/1/x"}, failed)
	var msg struct {
		Content  string `json:"content"`
		Mentions struct {
			Parse []string `json:"parse"`
		} `json:"allowed_mentions"`
	}
	if err != nil || json.Unmarshal(body, &msg) != nil || msg.Content != "converge: team/web SyncFailed at 0123456789ab: deploy/x.yaml: bad" || msg.Mentions.Parse == nil {
		t.Errorf("discord: %v %s", err, body)
	}

	am := Receiver{Type: "alertmanager", URL: "https://alertmanager.example.com/", Token: "tok"}
	target, body, header, err := request(am, failed)
	var alerts []struct {
		Labels   map[string]string `json:"labels"`
		StartsAt string            `json:"startsAt"`
		EndsAt   string            `json:"endsAt"`
	}
	if err != nil || target != "https://alertmanager.example.com/api/v2/alerts" || header.Get("Authorization") != "Bearer tok" ||
		json.Unmarshal(body, &alerts) != nil || len(alerts) != 1 || alerts[0].Labels["alertname"] != "ConvergeSyncFailed" ||
		alerts[0].Labels["application"] != "web" || alerts[0].EndsAt != "" {
		t.Errorf("alertmanager firing: %v %s %s", err, target, body)
	}
	ok := failed
	ok.Type = "SyncSucceeded"
	if _, body, _, err = request(am, ok); err != nil || json.Unmarshal(body, &alerts) != nil || len(alerts) != 2 || alerts[0].EndsAt != "2026-12-07T10:00:00Z" {
		t.Errorf("alertmanager resolving: %v %s", err, body)
	}
	start := failed
	start.Type = "SyncStarted"
	if _, _, _, err := request(am, start); !errors.Is(err, errSkip) {
		t.Errorf("alertmanager of a start: %v, want skipped", err)
	}
}

// A message template writes text receivers' messages from the documented
// data model; loops, definitions and other templates are refused (a
// tenant's template must not spend the agent's CPU), and a message is
// bounded.
func TestTemplate_RestrictedAndBounded(t *testing.T) {
	tmpl, err := ParseTemplate(`{{if eq .Event "SyncFailed"}}:red_circle:{{else}}:green_circle:{{end}} {{.Namespace}}/{{.Name}} {{printf "%.7s" .ShortRevision}}{{with .Message}}: {{.}}{{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	ev := Event{Type: "SyncFailed", Namespace: "team", Name: "web", Revision: sha, Message: "bad"}
	_, body, _, err := request(Receiver{Type: "slack", URL: "https://hooks.slack.com/x", Template: tmpl}, ev)
	var got map[string]string
	if err != nil || json.Unmarshal(body, &got) != nil || got["text"] != ":red_circle: team/web 0123456: bad" {
		t.Errorf("slack with a template: %v %s", err, body)
	}
	for text, want := range map[string]string{
		`{{range 1000000000}}x{{end}}`:               "range may only go over a field",
		`{{if true}}{{range $x := 5}}{{end}}{{end}}`: "range may only go over a field",
		`{{define "x"}}y{{end}}{{template "x"}}`:     "not allowed",
		`{{.Secret}}`:                                "",
		strings.Repeat("x", MaxTemplate+1):           "more than",
	} {
		_, err := ParseTemplate(text)
		if want == "" {
			// Parses; fails when filled, naming the field.
			tmpl, perr := ParseTemplate(text)
			if perr != nil {
				t.Errorf("%.30s: %v", text, perr)
				continue
			}
			if _, err := render(tmpl, ev); err == nil || !strings.Contains(err.Error(), "Secret") {
				t.Errorf("%.30s: %v, want an error naming the field", text, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.30s: %v, want %q", text, err, want)
		}
	}
	big, err := ParseTemplate(`{{printf "%999999d" 1}}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := render(big, ev); err == nil || !strings.Contains(err.Error(), "over") {
		t.Errorf("a 1 MB message: %v, want it refused", err)
	}
}
