package egress

import (
	"net/netip"
	"testing"
)

// Whatever address a name resolves to, a link-local or metadata address
// is refused by every policy, and a refusal is never a panic.
func FuzzCheck(f *testing.F) {
	for _, a := range [][]byte{{169, 254, 169, 254}, {127, 0, 0, 1}, {10, 1, 2, 3}, {8, 8, 8, 8},
		netip.MustParseAddr("::ffff:169.254.169.254").AsSlice(), netip.MustParseAddr("fe80::1").AsSlice()} {
		f.Add(a, "host.example.com", true)
	}
	f.Fuzz(func(t *testing.T, raw []byte, host string, private bool) {
		addr, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		p, err := New(private, []string{"0.0.0.0/0", "::/0", host}, "--egress-allow")
		if err != nil {
			p = &Policy{Private: private}
		}
		err = p.Check(host, addr)
		u := addr.Unmap()
		if (u.IsLinkLocalUnicast() || u.IsLinkLocalMulticast()) && err == nil {
			t.Fatalf("%s (%s) was allowed", addr, host)
		}
	})
}
