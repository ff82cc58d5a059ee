package ui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/actions"
	"converge.dev/converge/internal/engine"
)

const (
	sessionCookie = "converge_session"
	loginCookie   = "converge_login"
	// sessionLifetime bounds a session whatever its use; sessionIdle ends
	// one left alone.
	sessionLifetime = 8 * time.Hour
	sessionIdle     = time.Hour
	// accessTTL is how long an access check's answer is reused.
	accessTTL   = 30 * time.Second
	maxSessions = 10000
	// maxSessionsPerUser bounds one user's sessions: a new one past it
	// ends that user's oldest, never another user's.
	maxSessionsPerUser = 16
)

// errTooManySessions refuses a sign-in when every session slot is held by
// live sessions: nobody else is signed out to make room.
var errTooManySessions = errors.New("too many people are signed in: try again later")

// session is one signed-in viewer. Its credentials stay on the server; the
// browser holds only the session's random id, in an HTTP-only cookie.
type session struct {
	id      string
	csrf    string
	user    string
	cfg     *rest.Config
	client  client.Client
	created time.Time
	// sso is the signed-in viewer's ID token, for a single sign-on.
	sso *credential

	mu       sync.Mutex
	lastSeen time.Time
	flash    string
	access   map[string]accessAnswer
	engine   *engine.Manager
	// typed is the viewer's client-go clientset (logs), made on first use
	// and kept, so its connections are reused.
	typed kubernetes.Interface
	// previews bounds the diffs one session asks for: each fetches and
	// renders as the agent.
	previews *rate.Limiter
	// follows counts the logs this session follows.
	follows int
}

type accessAnswer struct {
	allowed bool
	at      time.Time
}

// sessions holds the signed-in viewers.
type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
	now  func() time.Time
}

func newSessions() *sessions {
	return &sessions{byID: map[string]*session{}, now: time.Now}
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// add starts a session for user acting through cfg and c. A user at
// maxSessionsPerUser loses their own oldest session; when all sessions are
// taken by live ones, the sign-in is refused (errTooManySessions).
func (s *sessions) add(user string, cfg *rest.Config, c client.Client) (*session, error) {
	now := s.now()
	ss := &session{id: randomToken(), csrf: randomToken(), user: user, cfg: cfg, client: c, created: now, lastSeen: now, access: map[string]accessAnswer{},
		previews: rate.NewLimiter(rate.Every(2*time.Second), 10)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	var mine []*session
	for _, o := range s.byID {
		if o.user == user {
			mine = append(mine, o)
		}
	}
	if len(mine) >= maxSessionsPerUser {
		oldest := mine[0]
		for _, o := range mine[1:] {
			if o.created.Before(oldest.created) {
				oldest = o
			}
		}
		delete(s.byID, oldest.id)
	}
	if len(s.byID) >= maxSessions {
		return nil, errTooManySessions
	}
	s.byID[ss.id] = ss
	return ss, nil
}

func (s *sessions) expireLocked(now time.Time) {
	for id, ss := range s.byID {
		ss.mu.Lock()
		dead := now.Sub(ss.created) > sessionLifetime || now.Sub(ss.lastSeen) > sessionIdle
		ss.mu.Unlock()
		if dead {
			delete(s.byID, id)
		}
	}
}

// get returns the live session of r's cookie, or nil.
func (s *sessions) get(r *http.Request) *session {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil
	}
	now := s.now()
	s.mu.Lock()
	ss := s.byID[ck.Value]
	s.mu.Unlock()
	if ss == nil {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if now.Sub(ss.created) > sessionLifetime || now.Sub(ss.lastSeen) > sessionIdle {
		s.remove(ss.id)
		return nil
	}
	ss.lastSeen = now
	return ss
}

// alive says whether session id still exists (not signed out, not
// expired).
func (s *sessions) alive(id string) bool {
	s.mu.Lock()
	ss := s.byID[id]
	s.mu.Unlock()
	if ss == nil {
		return false
	}
	now := s.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return now.Sub(ss.created) <= sessionLifetime
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	delete(s.byID, id)
	s.mu.Unlock()
}

// validCSRF says whether r carries the session's CSRF token, in the form
// field "csrf" or the X-CSRF-Token header.
func (ss *session) validCSRF(r *http.Request) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		got = r.PostFormValue("csrf")
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(ss.csrf)) == 1
}

// startFollow takes one of the session's followed logs, if one is left.
func (ss *session) startFollow() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.follows >= followPerSession {
		return false
	}
	ss.follows++
	return true
}

func (ss *session) endFollow() {
	ss.mu.Lock()
	ss.follows--
	ss.mu.Unlock()
}

// takeFlash returns the message for the next page and clears it.
func (ss *session) takeFlash() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f := ss.flash
	ss.flash = ""
	return f
}

func (ss *session) setFlash(msg string) {
	ss.mu.Lock()
	ss.flash = msg
	ss.mu.Unlock()
}

// can asks the apiserver, as the viewer, whether the viewer may do verb on
// Applications in ns (SelfSubjectAccessReview); answers are reused for
// accessTTL. An error counts as no.
func (ss *session) can(ctx context.Context, verb, resource, ns string) bool {
	key := verb + " " + resource + " " + ns
	now := time.Now()
	ss.mu.Lock()
	a, ok := ss.access[key]
	ss.mu.Unlock()
	if ok && now.Sub(a.at) < accessTTL {
		return a.allowed
	}
	group := v1alpha1.GroupVersion.Group
	if resource == "events" || resource == "configmaps" {
		group = ""
	}
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group, Resource: resource},
	}}
	allowed := false
	if err := ss.client.Create(ctx, review); err == nil {
		allowed = review.Status.Allowed
	}
	ss.mu.Lock()
	ss.access[key] = accessAnswer{allowed: allowed, at: now}
	ss.mu.Unlock()
	return allowed
}

// actor acts as the viewer; records, when set, records what it did.
func (ss *session) actor(records client.Client) *actions.Actor {
	a := actions.As(ss.client, ss.user, "ui")
	a.Records = records
	return a
}

// clientset is the viewer's client-go clientset, made on first use.
func (ss *session) clientset() (kubernetes.Interface, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.typed == nil {
		cs, err := kubernetes.NewForConfig(ss.cfg)
		if err != nil {
			return nil, err
		}
		ss.typed = cs
	}
	return ss.typed, nil
}

// manager is the viewer's engine (for diffs), made on first use.
func (ss *session) manager() (*engine.Manager, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.engine != nil {
		return ss.engine, nil
	}
	m, err := engine.New(ss.cfg, engine.DefaultOptions())
	if err != nil {
		return nil, err
	}
	ss.engine = m
	return m, nil
}

var errNoSession = errors.New("no session: sign in again")
