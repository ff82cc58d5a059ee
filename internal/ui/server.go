package ui

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/preview"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/server"
	"converge.dev/converge/web"
)

// UI serves the web UI (docs/ui.md). It keeps no privileges of its own
// for a viewer: everything a page shows about one Application, and every
// action, is a request made with the viewer's own credentials. The list of
// Applications and the live updates come from the Hub's watches, shown
// only in the namespaces where the viewer may list Applications (asked of
// the apiserver as the viewer).
type Server struct {
	// Cluster reaches the apiserver. In local mode it is the user's own
	// configuration, which every session uses; otherwise only its address
	// and CA are kept and each viewer's bearer token is added.
	Cluster *rest.Config
	// Local is `converge ui`: one user, signed in with LoginKey (the key
	// in the URL printed at start), from the Hosts given.
	Local    bool
	LoginKey string
	// Hosts are the Host headers accepted in local mode (a page on
	// another site cannot reach the server through DNS rebinding).
	Hosts []string
	Hub   *Hub
	// Previewer computes the diff.
	Previewer *preview.Previewer
	// Records, when set, writes the records of viewers' actions (the
	// agent's client); otherwise each viewer's own client does.
	Records client.Client
	// SystemNamespace holds the sealing certificate.
	SystemNamespace string
	// Secure marks cookies Secure: the server is reached over TLS.
	Secure bool
	// SSO, when set, also signs viewers in through an OpenID Connect
	// provider (not in local mode).
	SSO    *SSO
	Scheme *runtime.Scheme
	Mapper meta.RESTMapper
	Log    logr.Logger

	sessions *sessions
	pages    map[string]*template.Template
}

// contentSecurityPolicy allows the UI's own script, style and requests,
// and nothing else: no inline script, no other origin, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Handler returns the UI's HTTP handler.
func (u *Server) Handler() (http.Handler, error) {
	if u.Cluster == nil || u.Hub == nil || u.Scheme == nil {
		return nil, errors.New("the UI needs a cluster, a hub and a scheme")
	}
	if u.Local && u.LoginKey == "" {
		return nil, errors.New("a local UI needs a login key")
	}
	if u.SSO != nil {
		if u.Local {
			return nil, errors.New("a local UI signs its one user in with its key, not single sign-on")
		}
		if err := u.SSO.Validate(); err != nil {
			return nil, err
		}
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	u.pages, u.sessions = pages, newSessions()
	static, err := fs.Sub(web.FS, "static")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", u.loginPage)
	mux.Handle("POST /login", (&server.RateLimit{Rate: 1, Burst: 10}).Wrap(http.HandlerFunc(u.login)))
	mux.HandleFunc("POST /logout", u.withSession(u.logout))
	if u.SSO != nil {
		signIns := &server.RateLimit{Rate: 1, Burst: 10}
		mux.Handle("GET /auth/sso", signIns.Wrap(http.HandlerFunc(u.ssoStart)))
		mux.Handle("GET /auth/callback", signIns.Wrap(http.HandlerFunc(u.ssoCallback)))
	}
	mux.HandleFunc("GET /{$}", u.withSession(u.appsPage))
	mux.HandleFunc("GET /rows/{ns}/{name}", u.withSession(u.appRow))
	mux.HandleFunc("GET /apps/{ns}/{name}", u.withSession(u.appPage))
	mux.HandleFunc("GET /apps/{ns}/{name}/sections", u.withSession(u.appSections))
	mux.HandleFunc("GET /apps/{ns}/{name}/diff", u.withSession(u.appDiff))
	mux.HandleFunc("POST /apps/{ns}/{name}/{action}", u.withSession(u.act))
	mux.HandleFunc("GET /apps/{ns}/{name}/object", u.withSession(u.objectPage))
	mux.HandleFunc("GET /apps/{ns}/{name}/object/logs", u.withSession(u.followLogs))
	mux.HandleFunc("POST /apps/{ns}/{name}/object/{action}", u.withSession(u.objectAct))
	mux.HandleFunc("GET /sealedsecrets", u.withSession(u.sealedPage))
	mux.HandleFunc("GET /images", u.withSession(u.imagesPage))
	mux.HandleFunc("GET /live", u.withSession(u.live))
	return u.guard(mux), nil
}

func parsePages() (map[string]*template.Template, error) {
	layout, err := template.ParseFS(web.FS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"login", "apps", "app", "object", "sealed", "images", "error"} {
		t, err := template.Must(layout.Clone()).ParseFS(web.FS, "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// guard sets the security headers on every response and, in local mode,
// refuses requests addressed to another host name.
func (u *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: with no-referrer browsers send
		// "Origin: null" on the UI's own form posts.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		if u.Secure {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if u.Local && !u.hostAllowed(r.Host) {
			http.Error(w, "this server answers only to its own address", http.StatusMisdirectedRequest)
			return
		}
		if r.Method == http.MethodPost && !sameOrigin(r) {
			http.Error(w, "cross-origin request refused", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (u *Server) hostAllowed(host string) bool {
	for _, h := range u.Hosts {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

// sameOrigin refuses a POST whose Origin (when the browser sends one)
// names another site; the CSRF token is checked as well.
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	i := strings.Index(origin, "://")
	return i >= 0 && strings.EqualFold(origin[i+3:], r.Host)
}

// handler is a page or action of a signed-in viewer.
type handler func(w http.ResponseWriter, r *http.Request, ss *session)

// withSession runs h for a signed-in viewer. Without a session, pages
// redirect to sign in and everything else is refused; every POST must
// carry the session's CSRF token.
func (u *Server) withSession(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ss := u.sessions.get(r)
		if ss != nil && ss.sso != nil {
			if err := ss.sso.fresh(r.Context()); err != nil {
				u.Log.Info("signed out", "user", ss.user, "reason", err.Error())
				u.sessions.remove(ss.id)
				ss = nil
			}
		}
		if ss == nil {
			if r.Method == http.MethodGet && r.Header.Get("X-CSRF-Token") == "" && r.URL.Path != "/live" {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			http.Error(w, errNoSession.Error(), http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if !ss.validCSRF(r) {
				http.Error(w, "missing or wrong CSRF token: reload the page and try again", http.StatusForbidden)
				return
			}
		}
		h(w, r, ss)
	}
}

// pageData is what every page's layout shows.
type pageData struct {
	Title, User, CSRF, Nav string
	Flash, Error           string
	Local, Live            bool
	Data                   any
}

func (u *Server) render(w http.ResponseWriter, status int, name string, d pageData) {
	u.renderTemplate(w, status, name, "layout", d)
}

func (u *Server) renderTemplate(w http.ResponseWriter, status int, page, tmpl string, d any) {
	var buf bytes.Buffer
	if err := u.pages[page].ExecuteTemplate(&buf, tmpl, d); err != nil {
		u.Log.Error(err, "rendering a page", "page", page)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (u *Server) page(ss *session, title, nav string, data any) pageData {
	d := pageData{Title: title, User: ss.user, CSRF: ss.csrf, Nav: nav, Flash: ss.takeFlash(), Local: u.Local, Live: true, Data: data}
	// A flash starting with "!" is an error.
	if strings.HasPrefix(d.Flash, "!") {
		d.Flash, d.Error = "", d.Flash[1:]
	}
	return d
}

// fail shows err as a page; a refusal by the apiserver says so plainly.
func (u *Server) fail(w http.ResponseWriter, ss *session, err error) {
	status, title := http.StatusInternalServerError, "Something went wrong"
	switch {
	case apierrors.IsForbidden(err):
		status, title = http.StatusForbidden, "Not allowed"
	case apierrors.IsNotFound(err):
		status, title = http.StatusNotFound, "Not found"
	case apierrors.IsUnauthorized(err):
		status, title = http.StatusUnauthorized, "Signed out"
	}
	d := u.page(ss, title, "", viewerMessage(err))
	d.Live = false
	u.render(w, status, "error", d)
}

// viewerMessage says what an error means for the viewer, without secrets.
func viewerMessage(err error) string {
	msg := redact.Error(err)
	if apierrors.IsForbidden(err) {
		return "Refused by the cluster: your account is not allowed to do this. " + msg
	}
	return msg
}

// loginPage signs in: in local mode with the key in the URL, otherwise
// with the form for a bearer token.
func (u *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if u.Local {
		key := r.URL.Query().Get("key")
		if key == "" || subtle.ConstantTimeCompare([]byte(key), []byte(u.LoginKey)) != 1 {
			http.Error(w, "open the URL converge ui printed: it carries the sign-in key", http.StatusUnauthorized)
			return
		}
		c, err := u.client(u.Cluster)
		if err != nil {
			http.Error(w, redact.Error(err), http.StatusInternalServerError)
			return
		}
		user, err := selfReview(r.Context(), c)
		if err != nil || user == "" {
			user = "you"
		}
		ss, err := u.sessions.add(user, u.Cluster, c)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		u.setCookie(w, sessionCookie, ss.id, 0)
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if ss := u.sessions.get(r); ss != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	// Double-submit token: a page elsewhere cannot sign a browser in.
	u.render(w, http.StatusOK, "login", pageData{Title: "Sign in", CSRF: u.loginToken(w), Data: u.loginData()})
}

// loginData is what the sign-in page offers besides a token.
type loginData struct {
	// SSO names the single sign-on button, when there is one.
	SSO string
}

func (u *Server) loginData() loginData {
	if u.SSO == nil {
		return loginData{}
	}
	name := u.SSO.Name
	if name == "" {
		name = "single sign-on"
	}
	return loginData{SSO: name}
}

func (u *Server) login(w http.ResponseWriter, r *http.Request) {
	if u.Local {
		http.Error(w, "open the URL converge ui printed", http.StatusNotFound)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 32<<10)
	ck, err := r.Cookie(loginCookie)
	if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.PostFormValue("csrf"))) != 1 {
		http.Error(w, "missing or wrong CSRF token: reload the sign-in page", http.StatusForbidden)
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	if token == "" || strings.ContainsAny(token, " \r\n\t") {
		u.renderLoginError(w, ck.Value, "Paste one bearer token.")
		return
	}
	cfg := rest.AnonymousClientConfig(u.Cluster)
	cfg.BearerToken = token
	c, err := u.client(cfg)
	if err != nil {
		u.renderLoginError(w, ck.Value, redact.Error(err))
		return
	}
	user, err := selfReview(r.Context(), c)
	switch {
	case apierrors.IsUnauthorized(err):
		u.Log.Info("sign-in refused: the apiserver did not accept the token", "remote", clientIP(r))
		u.renderLoginError(w, ck.Value, "The cluster did not accept this token.")
		return
	case err != nil:
		u.renderLoginError(w, ck.Value, "The token could not be checked: "+redact.Error(err))
		return
	}
	ss, err := u.sessions.add(user, cfg, c)
	if err != nil {
		u.Log.Info("sign-in refused: every session is taken", "user", user, "remote", clientIP(r))
		u.renderLoginError(w, ck.Value, err.Error())
		return
	}
	u.Log.Info("signed in", "user", user, "remote", clientIP(r))
	u.setCookie(w, loginCookie, "", -1)
	u.setCookie(w, sessionCookie, ss.id, sessionLifetime)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (u *Server) renderLoginError(w http.ResponseWriter, csrf, msg string) {
	u.render(w, http.StatusUnauthorized, "login", pageData{Title: "Sign in", CSRF: csrf, Error: msg, Data: u.loginData()})
}

func (u *Server) logout(w http.ResponseWriter, r *http.Request, ss *session) {
	u.sessions.remove(ss.id)
	u.setCookie(w, sessionCookie, "", -1)
	u.Log.Info("signed out", "user", ss.user, "remote", clientIP(r))
	if ss.sso != nil {
		// Signed out of the provider too, or its session would sign the
		// next click on the button straight back in.
		// A page moves on, not a redirect: the form's CSP (form-action
		// 'self') would stop a redirect to the provider.
		if end := u.SSO.logoutURL(); end != "" {
			u.moveOn(w, end, "Signed out. Signing out of the identity provider…")
			return
		}
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// setCookie sets an HTTP-only, SameSite=Strict cookie (Secure over TLS);
// maxAge 0 lasts the browser session, negative deletes it.
func (u *Server) setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	ck := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: u.Secure, SameSite: http.SameSiteStrictMode}
	switch {
	case maxAge < 0:
		ck.MaxAge = -1
	case maxAge > 0:
		ck.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(w, ck)
}

// client is a client for cfg sharing the UI's scheme and REST mapper.
func (u *Server) client(cfg *rest.Config) (client.Client, error) {
	return client.New(cfg, client.Options{Scheme: u.Scheme, Mapper: u.Mapper})
}

// selfReview asks the apiserver who c is.
func selfReview(ctx context.Context, c client.Client) (string, error) {
	r := &authenticationv1.SelfSubjectReview{}
	if err := c.Create(ctx, r); err != nil {
		return "", err
	}
	return r.Status.UserInfo.Username, nil
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// NewLoginKey makes a local UI's sign-in key.
func NewLoginKey() string { return randomToken() }

// NewHTTPServer serves h with every phase of a request bounded; live
// streams extend their own write deadlines.
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 3 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
}
