package ui

import (
	"context"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"converge.dev/converge/internal/testutil/oidcop"
)

const testRedirect = "https://ui.test/auth/callback"

// provider serves zitadel's OpenID Provider (its own module) over TLS on
// loopback, and an SSO registered at it.
func provider(t *testing.T, scopes ...string) (*SSO, *httptest.Server) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	issuer := "https://" + srv.Listener.Addr().String()
	srv.Config.Handler = oidcop.Handler(issuer, oidcop.Client{ID: "ui", Secret: "s3cret", RedirectURIs: []string{testRedirect}},
		oidcop.User{ID: "alice", Password: "pw", Groups: []string{"team-a"}})
	srv.StartTLS()
	t.Cleanup(srv.Close)
	sso := &SSO{Issuer: issuer, ClientID: "ui", ClientSecret: "s3cret", RedirectURL: testRedirect, Scopes: scopes, HTTPClient: srv.Client()}
	if err := sso.Validate(); err != nil {
		t.Fatal(err)
	}
	return sso, srv
}

// signIn goes through the provider's login page as a browser would and
// returns the code it sends back, with the sign-in it belongs to.
func signIn(t *testing.T, sso *SSO, srv *httptest.Server, password string) (string, *pendingLogin) {
	t.Helper()
	ctx := context.Background()
	p, err := sso.discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := sso.begin()
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Transport: srv.Client().Transport, Jar: jar, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if r.URL.Host == "ui.test" {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	res, err := browser.Get(sso.oauth(p).AuthCodeURL(pl.state, oidc.Nonce(pl.nonce), oauth2.S256ChallengeOption(pl.verifier)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	id := res.Request.URL.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("the provider did not show its login page: %s", res.Request.URL)
	}
	res, err = browser.PostForm(sso.Issuer+"/login/username", url.Values{"id": {id}, "username": {"alice"}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	back, err := url.Parse(res.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(back.String(), testRedirect) {
		t.Fatalf("the provider answered %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}
	if back.Query().Get("state") != pl.state {
		t.Fatalf("the provider sent state %q back, want %q", back.Query().Get("state"), pl.state)
	}
	return back.Query().Get("code"), pl
}

func TestSSO_CodeFlowNeedsTheVerifierAndNonceOfItsSignIn(t *testing.T) {
	sso, srv := provider(t, "groups")
	ctx := context.Background()

	code, pl := signIn(t, sso, srv, "pw")
	cred, err := sso.exchange(ctx, pl, code)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := sso.discover(ctx)
	idt, err := sso.verify(ctx, p, cred.token())
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Groups []string `json:"groups"`
	}
	if err := idt.Claims(&claims); err != nil || cred.subject != "alice" || len(claims.Groups) != 1 || claims.Groups[0] != "team-a" {
		t.Errorf("signed in as %q with groups %v (%v), want alice in team-a", cred.subject, claims.Groups, err)
	}
	if cred.refresh != "" {
		t.Error("a refresh token came without offline_access")
	}
	if _, err := sso.exchange(ctx, pl, code); err == nil {
		t.Error("a code was accepted twice")
	}

	code, pl = signIn(t, sso, srv, "pw")
	pl.verifier = oauth2.GenerateVerifier()
	if _, err := sso.exchange(ctx, pl, code); err == nil {
		t.Error("a code was exchanged without its PKCE verifier")
	}

	code, pl = signIn(t, sso, srv, "pw")
	pl.nonce = "another sign-in's"
	if _, err := sso.exchange(ctx, pl, code); err == nil || !strings.Contains(err.Error(), "nonce") {
		t.Errorf("an ID token for another nonce: %v", err)
	}
}

func TestSSO_ASessionIsRenewedWithARefreshTokenOrEnds(t *testing.T) {
	ctx := context.Background()
	sso, srv := provider(t, "groups")
	code, pl := signIn(t, sso, srv, "pw")
	cred, err := sso.exchange(ctx, pl, code)
	if err != nil {
		t.Fatal(err)
	}
	if err := cred.fresh(ctx); err != nil {
		t.Fatalf("a new ID token is not fresh: %v", err)
	}
	cred.expiry = time.Now().Add(refreshEarly / 2)
	if err := cred.fresh(ctx); !errors.Is(err, errSignInExpired) {
		t.Errorf("an expiring ID token without a refresh token: %v, want errSignInExpired", err)
	}

	sso, srv = provider(t, "groups", "offline_access")
	code, pl = signIn(t, sso, srv, "pw")
	if cred, err = sso.exchange(ctx, pl, code); err != nil {
		t.Fatal(err)
	}
	if cred.refresh == "" {
		t.Fatal("no refresh token with offline_access")
	}
	old := cred.token()
	cred.expiry = time.Now().Add(refreshEarly / 2)
	if err := cred.fresh(ctx); err != nil {
		t.Fatalf("renewing: %v", err)
	}
	if !cred.expiry.After(time.Now().Add(time.Minute)) || cred.token() == old {
		t.Errorf("renewed to expire at %v", cred.expiry)
	}
	cred.refresh = "revoked-or-forged"
	cred.expiry = time.Now()
	if err := cred.fresh(ctx); !errors.Is(err, errSignInExpired) {
		t.Errorf("a refused refresh: %v, want errSignInExpired", err)
	}
}

func TestSSO_PendingSignInsAreBoundedAndUsedOnce(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	sso := &SSO{now: func() time.Time { return now }}
	first, err := sso.begin()
	if err != nil {
		t.Fatal(err)
	}
	for range maxPending - 1 {
		if _, err := sso.begin(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sso.begin(); !errors.Is(err, errTooManySignIns) {
		t.Errorf("sign-in %d: %v, want errTooManySignIns", maxPending+1, err)
	}
	if sso.take(first.state) != first || sso.take(first.state) != nil {
		t.Error("a sign-in was not taken exactly once")
	}
	if _, err := sso.begin(); err != nil {
		t.Fatalf("a place freed is taken again: %v", err)
	}
	// Full again: sign-ins never finished make room once they expire.
	now = now.Add(pendingTTL + time.Second)
	late, err := sso.begin()
	if err != nil {
		t.Fatalf("after the old ones expired: %v", err)
	}
	if len(sso.pending) != 1 || sso.take(late.state) != late {
		t.Errorf("%d sign-ins remembered after expiry, want 1", len(sso.pending))
	}
	if sso.take("forged") != nil {
		t.Error("an unknown state was taken")
	}
}

func TestSSO_ValidateNamesTheSetting(t *testing.T) {
	for _, tc := range []struct {
		sso  *SSO
		want string
	}{
		{&SSO{ClientID: "ui", RedirectURL: testRedirect}, "issuer"},
		{&SSO{Issuer: "http://idp.test", ClientID: "ui", RedirectURL: testRedirect}, "https"},
		{&SSO{Issuer: "https://idp.test", RedirectURL: testRedirect}, "client ID"},
		{&SSO{Issuer: "https://idp.test", ClientID: "ui", RedirectURL: "https://ui.test/"}, "/auth/callback"},
	} {
		if err := tc.sso.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s/%s/%s: %v, want an error naming %s", tc.sso.Issuer, tc.sso.ClientID, tc.sso.RedirectURL, err, tc.want)
		}
	}
}
