// Package notify delivers Applications' events to receivers: a JSON
// webhook (HMAC-signed), a Slack-compatible incoming webhook, or a commit
// status on GitHub, GitLab, Gitea or Bitbucket. Delivery is asynchronous: Send never
// blocks a sync; each receiver has its own queue, rate limit and retries
// with backoff, so a receiver that is slow or down delays nothing else.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"

	"converge.dev/converge/internal/egress"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/source"
)

// Event is what happened to an Application.
type Event struct {
	Type      string    `json:"event"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Revision  string    `json:"revision,omitempty"`
	Message   string    `json:"message,omitempty"`
	Time      time.Time `json:"time"`
}

// Receiver is where events go, resolved from an Application's spec and
// Secret.
type Receiver struct {
	// Type is webhook, slack, msteams, discord, alertmanager, github,
	// gitlab, gitea or bitbucket.
	Type string
	URL  string
	// Repository is owner/repo (GitLab: the project path) for commit
	// statuses.
	Repository string
	Token      string
	HMACKey    []byte
	// Template, when set, writes the message of text receivers (slack,
	// msteams, discord, smtp) instead of the default line (ParseTemplate).
	Template *template.Template
	// From and To are an smtp receiver's addresses; Username and
	// Password sign in to its server, whose certificate is checked
	// against CA (PEM) when given, else the system's CAs.
	From               string
	To                 []string
	Username, Password string
	CA                 []byte
}

func (r Receiver) key() string {
	k := r.Type + " " + r.URL + " " + r.Repository
	if r.Type == "smtp" {
		k += " " + r.From + " " + strings.Join(r.To, ",")
	}
	if r.Template != nil {
		k += " " + r.Template.Root.String()
	}
	return k
}

// DefaultURL is where a receiver of type sends when it names no URL:
// GitHub's API for github, nothing for the others.
func DefaultURL(typ string) string {
	switch typ {
	case "github":
		return "https://api.github.com"
	case "bitbucket":
		return "https://api.bitbucket.org"
	}
	return ""
}

// Limits on what receivers may make the agent hold. A receiver's queue
// and goroutine exist only while it has events to deliver (and
// IdleTimeout after), so churning URLs leaves nothing behind.
const (
	// queueSize bounds the events waiting for one receiver; past it new
	// events are dropped (and logged), never waited for.
	queueSize = 256
	// MaxQueuesPerNamespace bounds the receivers with pending events of
	// one namespace's Applications; past it, events for another receiver
	// are dropped (and logged) until one drains.
	MaxQueuesPerNamespace = 32
	// MaxQueues bounds them for the whole agent.
	MaxQueues = 1024
)

// Notifier sends events. Its zero value is not usable: use New.
type Notifier struct {
	// AllowedHosts, when not empty, are the only hosts events are sent
	// to (host, host:port or *.domain).
	AllowedHosts []string
	Log          logr.Logger
	// Retries is how many times a failed delivery is tried again (with
	// backoff from Backoff, doubling up to a minute).
	Retries int
	Backoff time.Duration
	// IdleTimeout is how long a receiver's queue lives with nothing to
	// deliver.
	IdleTimeout time.Duration

	client *http.Client
	// dial connects to mail servers, through the egress policy.
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	mu     sync.Mutex
	queues map[string]*queue
	perNS  map[string]int
	ctx    context.Context
}

// queue is one receiver's pending events, for one namespace's apps.
type queue struct {
	key, namespace string
	ch             chan delivery
}

type delivery struct {
	recv Receiver
	ev   Event
}

// New returns a Notifier whose deliveries run until ctx ends, connecting
// only where policy allows (nil: everything but link-local and metadata
// addresses).
func New(ctx context.Context, log logr.Logger, policy *egress.Policy) *Notifier {
	if policy == nil {
		policy = egress.Open()
	}
	transport := policy.Transport()
	transport.TLSHandshakeTimeout, transport.ResponseHeaderTimeout = 5*time.Second, 10*time.Second
	return &Notifier{
		dial: policy.DialContext(&net.Dialer{Timeout: 5 * time.Second}),
		Log:  log, Retries: 5, Backoff: time.Second, IdleTimeout: 30 * time.Second, ctx: ctx,
		queues: map[string]*queue{}, perNS: map[string]int{},
		client: &http.Client{Transport: transport, Timeout: 15 * time.Second,
			// A receiver may not send the agent elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// Queues is how many receivers have a queue now.
func (n *Notifier) Queues() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.queues)
}

// Send queues ev for recv and returns at once.
func (n *Notifier) Send(recv Receiver, ev Event) {
	key := ev.Namespace + " " + recv.key()
	n.mu.Lock()
	defer n.mu.Unlock()
	q, ok := n.queues[key]
	if !ok {
		if n.perNS[ev.Namespace] >= MaxQueuesPerNamespace || len(n.queues) >= MaxQueues {
			n.Log.Info("notification dropped: too many receivers with pending events", "namespace", ev.Namespace,
				"limit", MaxQueuesPerNamespace, "receiver", recv.Type, "event", ev.Type, "app", ev.Namespace+"/"+ev.Name)
			return
		}
		q = &queue{key: key, namespace: ev.Namespace, ch: make(chan delivery, queueSize)}
		n.queues[key] = q
		n.perNS[ev.Namespace]++
		go n.deliver(q)
	}
	select {
	case q.ch <- delivery{recv: recv, ev: ev}:
	default:
		n.Log.Info("notification dropped: the receiver's queue is full", "receiver", recv.Type, "event", ev.Type, "app", ev.Namespace+"/"+ev.Name)
	}
}

// done removes q once it is empty; false when an event arrived meanwhile.
func (n *Notifier) done(q *queue) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(q.ch) > 0 {
		return false
	}
	delete(n.queues, q.key)
	if n.perNS[q.namespace]--; n.perNS[q.namespace] <= 0 {
		delete(n.perNS, q.namespace)
	}
	return true
}

// deliver sends one receiver's events in order: at most one a second
// (bursts of 5), each tried again with backoff on a network error, a 429
// or a 5xx.
func (n *Notifier) deliver(q *queue) {
	limit := rate.NewLimiter(1, 5)
	idle := time.NewTimer(n.IdleTimeout)
	defer idle.Stop()
	for {
		var d delivery
		select {
		case <-n.ctx.Done():
			return
		case <-idle.C:
			if n.done(q) {
				return
			}
			idle.Reset(n.IdleTimeout)
			continue
		case d = <-q.ch:
		}
		idle.Reset(n.IdleTimeout)
		if err := limit.Wait(n.ctx); err != nil {
			return
		}
		backoff := n.Backoff
		for attempt := 0; ; attempt++ {
			err := n.post(n.ctx, d.recv, d.ev)
			if err == nil {
				break
			}
			var perm *permanentError
			if errors.As(err, &perm) || attempt >= n.Retries {
				n.Log.Info("notification not delivered", "receiver", d.recv.Type, "host", host(d.recv.URL), "event", d.ev.Type,
					"app", d.ev.Namespace+"/"+d.ev.Name, "attempts", attempt+1, "error", redact.Error(err))
				break
			}
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Minute)
		}
	}
}

type permanentError struct{ error }

func host(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// post makes the request recv's type calls for.
func (n *Notifier) post(ctx context.Context, recv Receiver, ev Event) error {
	if recv.Type == "smtp" {
		return n.mail(ctx, recv, ev)
	}
	target, body, header, err := request(recv, ev)
	if errors.Is(err, errSkip) {
		return nil // nothing this receiver reports
	}
	if err != nil {
		return &permanentError{err}
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return &permanentError{fmt.Errorf("receiver URL %s is not an http(s) URL", redact.URL(target))}
	}
	if !source.HostAllowed(n.AllowedHosts, u.Host) {
		return &permanentError{fmt.Errorf("host %s is not among the allowed notification hosts", u.Host)}
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return &permanentError{err}
	}
	req.Header = header
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "converge-agent")
	resp, err := n.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("%s answered %s", u.Host, resp.Status)
	}
	return &permanentError{fmt.Errorf("%s answered %s", u.Host, resp.Status)}
}

var commitSHA = regexp.MustCompile(`^[0-9a-f]{40}`)

// request builds the URL, body and headers of ev for recv.
func request(recv Receiver, ev Event) (string, []byte, http.Header, error) {
	header := http.Header{}
	switch recv.Type {
	case "webhook":
		body, err := json.Marshal(ev)
		if err != nil {
			return "", nil, nil, err
		}
		header.Set("X-Converge-Event", ev.Type)
		if len(recv.HMACKey) > 0 {
			mac := hmac.New(sha256.New, recv.HMACKey)
			mac.Write(body)
			header.Set("X-Converge-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		}
		return recv.URL, body, header, nil
	case "slack":
		text, err := message(recv, ev, summary(ev))
		if err != nil {
			return "", nil, nil, err
		}
		body, err := json.Marshal(map[string]string{"text": text})
		return recv.URL, body, header, err
	case "msteams":
		// An incoming webhook's MessageCard.
		color := "2DC72D"
		if failure(ev) {
			color = "D93F0B"
		}
		text, err := message(recv, ev, detail(ev))
		if err != nil {
			return "", nil, nil, err
		}
		body, err := json.Marshal(map[string]any{"@type": "MessageCard", "@context": "https://schema.org/extensions",
			"summary": summary(ev), "themeColor": color, "title": fmt.Sprintf("converge: %s/%s %s", ev.Namespace, ev.Name, ev.Type), "text": text})
		return recv.URL, body, header, err
	case "discord":
		text, err := message(recv, ev, summary(ev))
		if err != nil {
			return "", nil, nil, err
		}
		if len(text) > 2000 {
			text = text[:1997] + "..."
		}
		body, err := json.Marshal(map[string]any{"username": "converge", "content": text, "allowed_mentions": map[string]any{"parse": []string{}}})
		return recv.URL, body, header, err
	case "alertmanager":
		return alertmanager(recv, ev)
	case "github", "gitea", "gitlab", "bitbucket":
		return commitStatus(recv, ev)
	}
	return "", nil, nil, fmt.Errorf("unknown receiver type %q", recv.Type)
}

// commitStatus is ev as a commit status on recv's forge: GitHub, Gitea,
// GitLab or Bitbucket Cloud.
func commitStatus(recv Receiver, ev Event) (string, []byte, http.Header, error) {
	header := http.Header{}
	sha := commitSHA.FindString(ev.Revision)
	if sha == "" {
		return "", nil, nil, fmt.Errorf("no commit to put a status on (revision %q)", ev.Revision)
	}
	if recv.Repository == "" || strings.Count(recv.Repository, "/") < 1 {
		return "", nil, nil, fmt.Errorf("no owner/repository for the commit status: set notify[].repository")
	}
	state, description := statusOf(recv.Type, ev)
	context := "converge/" + ev.Namespace + "/" + ev.Name
	base := strings.TrimSuffix(recv.URL, "/")
	if recv.Token != "" {
		switch {
		case recv.Type == "gitlab":
			header.Set("PRIVATE-TOKEN", recv.Token)
		case recv.Type == "bitbucket" && strings.Contains(recv.Token, ":"):
			// username:app-password
			header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(recv.Token)))
		case recv.Type == "bitbucket":
			header.Set("Authorization", "Bearer "+recv.Token)
		default:
			header.Set("Authorization", "token "+recv.Token)
		}
	}
	var target string
	var payload map[string]string
	if base == "" {
		base = DefaultURL(recv.Type)
	}
	switch recv.Type {
	case "github":
		target = base + "/repos/" + recv.Repository + "/statuses/" + sha
		payload = map[string]string{"state": state, "context": context, "description": description}
	case "gitea":
		target = base + "/api/v1/repos/" + recv.Repository + "/statuses/" + sha
		payload = map[string]string{"state": state, "context": context, "description": description}
	case "gitlab":
		target = base + "/api/v4/projects/" + url.PathEscape(recv.Repository) + "/statuses/" + sha
		payload = map[string]string{"state": state, "name": context, "description": description}
	case "bitbucket":
		// Bitbucket Cloud's build status: a key of at most 40
		// characters, and a link (required) to the commit.
		target = base + "/2.0/repositories/" + recv.Repository + "/commit/" + sha + "/statuses/build"
		key := context
		if len(key) > 40 {
			sum := sha256.Sum256([]byte(context))
			key = "converge-" + hex.EncodeToString(sum[:])[:31]
		}
		payload = map[string]string{"state": state, "key": key, "name": context, "description": description,
			"url": "https://bitbucket.org/" + recv.Repository + "/commits/" + sha}
	}
	body, err := json.Marshal(payload)
	return target, body, header, err
}

// errSkip says a receiver has nothing to say of an event (Alertmanager of
// a SyncStarted).
var errSkip = errors.New("not for this receiver")

// failure says the event reports something wrong.
func failure(ev Event) bool {
	return ev.Type == "SyncFailed" || ev.Type == "HealthDegraded" || ev.Type == "ImageUpdateFailed"
}

// summary is the event in one line: app, event, revision and message.
func summary(ev Event) string {
	text := fmt.Sprintf("converge: %s/%s %s", ev.Namespace, ev.Name, ev.Type)
	if ev.Revision != "" {
		text += " at " + source.ShortRevision(ev.Revision)
	}
	if ev.Message != "" {
		text += ": " + ev.Message
	}
	if len(text) > 1900 { // Discord's limit is 2,000 characters
		text = text[:1897] + "..."
	}
	return text
}

// message is recv's template filled with ev, or def without one.
func message(recv Receiver, ev Event, def string) (string, error) {
	if recv.Template == nil {
		return def, nil
	}
	return render(recv.Template, ev)
}

// detail is the revision and message, for receivers with a title.
func detail(ev Event) string {
	parts := []string{}
	if ev.Revision != "" {
		parts = append(parts, "Revision "+source.ShortRevision(ev.Revision))
	}
	if ev.Message != "" {
		parts = append(parts, ev.Message)
	}
	return strings.Join(parts, ": ")
}

// alertmanager posts ev as an alert to Alertmanager's API (URL: its base,
// or its /api/v2/alerts): SyncFailed and HealthDegraded fire
// ConvergeSyncFailed and ConvergeHealthDegraded for the app; the app's
// next SyncSucceeded resolves both.
func alertmanager(recv Receiver, ev Event) (string, []byte, http.Header, error) {
	target := strings.TrimSuffix(recv.URL, "/")
	if !strings.HasSuffix(target, "/api/v2/alerts") {
		target += "/api/v2/alerts"
	}
	header := http.Header{}
	if recv.Token != "" {
		header.Set("Authorization", "Bearer "+recv.Token)
	}
	alert := func(name, severity string) map[string]any {
		return map[string]any{
			"labels":      map[string]string{"alertname": name, "namespace": ev.Namespace, "application": ev.Name, "severity": severity, "source": "converge"},
			"annotations": map[string]string{"summary": summary(ev), "revision": ev.Revision},
			"startsAt":    ev.Time.UTC().Format(time.RFC3339),
		}
	}
	var alerts []map[string]any
	switch ev.Type {
	case "SyncFailed":
		alerts = append(alerts, alert("ConvergeSyncFailed", "warning"))
	case "HealthDegraded":
		alerts = append(alerts, alert("ConvergeHealthDegraded", "warning"))
	case "SyncSucceeded":
		// Resolve what a failure fired: same labels, ended now.
		for _, name := range []string{"ConvergeSyncFailed", "ConvergeHealthDegraded"} {
			a := alert(name, "warning")
			a["endsAt"] = ev.Time.UTC().Format(time.RFC3339)
			alerts = append(alerts, a)
		}
	default:
		return "", nil, nil, errSkip
	}
	body, err := json.Marshal(alerts)
	return target, body, header, err
}

// statusOf maps an event to a forge's commit status state.
func statusOf(forge string, ev Event) (state, description string) {
	description = ev.Type
	if ev.Message != "" {
		description += ": " + ev.Message
	}
	if len(description) > 140 {
		description = description[:137] + "..."
	}
	switch ev.Type {
	case "SyncStarted":
		state = "pending"
	case "SyncFailed", "HealthDegraded":
		state = "failure"
	default:
		state = "success"
	}
	// Each forge's own words for the three states.
	words := map[string]map[string]string{
		"gitlab":    {"pending": "running", "failure": "failed"},
		"bitbucket": {"pending": "INPROGRESS", "failure": "FAILED", "success": "SUCCESSFUL"},
	}
	if w, ok := words[forge][state]; ok {
		state = w
	}
	return state, description
}
