package charts

import (
	"testing"
)

// An index.yaml is whatever a repository answers: parsing it and looking
// a chart up in it never panics.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nentries:\n  shop:\n  - {name: shop, version: 1.0.0, urls: [shop-1.0.0.tgz], digest: abc}\n"), "shop", "1.x")
	f.Add([]byte("entries: {a: [{version: \"not-semver\"}, null]}"), "a", "")
	f.Add([]byte("entries: &x {a: *x}"), "a", ">=1 <2")
	f.Fuzz(func(t *testing.T, data []byte, chart, version string) {
		idx, err := parseIndex(data)
		if err != nil {
			return
		}
		if cv, err := idx.Get(chart, version); err == nil && cv == nil {
			t.Fatal("a lookup found nothing without an error")
		}
	})
}
