package ui

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"

	"converge.dev/converge/internal/redact"
)

// ssoStart sends the browser to the provider's sign-in page. The state
// goes in a cookie too (SameSite=Lax: the provider's redirect back is a
// navigation from another site), so a sign-in finished in another
// browser is refused.
func (u *Server) ssoStart(w http.ResponseWriter, r *http.Request) {
	p, err := u.SSO.discover(r.Context())
	if err != nil {
		u.Log.Info("single sign-on unavailable", "issuer", u.SSO.Issuer, "error", err.Error())
		u.renderLoginError(w, u.loginToken(w), err.Error())
		return
	}
	pl, err := u.SSO.begin()
	if err != nil {
		u.renderLoginError(w, u.loginToken(w), err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: ssoCookie, Value: pl.state, Path: "/auth/", MaxAge: int(pendingTTL / time.Second),
		HttpOnly: true, Secure: u.Secure, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, u.SSO.oauth(p).AuthCodeURL(pl.state, oidc.Nonce(pl.nonce), oauth2.S256ChallengeOption(pl.verifier)), http.StatusFound)
}

// ssoCallback ends a sign-in: the provider's code is exchanged, the ID
// token verified, and the apiserver asked who it says the viewer is.
func (u *Server) ssoCallback(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: ssoCookie, Path: "/auth/", MaxAge: -1, HttpOnly: true, Secure: u.Secure, SameSite: http.SameSiteLaxMode})
	q := r.URL.Query()
	ck, err := r.Cookie(ssoCookie)
	state := q.Get("state")
	if err != nil || state == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(state)) != 1 {
		u.renderLoginError(w, u.loginToken(w), "This sign-in was not started in this browser, or took too long: sign in again.")
		return
	}
	pl := u.SSO.take(state)
	if pl == nil {
		u.renderLoginError(w, u.loginToken(w), "This sign-in took too long or was already used: sign in again.")
		return
	}
	if e := q.Get("error"); e != "" {
		msg := "The identity provider refused the sign-in: " + short(e)
		if d := q.Get("error_description"); d != "" {
			msg += " (" + short(d) + ")"
		}
		u.renderLoginError(w, u.loginToken(w), msg)
		return
	}
	cred, err := u.SSO.exchange(r.Context(), pl, q.Get("code"))
	if err != nil {
		u.Log.Info("single sign-on refused", "error", redact.Error(err), "remote", clientIP(r))
		u.renderLoginError(w, u.loginToken(w), redact.Error(err))
		return
	}
	cfg := rest.AnonymousClientConfig(u.Cluster)
	cfg.WrapTransport = cred.wrap
	c, err := u.client(cfg)
	if err != nil {
		u.renderLoginError(w, u.loginToken(w), redact.Error(err))
		return
	}
	user, err := selfReview(r.Context(), c)
	switch {
	case apierrors.IsUnauthorized(err):
		u.Log.Info("sign-in refused: the apiserver did not accept the ID token", "issuer", u.SSO.Issuer, "remote", clientIP(r))
		u.renderLoginError(w, u.loginToken(w), fmt.Sprintf("The cluster does not accept ID tokens of %s for the client %s: its apiserver's authentication configuration must trust this issuer and audience.", u.SSO.Issuer, u.SSO.ClientID))
		return
	case err != nil:
		u.renderLoginError(w, u.loginToken(w), "The sign-in could not be checked: "+redact.Error(err))
		return
	}
	ss, err := u.sessions.add(user, cfg, c)
	if err != nil {
		u.renderLoginError(w, u.loginToken(w), err.Error())
		return
	}
	ss.sso = cred
	u.Log.Info("signed in", "user", user, "via", "sso", "remote", clientIP(r))
	u.setCookie(w, sessionCookie, ss.id, sessionLifetime)
	// The session cookie is SameSite=Strict, and this answer ends a
	// navigation that another site started: a redirect would arrive
	// without it. The page moves on from this site instead.
	u.moveOn(w, "/", "Signed in.")
}

// moveOn answers with a page that goes on to target at once.
func (u *Server) moveOn(w http.ResponseWriter, target, msg string) {
	var buf bytes.Buffer
	if err := moveOnPage.Execute(&buf, struct{ Target, Msg string }{target, msg}); err != nil {
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

var moveOnPage = template.Must(template.New("moveon").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={{.Target}}"><title>converge</title></head><body><p>{{.Msg}} <a href="{{.Target}}">Continue</a></p></body></html>`))

// loginToken starts a sign-in form's double-submit token.
func (u *Server) loginToken(w http.ResponseWriter) string {
	token := randomToken()
	u.setCookie(w, loginCookie, token, 10*time.Minute)
	return token
}
