package render

import (
	"strings"
	"testing"
)

// FuzzDecode feeds untrusted manifest bytes to the decoder: it must return
// objects or an error naming the file, never panic.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: List\nitems: []\n"))
	f.Add([]byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"a":"YQ=="}}`))
	f.Add([]byte("---\n# only a comment\n---\n"))
	f.Add([]byte("a: [1, 2\n"))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [1, 2]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := decode("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		for _, o := range objs {
			if !strings.HasPrefix(o.Source, "fuzz.yaml#") {
				t.Errorf("source %q", o.Source)
			}
		}
	})
}
