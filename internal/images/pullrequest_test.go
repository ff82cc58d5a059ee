package images

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// A forge with one pull-request endpoint pair per provider, as each
// spells it; it opens a pull request once and lists it afterwards.
func TestEnsurePullRequest_OpensOnceOnEachForge(t *testing.T) {
	for _, tc := range []struct {
		provider, list, create, auth, header string
	}{
		{"github", "/repos/acme/fleet/pulls", "/repos/acme/fleet/pulls", "Bearer tok", "Authorization"},
		{"gitea", "/api/v1/repos/acme/fleet/pulls", "/api/v1/repos/acme/fleet/pulls", "token tok", "Authorization"},
		{"gitlab", "/api/v4/projects/acme%2Ffleet/merge_requests", "/api/v4/projects/acme%2Ffleet/merge_requests", "tok", "Private-Token"},
	} {
		t.Run(tc.provider, func(t *testing.T) {
			var open []map[string]any
			opened := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.EscapedPath() != tc.list || r.Header.Get(tc.header) != tc.auth {
					t.Errorf("%s %s (%s=%q)", r.Method, r.URL.EscapedPath(), tc.header, r.Header.Get(tc.header))
					http.NotFound(w, r)
					return
				}
				if r.Method == http.MethodPost {
					var body map[string]string
					_ = json.NewDecoder(r.Body).Decode(&body)
					opened++
					pr := map[string]any{"html_url": "https://forge/pr/1", "web_url": "", "head": map[string]any{"ref": body["head"] + body["source_branch"]}, "base": map[string]any{"ref": body["base"] + body["target_branch"]}}
					if tc.provider == "gitlab" {
						pr = map[string]any{"web_url": "https://forge/pr/1"}
					}
					open = append(open, pr)
					_ = json.NewEncoder(w).Encode(pr)
					return
				}
				_ = json.NewEncoder(w).Encode(open)
			}))
			defer srv.Close()
			pr := PullRequest{Provider: tc.provider, API: srv.URL, Repository: "acme/fleet", Token: "tok", Head: "image-updates", Base: "main", Title: "Update images"}
			for i, wantOpened := range []bool{true, false} {
				url, made, err := EnsurePullRequest(context.Background(), srv.Client(), pr)
				if err != nil || made != wantOpened || url != "https://forge/pr/1" {
					t.Fatalf("call %d: %q, opened %v, %v", i, url, made, err)
				}
			}
			if opened != 1 {
				t.Errorf("opened %d pull requests, want 1", opened)
			}
		})
	}
}
