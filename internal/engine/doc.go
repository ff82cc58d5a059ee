// Package engine converges a cluster with a desired set: plan (what would
// change, decided by server-side dry-run), apply (server-side apply in a safe
// order), prune (owned objects no longer desired), health (kstatus) and the
// inventory that makes the next sync cost only what changed.
//
// Both faces of converge use it: `converge sync` from a CI job (push) and the
// agent's reconciler (pull) run the same Manager methods and leave the same
// record. Every step returns data (a ChangeSet), never only logs.
package engine
