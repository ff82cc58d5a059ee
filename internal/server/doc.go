// Package server holds the agent's HTTP endpoints besides metrics and
// probes: the Git webhook receiver.
package server
