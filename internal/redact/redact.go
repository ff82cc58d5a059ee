// Package redact is the one sanitizer for messages that leave the agent or
// the CLI: status conditions, events, history entries and logs. It removes
// what a message must never carry, whatever produced it: credentials in URLs,
// authorization headers and tokens, and private keys. Values that only the
// producer knows (a Secret's data, a Git password) are removed where the
// error is made; this is the net under every exit.
package redact

import (
	neturl "net/url"
	"regexp"
	"slices"
	"strings"
)

// MaxMessage bounds a message: a status condition holds at most 32 KiB.
const MaxMessage = 32000

var (
	// scheme://user:password@host → scheme://host
	urlUserinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@`)
	// Authorization: Bearer xyz, Basic xyz, token=xyz, password=xyz
	authHeader = regexp.MustCompile(`(?i)(authorization:\s*(?:bearer|basic|token)?\s*)[^\s"',]+`)
	bearer     = regexp.MustCompile(`(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}`)
	keyValue   = regexp.MustCompile(`(?i)\b((?:password|passwd|token|secret|api[_-]?key|access[_-]?key)\s*[=:]\s*)[^\s"',&]+`)
	privateKey = regexp.MustCompile(`(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)`)
)

// Message returns msg without credentials, bounded in length.
func Message(msg string) string {
	msg = privateKey.ReplaceAllString(msg, "[private key redacted]")
	msg = urlUserinfo.ReplaceAllString(msg, "$1")
	msg = authHeader.ReplaceAllString(msg, "${1}***")
	msg = bearer.ReplaceAllString(msg, "${1}***")
	msg = keyValue.ReplaceAllString(msg, "${1}***")
	if len(msg) > MaxMessage {
		cut := MaxMessage
		for cut > 0 && !validStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

// validStart reports whether b can begin a UTF-8 sequence, so a cut there
// does not split a character.
func validStart(b byte) bool { return b&0xC0 != 0x80 }

// Error is Message of err's text ("" for nil).
func Error(err error) string {
	if err == nil {
		return ""
	}
	return Message(err.Error())
}

// Secrets removes each of values from msg, longest first so that a value
// containing another is removed whole (values shorter than 3 bytes are too
// likely to be ordinary text and are left). It is the one place secret
// values are taken out of messages: Git passwords, tokens, a Secret's data.
func Secrets(msg string, values ...string) string {
	values = slices.Clone(values)
	slices.SortFunc(values, func(a, b string) int { return len(b) - len(a) })
	for _, v := range values {
		if len(v) >= 3 {
			msg = strings.ReplaceAll(msg, v, "***")
		}
	}
	return msg
}

// Wrap returns an error whose text is Message of err's, keeping err for
// errors.Is and errors.As.
func Wrap(err error) error {
	if err == nil {
		return nil
	}
	msg := Message(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redacted{msg: msg, err: err}
}

type redacted struct {
	msg string
	err error
}

func (r *redacted) Error() string { return r.msg }
func (r *redacted) Unwrap() error { return r.err }

// URL is raw without credentials (userinfo dropped), for messages; a
// string that is no URL is redacted as a message.
func URL(raw string) string {
	u, err := neturl.Parse(raw)
	if err != nil || u.User == nil {
		return Message(raw)
	}
	u.User = nil
	return u.String()
}
