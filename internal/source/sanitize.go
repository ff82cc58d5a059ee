package source

import (
	"net/url"
	"regexp"
	"strings"
)

var urlUserinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@`)

// RedactURL removes the user and password from a URL.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return urlUserinfo.ReplaceAllString(raw, "$1")
	}
	u.User = nil
	return u.String()
}

// sanitize removes credentials from a message: userinfo in any URL, and
// each of the given secrets wherever it appears.
func sanitize(msg string, secrets ...string) string {
	msg = urlUserinfo.ReplaceAllString(msg, "$1")
	for _, s := range secrets {
		if len(s) >= 3 {
			msg = strings.ReplaceAll(msg, s, "***")
		}
	}
	return msg
}
