// Package gitserver serves Git repositories over smart HTTP for tests and
// the demo: git's own `git http-backend`, run as a CGI program behind a
// net/http server on loopback. It can require basic authentication, count
// requests per repository, and be stopped and started again to simulate an
// outage.
package gitserver

import (
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// Server serves the bare repositories under Root.
type Server struct {
	// Root holds bare repositories: Root/NAME.git.
	Root string
	// Username and Password, when set, are required (HTTP basic auth).
	Username, Password string

	mu       sync.Mutex
	listener net.Listener
	srv      *http.Server
	addr     string
	uploads  map[string]*atomic.Int64
	backend  string
}

// New returns a server for root; call Start.
func New(root string) (*Server, error) {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("finding git's exec path: %w", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		return nil, fmt.Errorf("git-http-backend not found: %w", err)
	}
	return &Server{Root: root, backend: backend, uploads: map[string]*atomic.Int64{}}, nil
}

// Start listens on addr ("127.0.0.1:0" for any free port) and serves.
// Starting again after Stop reuses the first address.
func (s *Server) Start(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addr != "" {
		addr = s.addr
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.listener, s.addr = l, l.Addr().String()
	s.srv = &http.Server{Handler: s}
	go func() { _ = s.srv.Serve(l) }()
	return nil
}

// Stop closes the listener and every connection.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}

// URL returns the HTTP URL of repository name ("shop" for Root/shop.git).
func (s *Server) URL(name string) string {
	return "http://" + s.addr + "/" + name + ".git"
}

// Fetches counts the upload-pack requests (ls-remote and fetch each make
// one or more) made for repository name.
func (s *Server) Fetches(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.uploads[name]; c != nil {
		return c.Load()
	}
	return 0
}

// ServeHTTP authenticates, counts and hands the request to git http-backend.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.Username != "" {
		u, p, ok := r.BasicAuth()
		if !ok || u != s.Username || p != s.Password {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	if strings.HasSuffix(r.URL.Path, "/git-upload-pack") || r.URL.Query().Get("service") == "git-upload-pack" {
		name := strings.TrimSuffix(strings.TrimPrefix(strings.SplitN(r.URL.Path, ".git/", 2)[0], "/"), ".git")
		s.mu.Lock()
		if s.uploads[name] == nil {
			s.uploads[name] = &atomic.Int64{}
		}
		c := s.uploads[name]
		s.mu.Unlock()
		c.Add(1)
	}
	h := &cgi.Handler{
		Path: s.backend,
		Root: "/",
		Env: []string{
			"GIT_PROJECT_ROOT=" + s.Root,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=http.receivepack",
			"GIT_CONFIG_VALUE_0=true",
		},
		InheritEnv: []string{"PATH", "GIT_PROTOCOL"},
	}
	if v := r.Header.Get("Git-Protocol"); v != "" {
		h.Env = append(h.Env, "GIT_PROTOCOL="+v)
	}
	h.ServeHTTP(w, r)
}
