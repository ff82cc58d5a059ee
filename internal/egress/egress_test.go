package egress

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
)

func TestCheck_ClassesAndAllowances(t *testing.T) {
	closed, err := New(false, []string{"10.20.0.0/16", "git.internal", "*.svc.cluster.local", "192.168.1.7"}, "--egress-allow")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		host, addr string
		closed     string // "" allowed, else a word of the refusal
		open       string
	}{
		{"example.com", "93.184.216.34", "", ""},
		{"metadata", "169.254.169.254", "link-local", "link-local"},
		{"x", "fe80::1", "link-local", "link-local"},
		{"x", "fd00:ec2::254", "metadata", "metadata"},
		{"x", "100.100.100.200", "metadata", "metadata"},
		{"x", "0.0.0.0", "unspecified", "unspecified"},
		{"x", "::ffff:169.254.169.254", "link-local", "link-local"},
		{"x", "127.0.0.1", "loopback", ""},
		{"x", "::1", "loopback", ""},
		{"x", "::ffff:127.0.0.1", "loopback", ""},
		{"x", "10.0.0.1", "private", ""},
		{"x", "10.20.3.4", "", ""},
		{"x", "172.16.0.1", "private", ""},
		{"x", "192.168.1.7", "", ""},
		{"x", "192.168.1.8", "private", ""},
		{"x", "100.64.0.1", "private", ""},
		{"x", "fc00::1", "private", ""},
		{"git.internal", "10.9.9.9", "", ""},
		{"charts.team.svc.cluster.local", "10.96.0.10", "", ""},
		{"git.internal", "169.254.169.254", "link-local", "link-local"},
	} {
		addr := netip.MustParseAddr(c.addr)
		for _, p := range []struct {
			policy *Policy
			want   string
		}{{closed, c.closed}, {Open(), c.open}} {
			err := p.policy.Check(c.host, addr)
			switch {
			case p.want == "" && err != nil:
				t.Errorf("%s %s (private %v): refused: %v", c.host, c.addr, p.policy.Private, err)
			case p.want != "" && (err == nil || !strings.Contains(err.Error(), p.want)):
				t.Errorf("%s %s (private %v): err = %v, want a refusal naming %q", c.host, c.addr, p.policy.Private, err, p.want)
			}
		}
	}
	if _, err := New(false, []string{"10.0.0.0/33"}, "--egress-allow"); err == nil {
		t.Error("a bad range was accepted")
	}
}

// A refused server receives nothing, also when an allowed one redirects
// to it.
func TestTransport_RefusesAtDialTimeAndOnRedirect(t *testing.T) {
	var hits atomic.Int32
	inner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer inner.Close()
	p, err := New(false, nil, "--egress-allow")
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: p.Transport()}
	_, err = hc.Get(inner.URL)
	if !IsRefused(err) || !strings.Contains(err.Error(), "loopback") || !strings.Contains(err.Error(), "--egress-allow") {
		t.Fatalf("err = %v, want a refusal naming loopback and the flag", err)
	}
	// "localhost" resolves to loopback: refused after DNS.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(inner.URL, "http://"))
	if _, err = hc.Get("http://localhost:" + port); !IsRefused(err) {
		t.Fatalf("localhost: err = %v, want a refusal", err)
	}
	// Allowed by range, then a redirect from there to a refused host.
	host, _ := New(false, []string{"127.0.0.1"}, "--egress-allow")
	redirector := httptest.NewServer(http.RedirectHandler("http://[::1]:"+port+"/", http.StatusFound))
	defer redirector.Close()
	hc = &http.Client{Transport: host.Transport()}
	if _, err = hc.Get(redirector.URL); !IsRefused(err) {
		t.Fatalf("redirect: err = %v, want a refusal", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the refused server received %d requests", n)
	}
	// Allowed: reached.
	if _, err = hc.Get(inner.URL); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != 1 {
		t.Fatal("the allowed server was not reached")
	}
}
