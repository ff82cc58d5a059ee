package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/generate"
	"converge.dev/converge/internal/source"
)

// Webhook receives push events from GitHub, GitLab and Gitea at
// POST /hooks/git and asks the Applications that follow the pushed
// repository and ref to sync at once.
type Webhook struct {
	Client client.Client
	// Secret verifies deliveries: the HMAC key for GitHub and Gitea, the
	// token for GitLab. Without it every delivery is refused.
	Secret []byte
	Log    logr.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Coalesce is the window in which deliveries for one repository and
	// ref are merged (default 1s): the first triggers at once, later ones
	// in the window trigger once when it closes. A flood of deliveries
	// costs a sync request a window, and the last push is never missed.
	Coalesce time.Duration
	// Local, if set, hands a push to an app this process reconciles, in
	// memory (no write); it reports false for the others, which get the
	// annotation.
	Local func(app types.NamespacedName, at time.Time) bool

	mu      sync.Mutex
	windows map[string]*window
}

// window is an open coalescing window for one repository and ref.
type window struct {
	push    *push
	pending bool
}

// push is what the webhook needs from any provider's push event.
type push struct {
	ref  string
	urls []string
}

// ServeHTTP verifies and handles one delivery.
func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	if len(h.Secret) == 0 {
		http.Error(w, "webhook secret not configured", http.StatusForbidden)
		return
	}
	p, err := h.parse(r.Header, body)
	if err != nil {
		status := http.StatusBadRequest
		if err == errUnauthorized {
			status = http.StatusUnauthorized
		}
		http.Error(w, err.Error(), status)
		return
	}
	if p == nil {
		w.WriteHeader(http.StatusNoContent) // not a push: nothing to do
		return
	}
	if h.absorb(p) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]any{"coalesced": true})
		return
	}
	t, err := h.followers(r.Context(), p)
	if err != nil {
		h.Log.Error(err, "finding the applications that follow a push")
		http.Error(w, "finding the applications that follow the push failed", http.StatusInternalServerError)
		return
	}
	// The answer does not wait for the requests: a forge gives a delivery
	// 10 seconds, and a repository followed by a thousand apps is a
	// thousand writes.
	go h.request(t, h.stamp())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"triggered": t.names()})
}

var errUnauthorized = fmt.Errorf("signature or token does not match")

// parse verifies the delivery and extracts the push, or nil for other events.
func (h *Webhook) parse(hdr http.Header, body []byte) (*push, error) {
	var event string
	switch {
	case hdr.Get("X-GitHub-Event") != "":
		event = hdr.Get("X-GitHub-Event")
		if !validHMAC(h.Secret, body, strings.TrimPrefix(hdr.Get("X-Hub-Signature-256"), "sha256=")) {
			return nil, errUnauthorized
		}
	case hdr.Get("X-Gitea-Event") != "":
		event = hdr.Get("X-Gitea-Event")
		if !validHMAC(h.Secret, body, hdr.Get("X-Gitea-Signature")) {
			return nil, errUnauthorized
		}
	case hdr.Get("X-Gitlab-Event") != "":
		event = hdr.Get("X-Gitlab-Event")
		if subtle.ConstantTimeCompare([]byte(hdr.Get("X-Gitlab-Token")), h.Secret) != 1 {
			return nil, errUnauthorized
		}
	default:
		return nil, fmt.Errorf("unknown sender: expected a GitHub, GitLab or Gitea push event")
	}
	switch event {
	case "push", "Push Hook", "Tag Push Hook":
	default:
		return nil, nil
	}
	var payload struct {
		Ref        string `json:"ref"`
		Repository struct {
			CloneURL string `json:"clone_url"`
			SSHURL   string `json:"ssh_url"`
			HTMLURL  string `json:"html_url"`
			URL      string `json:"url"`
			GitHTTP  string `json:"git_http_url"`
			GitSSH   string `json:"git_ssh_url"`
		} `json:"repository"`
		Project struct {
			GitHTTP string `json:"git_http_url"`
			GitSSH  string `json:"git_ssh_url"`
			WebURL  string `json:"web_url"`
		} `json:"project"`
	}
	if err := json.Unmarshal(body, &payload); err != nil {
		return nil, fmt.Errorf("malformed push payload: %w", err)
	}
	p := &push{ref: payload.Ref}
	for _, u := range []string{payload.Repository.CloneURL, payload.Repository.SSHURL, payload.Repository.HTMLURL,
		payload.Repository.URL, payload.Repository.GitHTTP, payload.Repository.GitSSH,
		payload.Project.GitHTTP, payload.Project.GitSSH, payload.Project.WebURL} {
		if u != "" {
			p.urls = append(p.urls, source.NormalizeURL(u))
		}
	}
	if p.ref == "" || len(p.urls) == 0 {
		return nil, fmt.Errorf("push payload lacks ref or repository URL")
	}
	return p, nil
}

func validHMAC(key, body []byte, sigHex string) bool {
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) == 0 {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	return hmac.Equal(sig, mac.Sum(nil))
}

// absorb reports whether p falls into an open window for its repository
// and ref (it is then triggered when the window closes); otherwise it
// opens one and p is triggered now.
func (h *Webhook) absorb(p *push) bool {
	key := p.ref + "\x00" + strings.Join(p.urls, "\x00")
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.windows == nil {
		h.windows = map[string]*window{}
	}
	if w, open := h.windows[key]; open {
		w.push, w.pending = p, true
		return true
	}
	h.windows[key] = &window{push: p}
	h.closeLater(key)
	return false
}

// closeLater closes key's window after the coalescing delay, triggering
// what arrived meanwhile (and opening a new window for it).
func (h *Webhook) closeLater(key string) {
	d := h.Coalesce
	if d <= 0 {
		d = time.Second
	}
	time.AfterFunc(d, func() {
		h.mu.Lock()
		w := h.windows[key]
		if w == nil || !w.pending {
			delete(h.windows, key)
			h.mu.Unlock()
			return
		}
		w.pending = false
		p := w.push
		h.closeLater(key)
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		t, err := h.followers(ctx, p)
		if err != nil {
			h.Log.Error(err, "finding the applications that follow a push (coalesced deliveries)")
			return
		}
		h.request(t, h.stamp())
	})
}

// targets are the Applications and ApplicationSets a push concerns.
type targets struct {
	apps []*v1alpha1.Application
	sets []*v1alpha1.ApplicationSet
}

func (t targets) names() []string {
	out := []string{}
	for _, a := range t.apps {
		out = append(out, a.Namespace+"/"+a.Name)
	}
	for _, s := range t.sets {
		out = append(out, "ApplicationSet "+s.Namespace+"/"+s.Name)
	}
	return out
}

// followers finds every Application following the pushed repository and
// ref, and every ApplicationSet whose Git generators read it.
func (h *Webhook) followers(ctx context.Context, p *push) (targets, error) {
	var t targets
	var apps v1alpha1.ApplicationList
	if err := h.Client.List(ctx, &apps); err != nil {
		return t, err
	}
	for i := range apps.Items {
		if follows(&apps.Items[i], p) {
			t.apps = append(t.apps, &apps.Items[i])
		}
	}
	var sets v1alpha1.ApplicationSetList
	if err := h.Client.List(ctx, &sets); err != nil {
		return t, err
	}
	for i := range sets.Items {
		if setFollows(&sets.Items[i], p) {
			t.sets = append(t.sets, &sets.Items[i])
		}
	}
	return t, nil
}

func (h *Webhook) stamp() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// requestParallelism bounds the sync requests a push writes at once.
const requestParallelism = 16

// request asks each target to fetch and sync at once: in memory when
// this process reconciles it (Local), else with a sync request annotation
// stamped at, up to requestParallelism at a time, within two minutes.
// Failures are logged: the targets' own polling still finds the push.
func (h *Webhook) request(t targets, at time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stamp := at.UTC().Format(time.RFC3339Nano)
	g := new(errgroup.Group)
	g.SetLimit(requestParallelism)
	annotate := func(obj client.Object, by bool) {
		g.Go(func() error {
			patch := client.MergeFrom(obj.DeepCopyObject().(client.Object))
			ann := obj.GetAnnotations()
			if ann == nil {
				ann = map[string]string{}
			}
			ann[v1alpha1.AnnotationRequestedAt] = stamp
			if by {
				ann[v1alpha1.AnnotationRequestedBy] = v1alpha1.RequestedByWebhook
			}
			obj.SetAnnotations(ann)
			if err := h.Client.Patch(ctx, obj, patch); err != nil && !apierrors.IsNotFound(err) {
				// (not found: deleted since the list, e.g. by its ApplicationSet)
				h.Log.Error(err, "requesting a sync for a push", "object", obj.GetNamespace()+"/"+obj.GetName())
			}
			return nil
		})
	}
	local := 0
	for _, a := range t.apps {
		if h.Local != nil && h.Local(client.ObjectKeyFromObject(a), at) {
			local++
			continue
		}
		annotate(a, true)
	}
	for _, s := range t.sets {
		annotate(s, false)
	}
	_ = g.Wait()
	h.Log.Info("git push", "triggered", t.names(), "inMemory", local)
}

// setFollows reports whether one of set's Git generators reads the pushed
// repository and ref.
func setFollows(set *v1alpha1.ApplicationSet, p *push) bool {
	for _, n := range generate.Leaves(set.Spec.Generators) {
		if n.Git == nil {
			continue
		}
		probe := &v1alpha1.Application{Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: n.Git.RepoURL, Ref: n.Git.Ref}}}
		if follows(probe, p) {
			return true
		}
	}
	return false
}

// follows reports whether app tracks the pushed repository and ref.
func follows(app *v1alpha1.Application, p *push) bool {
	return appspec.Follows(&app.Spec.Source, p.urls, p.ref)
}
