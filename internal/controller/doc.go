// Package controller holds the agent's reconcilers: Applications,
// ApplicationSets, Clusters and SealedSecrets (converge's and Bitnami's).
//
// The Application reconciler reads as its steps (reconcile.go): govern
// (its Tenant, account and destination), source (appspec.Builder.Resolve),
// quiet (nothing changed since the last plan: no render, no request),
// render, decide (the pure decideSync), sync (engine.Run, the one sync
// verb, which also sends the sync's events and writes its history) and
// observe; a failing step ends in settle, which reads the error with the
// pure classify. It watches the objects each Application owns so that
// drift is an event, not a poll.
//
// It must not build an app's desired state itself (appspec does, for the
// previews too), nor record a sync other than through the engine, nor
// write a status other than through writeStatus.
package controller
