package controller

import (
	"strings"
	"testing"
)

// Bitnami's template.data is filled from the opened values with a few
// pure functions: what would read the agent's environment, or allocate
// without bound, is refused by name.
func TestFillTemplates(t *testing.T) {
	data := map[string][]byte{"password": []byte("pw"), "user": []byte("app")}
	if err := fillTemplates(map[string]string{"url": `postgres://{{ index . "user" }}:{{ index . "password" | b64enc | b64dec }}@db`}, data); err != nil {
		t.Fatal(err)
	}
	if got := string(data["url"]); got != "postgres://app:pw@db" {
		t.Errorf("url = %q", got)
	}
	for name, tc := range map[string]struct{ tmpl, want string }{
		"sprig's env":      {`{{ env "HOME" }}`, `function "env" not defined`},
		"a printf width":   {`{{ printf "%999999999d" 1 }}`, "widths and precisions are not allowed"},
		"a missing key":    {`{{ .nothere }}`, `map has no entry for key "nothere"`},
		"unbounded output": {strings.Repeat(`{{ index . "password" }}`, 1) + strings.Repeat("x", 1<<20), "more than 1048576 bytes"},
	} {
		err := fillTemplates(map[string]string{"out": tc.tmpl}, map[string][]byte{"password": []byte("pw")})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "spec.template.data[out]") {
			t.Errorf("%s: %v, want an error naming spec.template.data[out] and %q", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw") && name != "sprig's env" {
			t.Errorf("%s: the error quotes a value: %v", name, err)
		}
	}
}
