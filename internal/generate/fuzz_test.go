package generate

import (
	"encoding/json"
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"

	"converge.dev/converge/api/v1alpha1"
)

// Any list and any template: generation either fails (on a bound, by
// name, or on bad input) or makes Applications within the bounds, and a
// template never sets converge's own annotations.
func FuzzRunAndFill(f *testing.F) {
	f.Add([]byte(`[{"name":"a","path":"x"},{"name":"b","path":"y"}]`), []byte(`{"source":{"repoURL":"https://x","path":"{{path}}"}}`), "{{name}}", "{{name}}")
	f.Add([]byte(`[{"k":"converge.dev/requested-by"}]`), []byte(`{"source":{"repoURL":"{{k}}"}}`), "app", "{{k}}")
	f.Add([]byte(`[{"v":"\"}}, {\"x\": 1"}]`), []byte(`{"source":{"repoURL":"{{v}}{{v}}{{ v }}"}}`), "a-{{v}}", "")
	f.Fuzz(func(t *testing.T, elements, spec []byte, name, annotationKey string) {
		var list []map[string]string
		if json.Unmarshal(elements, &list) != nil || len(list) == 0 {
			return
		}
		b := &Budget{}
		sets, err := Run([]v1alpha1.Generator{{List: &v1alpha1.ListGenerator{Elements: list}}}, Sources{}, b)
		if err != nil {
			var lerr *LimitError
			if !errors.As(err, &lerr) {
				t.Fatalf("a list failed other than on a bound: %v", err)
			}
			return
		}
		if len(sets) > MaxSets {
			t.Fatalf("%d sets", len(sets))
		}
		tmpl := v1alpha1.ApplicationTemplate{
			Metadata: v1alpha1.ApplicationTemplateMeta{Name: name, Annotations: map[string]string{annotationKey: "x"}},
			Spec:     runtime.RawExtension{Raw: spec},
		}
		for _, p := range sets {
			app, err := Fill(tmpl, p, "ns", b)
			if err != nil {
				continue
			}
			for k := range app.Annotations {
				if len(k) >= len(ReservedPrefix) && k[:len(ReservedPrefix)] == ReservedPrefix {
					t.Fatalf("a template set %s", k)
				}
			}
		}
	})
}
