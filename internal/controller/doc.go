// Package controller holds the agent's reconcilers. The Application
// reconciler runs the same engine as `converge sync`: fetch (shared source
// cache), render, plan, apply, prune, health, record; it watches the
// objects each Application owns so that drift is an event, not a poll.
package controller
