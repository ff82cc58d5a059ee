// Package server holds the agent's HTTP endpoints other than the web UI
// (internal/ui), metrics and probes: the Git webhook receiver, the sealing
// service (certificate and re-encryption) and the rate limiter they and the
// UI's login share. Its handlers read requests as untrusted input and never
// answer with a secret value; the webhook only stamps Applications to be
// looked at, it applies nothing itself.
package server
