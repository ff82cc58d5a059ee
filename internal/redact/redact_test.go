package redact

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestMessage(t *testing.T) {
	for _, tc := range []struct{ in, leak string }{
		{"fetching https://bob:hunter2@git.example.com/x.git: 403", "hunter2"},
		{"git clone ssh://deploy:s3cr3tpw@host/repo failed", "s3cr3tpw"},
		{"request failed: Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload", "eyJhbGciOiJIUzI1NiJ9"},
		{"auth bearer abcdefghijklmnop rejected", "abcdefghijklmnop"},
		{"helm: password=topsecretvalue&user=x", "topsecretvalue"},
		{"values: token: ghp_abcdefghijklmnopqrstuvwxyz", "ghp_abcdefghijklmnopqrstuvwxyz"},
		{"bad key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n", "b3BlbnNzaC1rZXktdjEAAAAA"},
		{"truncated -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA", "MIIEowIBAAKCAQEA"},
	} {
		got := Message(tc.in)
		if strings.Contains(got, tc.leak) {
			t.Errorf("Message(%q) = %q: still holds %q", tc.in, got, tc.leak)
		}
	}
	// Ordinary text is left alone.
	for _, s := range []string{
		"Deployment/web/api (deploy.yaml): spec.replicas: Invalid value: -1",
		"https://git.example.com/org/repo.git: repository not found",
	} {
		if got := Message(s); got != s {
			t.Errorf("Message(%q) = %q, want it unchanged", s, got)
		}
	}
}

func TestMessageBounded(t *testing.T) {
	got := Message(strings.Repeat("é", MaxMessage))
	if len(got) > MaxMessage+len("…") {
		t.Fatalf("len = %d, want at most %d", len(got), MaxMessage+len("…"))
	}
	if !strings.HasSuffix(got, "…") || strings.ContainsRune(got, '\uFFFD') {
		t.Fatalf("cut badly: ends %q", got[len(got)-8:])
	}
}

func TestWrapKeepsChain(t *testing.T) {
	base := errors.New("boom")
	err := Wrap(fmt.Errorf("https://u:p4ssw0rd@h/r: %w", base))
	if strings.Contains(err.Error(), "p4ssw0rd") || !errors.Is(err, base) {
		t.Fatalf("Wrap = %q (Is base: %v)", err, errors.Is(err, base))
	}
}

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:s3cret@git.example.com/org/app.git": "https://git.example.com/org/app.git",
		"oci://registry.example.com/charts":               "oci://registry.example.com/charts",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}
