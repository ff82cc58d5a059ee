// Package ui is converge's web UI: the list, tree, history and diff pages,
// live updates, and actions (sync, suspend, rollback, seal) made with the
// viewer's own Kubernetes identity. A Hub watches Applications, history
// records and events once for every page open; sessions hold each
// viewer's token in memory only. It must not act with the agent's rights
// on a viewer's behalf, nor show a Secret's value (diffs are masked).
package ui
