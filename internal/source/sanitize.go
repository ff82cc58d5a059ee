package source

import (
	neturl "net/url"
	"strings"

	"converge.dev/converge/internal/redact"
)

// sanitize removes credentials from a message: userinfo in any URL, and
// each of the given secrets wherever it appears.
func sanitize(msg string, secrets ...string) string {
	return redact.Message(redact.Secrets(msg, secrets...))
}

// NormalizeURL reduces a repository URL to host/path, so that the
// https, ssh and scp-like forms of one repository compare equal.
func NormalizeURL(raw string) string {
	s := strings.TrimSpace(raw)
	if !strings.Contains(s, "://") {
		if at := strings.Index(s, "@"); at >= 0 {
			if host, path, ok := strings.Cut(s[at+1:], ":"); ok {
				s = "ssh://" + host + "/" + path
			}
		}
	}
	u, err := neturl.Parse(s)
	if err != nil {
		return strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(raw, "/"), ".git"))
	}
	host := strings.ToLower(u.Hostname())
	if port := u.Port(); port != "" && port != "22" && port != "443" && port != "80" {
		host += ":" + port
	}
	path := strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), ".git")
	return host + path
}
