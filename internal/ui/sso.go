package ui

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// SSO signs viewers in through an OpenID Connect provider: the
// authorization code flow with PKCE, a nonce and a state bound to the
// browser. The viewer's ID token is what the UI then sends to the
// apiserver, which must trust the same issuer for the same client ID
// (its structured authentication configuration); its RBAC stays the only
// authorization, and the groups claim becomes the viewer's groups there.
type SSO struct {
	// Issuer is the provider's issuer URL (discovery is read from it on
	// the first sign-in, and again until it answers).
	Issuer string
	// ClientID and ClientSecret are the UI's registration at the
	// provider; with no secret the UI is a public client (PKCE only).
	ClientID, ClientSecret string
	// RedirectURL is this UI's /auth/callback as browsers reach it.
	RedirectURL string
	// Scopes asked for; openid is always among them.
	Scopes []string
	// LogoutRedirectURL, when set, is where the provider sends a viewer
	// who signed out (it must be registered there); without it the
	// provider shows its own page.
	LogoutRedirectURL string
	// Name labels the sign-in button ("Sign in with Name").
	Name string
	// HTTPClient reaches the provider; nil is a client with a timeout.
	HTTPClient *http.Client

	mu         sync.Mutex
	provider   *oidc.Provider
	endSession string
	pending    map[string]*pendingLogin
	now        func() time.Time
}

const (
	ssoCookie = "converge_sso"
	// A sign-in started must end within pendingTTL; at most maxPending
	// are remembered, so unfinished sign-ins cannot grow memory.
	pendingTTL = 10 * time.Minute
	maxPending = 10000
	// refreshEarly renews an ID token this long before it expires.
	refreshEarly = 30 * time.Second
)

var (
	errTooManySignIns = errors.New("too many sign-ins are under way: try again in a few minutes")
	errSignInExpired  = errors.New("your sign-in has expired: sign in again")
)

// pendingLogin is a sign-in sent to the provider and not yet back.
type pendingLogin struct {
	state, nonce, verifier string
	started                time.Time
}

// Validate checks the settings a sign-in needs.
func (s *SSO) Validate() error {
	for _, f := range []struct{ name, value string }{{"issuer", s.Issuer}, {"client ID", s.ClientID}, {"redirect URL", s.RedirectURL}} {
		if f.value == "" {
			return fmt.Errorf("single sign-on needs the provider's %s", f.name)
		}
	}
	u, err := url.Parse(s.RedirectURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.Path != "/auth/callback" {
		return fmt.Errorf("the redirect URL %q must be this UI's address with the path /auth/callback", s.RedirectURL)
	}
	if iss, err := url.Parse(s.Issuer); err != nil || iss.Scheme != "https" || iss.Host == "" {
		return fmt.Errorf("the issuer %q must be an https URL", s.Issuer)
	}
	return nil
}

func (s *SSO) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

func (s *SSO) context(ctx context.Context) context.Context {
	c := s.HTTPClient
	if c == nil {
		c = &http.Client{Timeout: 15 * time.Second}
	}
	return oidc.ClientContext(ctx, c)
}

// discover reads the provider's discovery document, once it answers.
func (s *SSO) discover(ctx context.Context) (*oidc.Provider, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.provider != nil {
		return s.provider, nil
	}
	p, err := oidc.NewProvider(s.context(ctx), s.Issuer)
	if err != nil {
		return nil, fmt.Errorf("the identity provider %s could not be reached: %w", s.Issuer, err)
	}
	var extra struct {
		EndSession string `json:"end_session_endpoint"`
	}
	_ = p.Claims(&extra)
	s.provider, s.endSession = p, extra.EndSession
	return p, nil
}

func (s *SSO) oauth(p *oidc.Provider) *oauth2.Config {
	scopes := []string{oidc.ScopeOpenID}
	for _, sc := range s.Scopes {
		if sc != oidc.ScopeOpenID && sc != "" {
			scopes = append(scopes, sc)
		}
	}
	return &oauth2.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret, RedirectURL: s.RedirectURL, Endpoint: p.Endpoint(), Scopes: scopes}
}

// begin remembers a new sign-in.
func (s *SSO) begin() (*pendingLogin, error) {
	now := s.clock()
	pl := &pendingLogin{state: randomToken(), nonce: randomToken(), verifier: oauth2.GenerateVerifier(), started: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		s.pending = map[string]*pendingLogin{}
	}
	if len(s.pending) >= maxPending {
		for k, o := range s.pending {
			if now.Sub(o.started) > pendingTTL {
				delete(s.pending, k)
			}
		}
		if len(s.pending) >= maxPending {
			return nil, errTooManySignIns
		}
	}
	s.pending[pl.state] = pl
	return pl, nil
}

// take returns and forgets the sign-in of state, if it is recent.
func (s *SSO) take(state string) *pendingLogin {
	s.mu.Lock()
	defer s.mu.Unlock()
	pl := s.pending[state]
	delete(s.pending, state)
	if pl == nil || s.clock().Sub(pl.started) > pendingTTL {
		return nil
	}
	return pl
}

// credential is a viewer's ID token, renewed with the refresh token when
// the provider gave one; without one the session ends when it expires.
type credential struct {
	sso     *SSO
	subject string

	mu      sync.Mutex
	idToken string
	expiry  time.Time
	refresh string
}

// fresh makes sure the ID token is valid for a while yet.
func (c *credential) fresh(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sso.clock().Before(c.expiry.Add(-refreshEarly)) {
		return nil
	}
	if c.refresh == "" {
		return errSignInExpired
	}
	p, err := c.sso.discover(ctx)
	if err != nil {
		return err
	}
	ctx = c.sso.context(ctx)
	tok, err := c.sso.oauth(p).TokenSource(ctx, &oauth2.Token{RefreshToken: c.refresh}).Token()
	if err != nil {
		c.refresh = ""
		return errSignInExpired
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := c.sso.verify(ctx, p, raw)
	if err != nil || idt.Subject != c.subject {
		c.refresh = ""
		return errSignInExpired
	}
	c.idToken, c.expiry = raw, idt.Expiry
	if tok.RefreshToken != "" {
		c.refresh = tok.RefreshToken
	}
	return nil
}

func (c *credential) token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idToken
}

// wrap sends the current ID token with every request (client-go's
// rest.Config.WrapTransport).
func (c *credential) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+c.token())
		return rt.RoundTrip(r)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (s *SSO) verify(ctx context.Context, p *oidc.Provider, raw string) (*oidc.IDToken, error) {
	if raw == "" {
		return nil, errors.New("the identity provider returned no ID token")
	}
	return p.Verifier(&oidc.Config{ClientID: s.ClientID, Now: s.clock}).Verify(ctx, raw)
}

// exchange ends a sign-in: the code for tokens, the ID token verified
// (issuer, audience, expiry, signature, nonce).
func (s *SSO) exchange(ctx context.Context, pl *pendingLogin, code string) (*credential, error) {
	p, err := s.discover(ctx)
	if err != nil {
		return nil, err
	}
	ctx = s.context(ctx)
	tok, err := s.oauth(p).Exchange(ctx, code, oauth2.VerifierOption(pl.verifier))
	if err != nil {
		return nil, fmt.Errorf("the identity provider did not accept the sign-in: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := s.verify(ctx, p, raw)
	if err != nil {
		return nil, fmt.Errorf("the ID token is not valid: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(pl.nonce)) != 1 {
		return nil, errors.New("the ID token is not for this sign-in (nonce)")
	}
	return &credential{sso: s, subject: idt.Subject, idToken: raw, expiry: idt.Expiry, refresh: tok.RefreshToken}, nil
}

// logoutURL is where a viewer signing out goes: the provider's end of
// session, when it has one. The ID token is not sent as a hint: the
// apiserver accepts it until it expires, and a URL ends up in the
// browser's history and the provider's logs.
func (s *SSO) logoutURL() string {
	s.mu.Lock()
	end := s.endSession
	s.mu.Unlock()
	if end == "" {
		return ""
	}
	u, err := url.Parse(end)
	if err != nil {
		return ""
	}
	q := u.Query()
	q.Set("client_id", s.ClientID)
	if s.LogoutRedirectURL != "" {
		q.Set("post_logout_redirect_uri", s.LogoutRedirectURL)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// short bounds text from the provider shown to the viewer.
func short(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
