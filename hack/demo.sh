#!/usr/bin/env bash
# make demo: converge on the local cluster, in push mode (the CLI as a CI job
# would run it). Brings the cluster up (building it on the first run), syncs
# the three examples (plain YAML, Kustomize overlay, Helm chart), waits until
# they are healthy, then makes a live edit and shows converge detect and
# revert it.
set -euo pipefail
cd "$(dirname "$0")/.."

export KUBECONFIG="$PWD/.cluster/kubeconfig"
converge=bin/converge
kubectl=("$(bin/localcluster --dir "$PWD/.cluster" --module-dir tools/localcluster assets)/kubectl")

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

step "Local cluster"
make -s cluster-up

step "Namespace demo"
"${kubectl[@]}" create namespace demo --dry-run=client -o yaml | "${kubectl[@]}" apply -f - >/dev/null

step "Sync examples/plain (plain YAML)"
$converge sync examples/plain --app plain -n demo --prune --wait --timeout 90s
step "Sync examples/kustomize/overlays/prod (Kustomize overlay)"
$converge sync examples/kustomize/overlays/prod --app api -n demo --prune --wait --timeout 90s
step "Sync examples/helm/podinfo (Helm chart)"
$converge sync examples/helm/podinfo --app podinfo --release-name demo -n demo --prune --wait --timeout 90s

step "What runs"
"${kubectl[@]}" -n demo get deployments,services

step "Drift: scale deployment/web to 5 and edit its ConfigMap behind converge's back"
"${kubectl[@]}" -n demo scale deployment web --replicas=5
"${kubectl[@]}" -n demo patch configmap web-config --type merge -p '{"data":{"greeting":"drifted"}}'

step "converge diff shows exactly what diverges (exit 1 = differences)"
set +e
$converge diff examples/plain --app plain -n demo
code=$?
set -e
echo "(diff exit code: $code)" >&2

step "converge sync heals it"
$converge sync examples/plain --app plain -n demo --prune --wait --timeout 90s
"${kubectl[@]}" -n demo get deployment web -o jsonpath='replicas: {.spec.replicas}{"\n"}'

step "A no-op resync writes nothing"
$converge sync examples/plain --app plain -n demo

step "Done. The cluster keeps running: KUBECONFIG=$KUBECONFIG; 'make cluster-down' stops it."
