package generate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"

	"converge.dev/converge/api/v1alpha1"
)

// heapGrowth runs f and says how many bytes it allocated in all.
func heapGrowth(t *testing.T, f func()) uint64 {
	t.Helper()
	var before, after goruntime.MemStats
	goruntime.ReadMemStats(&before)
	f()
	goruntime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func wantLimit(t *testing.T, err error, where, bound string) {
	t.Helper()
	var lerr *LimitError
	if !errors.As(err, &lerr) {
		t.Fatalf("err = %v, want a LimitError (%s)", err, bound)
	}
	if !strings.Contains(lerr.Where, where) || lerr.Bound != bound {
		t.Fatalf("limit %q at %q, want %q at %q (%v)", lerr.Bound, lerr.Where, bound, where, err)
	}
}

// The set: a matrix of one element with 100,000 keys and 5,000
// empty elements, about 1.2 MB, once built 500 million map entries. It
// must fail on its size before any pair is made.
func TestRun_MatrixOfWideAndLongListsFailsBeforeBuilding(t *testing.T) {
	wide := map[string]string{}
	for i := range 100_000 {
		wide[fmt.Sprintf("k%d", i)] = ""
	}
	long := make([]map[string]string, 5000)
	for i := range long {
		long[i] = map[string]string{}
	}
	gens := []v1alpha1.Generator{{Matrix: &v1alpha1.MatrixGenerator{Generators: []v1alpha1.NestedGenerator{
		{List: &v1alpha1.ListGenerator{Elements: []map[string]string{wide}}},
		{List: &v1alpha1.ListGenerator{Elements: long}},
	}}}}
	var err error
	grew := heapGrowth(t, func() { _, err = Run(gens, Sources{}, &Budget{}) })
	wantLimit(t, err, "spec.generators[0].matrix.generators[0].list.elements[0]", "parameters per set")
	if grew > 64<<20 {
		t.Errorf("allocated %d MiB to refuse it", grew>>20)
	}

	// Within the keys limit, the product's bytes: 256 keys of 64 bytes
	// × 5,000 pairs is 80 MiB, refused before a pair is built.
	wide = map[string]string{}
	for i := range 200 {
		wide[fmt.Sprintf("k%03d", i)] = strings.Repeat("v", 60)
	}
	gens[0].Matrix.Generators[0].List.Elements = []map[string]string{wide}
	grew = heapGrowth(t, func() { _, err = Run(gens, Sources{}, &Budget{}) })
	wantLimit(t, err, "spec.generators[0].matrix", "parameter bytes per ApplicationSet")
	if grew > 64<<20 {
		t.Errorf("allocated %d MiB to refuse it", grew>>20)
	}
}

func TestRun_CountsAndValueSizes(t *testing.T) {
	many := make([]map[string]string, MaxSets+1)
	for i := range many {
		many[i] = map[string]string{"i": fmt.Sprint(i)}
	}
	_, err := Run([]v1alpha1.Generator{{List: &v1alpha1.ListGenerator{Elements: many}}}, Sources{}, &Budget{})
	wantLimit(t, err, "spec.generators[0].list.elements", "parameter sets per generator")

	half := many[:MaxSets/2+1]
	_, err = Run([]v1alpha1.Generator{{List: &v1alpha1.ListGenerator{Elements: half}}, {List: &v1alpha1.ListGenerator{Elements: half}}}, Sources{}, &Budget{})
	wantLimit(t, err, "spec.generators", "parameter sets per ApplicationSet")

	big := []map[string]string{{"v": strings.Repeat("x", MaxValueBytes+1)}}
	_, err = Run([]v1alpha1.Generator{{List: &v1alpha1.ListGenerator{Elements: big}}}, Sources{}, &Budget{})
	wantLimit(t, err, `spec.generators[0].list.elements[0]: parameter "v"`, "bytes per parameter name or value")
}

// 1 MiB parameter files: each within the file limit, together past the
// set's file bytes; one file whose flattened keys pass the keys limit.
func TestRun_GitFilesAreBoundedBySizeAndKeys(t *testing.T) {
	root := t.TempDir()
	line := "- {a: " + strings.Repeat("x", 1000) + "}\n"
	file := strings.Repeat(line, (MaxFileSize-1)/len(line))
	for i := range 20 {
		dir := filepath.Join(root, fmt.Sprintf("c%02d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g := &v1alpha1.GitGenerator{RepoURL: "https://git.example.com/r", Files: []v1alpha1.GitPathPattern{{Path: "*/config.yaml"}}}
	src := Sources{Checkouts: map[string]string{GitKey(g): root}}
	_, err := Run([]v1alpha1.Generator{{Git: g}}, src, &Budget{})
	var lerr *LimitError
	if !errors.As(err, &lerr) || !strings.HasPrefix(lerr.Where, "spec.generators[0].git") {
		t.Fatalf("err = %v, want a limit of spec.generators[0].git", err)
	}

	wide := "{"
	for i := range MaxKeys + 1 {
		wide += fmt.Sprintf("k%d: {x: [1, 2]}, ", i)
	}
	wide += "}"
	root = t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "wide.yaml"), []byte(wide), 0o644); err != nil {
		t.Fatal(err)
	}
	g.Files = []v1alpha1.GitPathPattern{{Path: "wide.yaml"}}
	_, err = Run([]v1alpha1.Generator{{Git: g}}, Sources{Checkouts: map[string]string{GitKey(g): root}}, &Budget{})
	wantLimit(t, err, "spec.generators[0].git: wide.yaml", "parameters per set")
}

// A template of many placeholders, each filled with a long value, is
// sized before it is filled.
func TestFill_IsBoundedBeforeItIsBuilt(t *testing.T) {
	spec := `{"source": {"repoURL": "https://x", "path": "` + strings.Repeat("{{v}}", 50_000) + `"}}`
	tmpl := v1alpha1.ApplicationTemplate{Metadata: v1alpha1.ApplicationTemplateMeta{Name: "a"}, Spec: runtime.RawExtension{Raw: []byte(spec)}}
	var err error
	grew := heapGrowth(t, func() {
		_, err = Fill(tmpl, Params{"v": strings.Repeat("x", MaxValueBytes)}, "ns", &Budget{})
	})
	wantLimit(t, err, "template", "bytes per filled template")
	if grew > 64<<20 {
		t.Errorf("allocated %d MiB to refuse it", grew>>20)
	}

	// Each app small, together past the set's total.
	small := v1alpha1.ApplicationTemplate{Metadata: v1alpha1.ApplicationTemplateMeta{Name: "a"},
		Spec: runtime.RawExtension{Raw: []byte(`{"source": {"repoURL": "https://x", "path": "{{v}}{{v}}{{v}}{{v}}"}}`)}}
	b := &Budget{}
	p := Params{"v": strings.Repeat("x", MaxValueBytes)}
	for i := 0; ; i++ {
		if _, err = Fill(small, p, "ns", b); err != nil {
			break
		}
		if i > MaxTotalFilledBytes/(4*MaxValueBytes) {
			t.Fatal("no total limit")
		}
	}
	wantLimit(t, err, "template", "bytes of filled templates per ApplicationSet")
}

func TestFill_RefusesConvergeLabelsAndAnnotations(t *testing.T) {
	for _, meta := range []v1alpha1.ApplicationTemplateMeta{
		{Name: "a", Annotations: map[string]string{"converge.dev/requested-by": "alice"}},
		{Name: "a", Annotations: map[string]string{"{{k}}": "x"}},
		{Name: "a", Labels: map[string]string{"converge.dev/application-set": "other"}},
		{Name: "a", Annotations: map[string]string{"rollback.converge.dev/x": "y"}},
	} {
		tmpl := v1alpha1.ApplicationTemplate{Metadata: meta, Spec: runtime.RawExtension{Raw: []byte(`{"source": {"repoURL": "https://x"}}`)}}
		_, err := Fill(tmpl, Params{"k": "converge.dev/rollback"}, "ns", &Budget{})
		if err == nil || !strings.Contains(err.Error(), "converge's own") || !strings.Contains(err.Error(), "metadata.") {
			t.Errorf("%v: err = %v, want a refusal naming the field", meta, err)
		}
	}
}
