package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"testing"
)

func sign(key, body string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

func TestParse_VerifiesEachProvider(t *testing.T) {
	h := &Webhook{Secret: []byte("s3cret")}
	github := `{"ref":"refs/heads/main","repository":{"clone_url":"https://git.example.com/org/shop.git","ssh_url":"git@git.example.com:org/shop.git"}}`
	gitlab := `{"ref":"refs/heads/main","project":{"git_http_url":"https://gitlab.example.com/org/shop.git"}}`
	cases := []struct {
		name   string
		header http.Header
		body   string
		ok     bool
	}{
		{"github signed", http.Header{"X-Github-Event": {"push"}, "X-Hub-Signature-256": {"sha256=" + sign("s3cret", github)}}, github, true},
		{"github wrong key", http.Header{"X-Github-Event": {"push"}, "X-Hub-Signature-256": {"sha256=" + sign("other", github)}}, github, false},
		{"github unsigned", http.Header{"X-Github-Event": {"push"}}, github, false},
		{"gitea signed", http.Header{"X-Gitea-Event": {"push"}, "X-Gitea-Signature": {sign("s3cret", github)}}, github, true},
		{"gitlab token", http.Header{"X-Gitlab-Event": {"Push Hook"}, "X-Gitlab-Token": {"s3cret"}}, gitlab, true},
		{"gitlab wrong token", http.Header{"X-Gitlab-Event": {"Push Hook"}, "X-Gitlab-Token": {"guess"}}, gitlab, false},
		{"unknown sender", http.Header{}, github, false},
	}
	for _, tc := range cases {
		p, err := h.parse(tc.header, []byte(tc.body))
		if tc.ok && (err != nil || p == nil || p.ref != "refs/heads/main") {
			t.Errorf("%s: push %+v, error %v", tc.name, p, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestParse_OtherEventsAreIgnored(t *testing.T) {
	h := &Webhook{Secret: []byte("k")}
	body := `{"zen":"hi"}`
	p, err := h.parse(http.Header{"X-Github-Event": {"ping"}, "X-Hub-Signature-256": {"sha256=" + sign("k", body)}}, []byte(body))
	if err != nil || p != nil {
		t.Errorf("ping: push %+v, error %v", p, err)
	}
}

func TestNormalizeRepoURL_FormsOfOneRepositoryCompareEqual(t *testing.T) {
	want := "git.example.com/org/shop"
	for _, u := range []string{
		"https://git.example.com/org/shop.git",
		"https://user:token@Git.Example.com/org/shop/",
		"ssh://git@git.example.com/org/shop.git",
		"git@git.example.com:org/shop.git",
		"http://git.example.com:80/org/shop",
	} {
		if got := NormalizeRepoURL(u); got != want {
			t.Errorf("NormalizeRepoURL(%q) = %q, want %q", u, got, want)
		}
	}
	if got := NormalizeRepoURL("https://git.example.com:8443/org/shop"); got == want {
		t.Error("a non-default port must stay part of the identity")
	}
}
