// Package oidcop runs a real OpenID Provider for tests of single sign-on:
// zitadel's, built from its own Go module (github.com/zitadel/oidc/v3),
// with the module's in-memory storage and username/password login page.
// It serves TLS on the issuer's own address, adds a "groups" claim to ID
// tokens when the scope "groups" is asked for, and knows one web client.
package oidcop

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// User may sign in with its ID as the username.
type User struct {
	ID, Password string
	Groups       []string
}

// Client is the one relying party the provider knows.
type Client struct {
	ID, Secret   string
	RedirectURIs []string
}

// Provider is a running OpenID Provider.
type Provider struct {
	Issuer string
	srv    *http.Server
}

// Start serves a provider for issuer (https://host:port) with the
// certificate in certFile and keyFile.
func Start(issuer, certFile, keyFile string, client Client, users ...User) (*Provider, error) {
	u, err := url.Parse(issuer)
	if err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("issuer %q: want https://host:port", issuer)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("the issuer's address: %w", err)
	}
	srv := &http.Server{Handler: Handler(issuer, client, users...), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	return &Provider{Issuer: issuer, srv: srv}, nil
}

// Handler is the provider for issuer, to serve over TLS at that address
// (httptest.NewUnstartedServer tells it before it starts).
func Handler(issuer string, client Client, users ...User) http.Handler {
	st := &withGroups{
		Storage: storage.NewStorageWithClients(userStore(users), map[string]*storage.Client{
			client.ID: storage.WebClient(client.ID, client.Secret, client.RedirectURIs...),
		}),
		groups: map[string][]string{},
	}
	for _, user := range users {
		st.groups[user.ID] = user.Groups
	}
	quiet := slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelError}))
	return exampleop.SetupServer(issuer, st, quiet, false)
}

// Close stops the provider.
func (p *Provider) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// withGroups is the module's storage with a groups claim.
type withGroups struct {
	*storage.Storage
	groups map[string][]string
}

func (s *withGroups) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, token op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, token, scopes); err != nil {
		return err
	}
	if slices.Contains(scopes, "groups") {
		info.AppendClaims("groups", s.groups[token.GetSubject()])
	}
	return nil
}

func (s *withGroups) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return groupsScope{c}, nil
}

// groupsScope lets a client ask for the scope "groups".
type groupsScope struct{ op.Client }

func (c groupsScope) IsScopeAllowed(scope string) bool {
	return scope == "groups" || c.Client.IsScopeAllowed(scope)
}

// userStore holds the users by ID.
type userStore []User

func (u userStore) GetUserByID(id string) *storage.User {
	for _, user := range u {
		if user.ID == id {
			return &storage.User{ID: user.ID, Username: user.ID, Password: user.Password, FirstName: user.ID, Email: user.ID + "@example.test", EmailVerified: true}
		}
	}
	return nil
}

func (u userStore) GetUserByUsername(name string) *storage.User { return u.GetUserByID(name) }

func (u userStore) ExampleClientID() string { return "" }
