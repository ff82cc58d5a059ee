package engine

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"converge.dev/converge/internal/render"
)

func TestContains_FieldsValuesAndLists(t *testing.T) {
	live := map[string]any{
		"spec": map[string]any{"replicas": int64(2), "strategy": "RollingUpdate",
			"ports": []any{map[string]any{"port": int64(80), "protocol": "TCP"}}},
	}
	cases := []struct {
		name string
		want any
		ok   bool
	}{
		{"subset with defaults on the live side", map[string]any{"spec": map[string]any{"replicas": 2.0, "ports": []any{map[string]any{"port": int64(80)}}}}, true},
		{"changed value", map[string]any{"spec": map[string]any{"replicas": int64(3)}}, false},
		{"missing field", map[string]any{"spec": map[string]any{"paused": true}}, false},
		{"list of another length", map[string]any{"spec": map[string]any{"ports": []any{}}}, false},
		{"null wants absence", map[string]any{"spec": map[string]any{"paused": nil}}, true},
	}
	for _, tc := range cases {
		if got := contains(live, tc.want); got != tc.ok {
			t.Errorf("%s: contains = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

func secret(data map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "s", "namespace": "n"}}}
	d := map[string]any{}
	for k, v := range data {
		d[k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	u.Object["data"] = d
	return u
}

func TestUnifiedDiff_MasksSecretValuesButShowsWhichKeysChanged(t *testing.T) {
	live := secret(map[string]string{"same": "AAA-same", "changed": "BBB-old", "removed": "CCC-gone"})
	want := secret(map[string]string{"same": "AAA-same", "changed": "DDD-new", "added": "EEE-new"})
	diff, err := unifiedDiff("Secret/n/s", live, want)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"AAA-same", "BBB-old", "CCC-gone", "DDD-new", "EEE-new"} {
		if strings.Contains(diff, v) || strings.Contains(diff, base64.StdEncoding.EncodeToString([]byte(v))) {
			t.Errorf("diff leaks %s:\n%s", v, diff)
		}
	}
	for _, line := range []string{"-  changed: '*** (masked, before)'", "+  changed: '*** (masked, after)'", "-  removed: '*** (masked)'", "+  added: '*** (masked)'", "   same: '*** (masked)'"} {
		if !strings.Contains(diff, line) {
			t.Errorf("diff lacks %q:\n%s", line, diff)
		}
	}
}

func TestScrubSecret_RemovesEncodedAndDecodedValues(t *testing.T) {
	s := secret(map[string]string{"password": "hunter2-long"})
	msg := `Secret "s" is invalid: data[password]: "aHVudGVyMi1sb25n" and hunter2-long`
	got := scrubSecret(msg, s)
	if strings.Contains(got, "hunter2") || strings.Contains(got, "aHVudGVyMi1sb25n") {
		t.Errorf("scrubbed message still holds the value: %s", got)
	}
}

func TestInventory_EncodesDeterministicallyAndRoundTrips(t *testing.T) {
	inv := &Inventory{Revision: "abc", Entries: map[render.Key]Entry{}}
	for _, e := range []Entry{
		{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "a", Name: "web", Hash: "h1", ResourceVersion: "10"},
		{Version: "v1", Kind: "Namespace", Name: "a", Hash: "h2", ResourceVersion: "5"},
	} {
		inv.Entries[e.key()] = e
	}
	one, err := encodeInventory(inv)
	if err != nil {
		t.Fatal(err)
	}
	two, _ := encodeInventory(inv)
	if string(one) != string(two) {
		t.Error("encoding the same inventory twice gave different bytes")
	}
	back, err := decodeInventory(one)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(inv, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestClientRate(t *testing.T) {
	for _, c := range []struct {
		qps       float32
		burst     int
		wantQPS   float32
		wantBurst int
	}{
		{0, 0, -1, 0},      // unset: no client-side limit
		{-1, 0, -1, 0},     // already none
		{50, 0, 50, 50},    // a burst of at least the QPS
		{50, 300, 50, 300}, // as asked
	} {
		if q, b := ClientRate(c.qps, c.burst); q != c.wantQPS || b != c.wantBurst {
			t.Errorf("ClientRate(%v, %d) = %v, %d; want %v, %d", c.qps, c.burst, q, b, c.wantQPS, c.wantBurst)
		}
	}
}
