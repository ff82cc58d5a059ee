// Package egress is the agent's address policy for what it fetches and
// sends on a tenant's behalf: chart repositories and registries (index,
// chart and dependency URLs alike) and notification receivers. The policy
// is checked when a connection is dialled, on the addresses DNS returned,
// so a name that resolves somewhere else, or a redirect, meets it too.
//
// Link-local addresses (cloud metadata services among them), unspecified,
// multicast and broadcast addresses are always refused. Loopback, private
// (RFC 1918, fc00::/7), shared (100.64.0.0/10) and so cluster-internal
// addresses are refused unless the policy allows private addresses (a
// single-tenant agent) or lists the range or host (--egress-allow).
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Policy says which addresses may be reached.
type Policy struct {
	// Private allows loopback, private and shared addresses.
	Private bool
	// Allow lists what is reachable even when Private is false: ranges
	// ("10.0.0.0/8", "127.0.0.1/32") and hosts ("git.internal",
	// "*.svc.cluster.local"). It never opens link-local or metadata
	// addresses.
	Allow []string
	// Flag names the setting that fills Allow, for refusal messages.
	Flag string

	prefixes []netip.Prefix
	hosts    []string
	resolver *net.Resolver
}

// New checks allow (ranges and hosts) and returns the policy.
func New(private bool, allow []string, flag string) (*Policy, error) {
	p := &Policy{Private: private, Allow: allow, Flag: flag}
	for _, a := range allow {
		a = strings.TrimSpace(strings.ToLower(a))
		switch {
		case a == "":
		case strings.Contains(a, "/"):
			pfx, err := netip.ParsePrefix(a)
			if err != nil {
				return nil, fmt.Errorf("%s %q: %w", flag, a, err)
			}
			p.prefixes = append(p.prefixes, pfx.Masked())
		default:
			if addr, err := netip.ParseAddr(a); err == nil {
				p.prefixes = append(p.prefixes, netip.PrefixFrom(addr, addr.BitLen()))
				continue
			}
			p.hosts = append(p.hosts, a)
		}
	}
	return p, nil
}

// Open is the policy of a tool run by a person (the CLI): everything but
// link-local and metadata addresses.
func Open() *Policy { return &Policy{Private: true} }

// RefusedError is a connection the policy refused.
type RefusedError struct {
	Addr   string
	Class  string
	Always bool
	Flag   string
}

func (e *RefusedError) Error() string {
	if e.Always {
		return fmt.Sprintf("refused to connect to %s: %s addresses are never reached", e.Addr, e.Class)
	}
	return fmt.Sprintf("refused to connect to %s: %s addresses are reached only where %s lists the range or host", e.Addr, e.Class, e.Flag)
}

// IsRefused reports whether err is, or wraps, a refusal of the policy.
func IsRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

var (
	metadata = []netip.Addr{
		netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud's metadata service
		netip.MustParseAddr("fd00:ec2::254"),   // AWS's, over IPv6
	}
	shared = netip.MustParsePrefix("100.64.0.0/10")
)

// classify names addr's class when it is not a public unicast address;
// always says whether no setting opens it.
func classify(addr netip.Addr) (class string, always bool) {
	addr = addr.Unmap()
	for _, m := range metadata {
		if addr == m {
			return "metadata-service", true
		}
	}
	switch {
	case addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast():
		return "link-local", true
	case addr.IsUnspecified():
		return "unspecified", true
	case addr.IsMulticast() || addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "multicast or broadcast", true
	case addr.IsLoopback():
		return "loopback", false
	case addr.IsPrivate() || shared.Contains(addr):
		return "private", false
	}
	return "", false
}

// Check says whether addr may be reached when dialled as host.
func (p *Policy) Check(host string, addr netip.Addr) error {
	class, always := classify(addr)
	if class == "" {
		return nil
	}
	where := host
	if host != addr.String() {
		where = fmt.Sprintf("%s (%s)", host, addr)
	}
	if always {
		return &RefusedError{Addr: where, Class: class, Always: true}
	}
	if p.Private || p.allowedHost(host) {
		return nil
	}
	for _, pfx := range p.prefixes {
		if pfx.Contains(addr.Unmap()) || pfx.Contains(addr) {
			return nil
		}
	}
	return &RefusedError{Addr: where, Class: class, Flag: p.flag()}
}

func (p *Policy) flag() string {
	if p.Flag == "" {
		return "the agent's --egress-allow"
	}
	return p.Flag
}

func (p *Policy) allowedHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range p.hosts {
		if host == h || (strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:])) {
			return true
		}
	}
	return false
}

// DialContext resolves addr, checks every address it resolves to, and
// connects to the first that answers: the address checked is the address
// dialled, so a name cannot resolve again to somewhere else.
func (p *Policy) DialContext(dialer *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		addrs, err := p.resolve(ctx, host)
		if err != nil {
			return nil, err
		}
		var first error
		for _, a := range addrs {
			if err := p.Check(host, a); err != nil {
				if first == nil {
					first = err
				}
				continue
			}
			conn, err := dialer.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
			if err == nil {
				return conn, nil
			}
			if first == nil || IsRefused(first) {
				first = err
			}
		}
		if first == nil {
			first = fmt.Errorf("%s resolves to no address", host)
		}
		return nil, first
	}
}

func (p *Policy) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{a}, nil
	}
	r := p.resolver
	if r == nil {
		r = net.DefaultResolver
	}
	return r.LookupNetIP(ctx, "ip", host)
}

// Transport is an HTTP transport whose every connection passes the policy.
// A proxy from the environment is used only for targets that pass it too
// (checked on the addresses the target's name resolves to).
func (p *Policy) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = p.DialContext(&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second})
	t.Proxy = func(r *http.Request) (*url.URL, error) {
		u, err := http.ProxyFromEnvironment(r)
		if err != nil || u == nil {
			return u, err
		}
		addrs, err := p.resolve(r.Context(), r.URL.Hostname())
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			if err := p.Check(r.URL.Hostname(), a); err != nil {
				return nil, err
			}
		}
		return u, nil
	}
	return t
}
