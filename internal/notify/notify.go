// Package notify delivers Applications' events to receivers: a JSON
// webhook (HMAC-signed), a Slack-compatible incoming webhook, or a commit
// status on GitHub, GitLab or Gitea. Delivery is asynchronous: Send never
// blocks a sync; each receiver has its own queue, rate limit and retries
// with backoff, so a receiver that is slow or down delays nothing else.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
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
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"

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
	// Type is webhook, slack, github, gitlab or gitea.
	Type string
	URL  string
	// Repository is owner/repo (GitLab: the project path) for commit
	// statuses.
	Repository string
	Token      string
	HMACKey    []byte
}

func (r Receiver) key() string { return r.Type + " " + r.URL + " " + r.Repository }

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

	client *http.Client
	mu     sync.Mutex
	queues map[string]chan delivery
	ctx    context.Context
}

type delivery struct {
	recv Receiver
	ev   Event
}

// queueSize bounds the events waiting for one receiver; past it new
// events are dropped (and logged), never waited for.
const queueSize = 256

// New returns a Notifier whose deliveries run until ctx ends.
func New(ctx context.Context, log logr.Logger) *Notifier {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: refuseLinkLocal}
	transport := &http.Transport{DialContext: dialer.DialContext, TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment}
	return &Notifier{
		Log: log, Retries: 5, Backoff: time.Second, ctx: ctx, queues: map[string]chan delivery{},
		client: &http.Client{Transport: transport, Timeout: 15 * time.Second,
			// A receiver may not send the agent elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// refuseLinkLocal keeps events from cloud metadata endpoints and other
// link-local addresses, whatever a name resolves to.
func refuseLinkLocal(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip != nil && (ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast()) {
		return fmt.Errorf("refusing to send events to link-local address %s", host)
	}
	return nil
}

// Send queues ev for recv and returns at once.
func (n *Notifier) Send(recv Receiver, ev Event) {
	n.mu.Lock()
	q, ok := n.queues[recv.key()]
	if !ok {
		q = make(chan delivery, queueSize)
		n.queues[recv.key()] = q
		go n.deliver(q)
	}
	n.mu.Unlock()
	select {
	case q <- delivery{recv: recv, ev: ev}:
	default:
		n.Log.Info("notification dropped: the receiver's queue is full", "receiver", recv.Type, "event", ev.Type, "app", ev.Namespace+"/"+ev.Name)
	}
}

// deliver sends one receiver's events in order: at most one a second
// (bursts of 5), each tried again with backoff on a network error, a 429
// or a 5xx.
func (n *Notifier) deliver(q chan delivery) {
	limit := rate.NewLimiter(1, 5)
	for {
		var d delivery
		select {
		case <-n.ctx.Done():
			return
		case d = <-q:
		}
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
	target, body, header, err := request(recv, ev)
	if err != nil {
		return &permanentError{err}
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return &permanentError{fmt.Errorf("receiver URL %s is not an http(s) URL", source.RedactURL(target))}
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
		text := fmt.Sprintf("converge: %s/%s %s", ev.Namespace, ev.Name, ev.Type)
		if ev.Revision != "" {
			text += " at " + short(ev.Revision)
		}
		if ev.Message != "" {
			text += ": " + ev.Message
		}
		body, err := json.Marshal(map[string]string{"text": text})
		return recv.URL, body, header, err
	case "github", "gitea", "gitlab":
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
			if recv.Type == "gitlab" {
				header.Set("PRIVATE-TOKEN", recv.Token)
			} else {
				header.Set("Authorization", "token "+recv.Token)
			}
		}
		var target string
		var payload map[string]string
		switch recv.Type {
		case "github":
			if base == "" {
				base = "https://api.github.com"
			}
			target = base + "/repos/" + recv.Repository + "/statuses/" + sha
			payload = map[string]string{"state": state, "context": context, "description": description}
		case "gitea":
			target = base + "/api/v1/repos/" + recv.Repository + "/statuses/" + sha
			payload = map[string]string{"state": state, "context": context, "description": description}
		case "gitlab":
			target = base + "/api/v4/projects/" + url.PathEscape(recv.Repository) + "/statuses/" + sha
			payload = map[string]string{"state": state, "name": context, "description": description}
		}
		body, err := json.Marshal(payload)
		return target, body, header, err
	}
	return "", nil, nil, fmt.Errorf("unknown receiver type %q", recv.Type)
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
		if forge == "gitlab" {
			state = "running"
		}
	case "SyncFailed", "HealthDegraded":
		state = "failure"
		if forge == "gitlab" {
			state = "failed"
		}
	default:
		state = "success"
	}
	return state, description
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
