# converge: `make demo` runs the main job on the local cluster; `make test`
# runs every test (unit, envtest and end-to-end), starting the cluster first.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go

# CLUSTER names a local cluster instance: a (the default, in .cluster) or
# b, c, ... beside it on their own ports (in .cluster-b, ...):
# `make cluster-up CLUSTER=b`. The e2e tests use a and b.
CLUSTER ?= a
ifeq ($(CLUSTER),a)
CLUSTER_DIR ?= $(CURDIR)/.cluster
else
CLUSTER_DIR ?= $(CURDIR)/.cluster-$(CLUSTER)
endif
LOCALCLUSTER := bin/localcluster --dir $(CLUSTER_DIR) --name $(CLUSTER) --module-dir tools/localcluster
CLUSTER_B_DIR := $(CURDIR)/.cluster-b
CLUSTER_B := bin/localcluster --dir $(CLUSTER_B_DIR) --name b --module-dir tools/localcluster
KUBECONFIG_LOCAL := $(CLUSTER_DIR)/kubeconfig

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X converge.dev/converge/internal/version.Version=$(VERSION) \
	-X converge.dev/converge/internal/version.Commit=$(COMMIT)

.PHONY: image fuzz test-deps demo-push generate verify-generated demo bench soak peers bench-peers all build test test-unit test-e2e lint assets cluster-up cluster-down cluster-status bin/localcluster

all: build

## build: the converge binary, at bin/converge
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/converge ./cmd/converge

# The agent's image (internal/image): no container runtime; Debian's
# packages for git and ssh as its base. IMAGE names it; PLATFORMS, and
# IMAGE_PUSH=1 pushes it (credentials: the Docker config).
IMAGE ?= ghcr.io/converge-dev/converge:$(VERSION)
PLATFORMS ?= linux/amd64,linux/arm64
IMAGE_PUSH ?=

## image: the agent's OCI image for PLATFORMS, with SBOM and provenance, as an OCI layout in bin/image (IMAGE_PUSH=1 also pushes IMAGE)
image:
	$(GO) run ./hack/image -platforms $(PLATFORMS) -tag $(IMAGE) -version $(VERSION) -commit $(COMMIT) -out bin/image $(if $(IMAGE_PUSH),-push)

## demo: the main job on the local cluster (builds it on the first run); DEMO_EXIT=1 exits once converged
demo: build cluster-up
	$(GO) run ./hack/demo

## demo-push: push mode (the CLI as a CI job runs it) on the local cluster
demo-push: build bin/localcluster
	hack/demo.sh

## test: installs what the tests need, lint, unit and envtest tests, fuzzing for FUZZTIME each, then end-to-end tests on the local clusters
test: test-deps lint test-unit fuzz test-e2e

# Every fuzz target over untrusted input, each for FUZZTIME; seed corpora
# are committed under each package's testdata/fuzz.
FUZZTIME ?= 5s
FUZZ_TARGETS := internal/source:FuzzVerify internal/source:FuzzExtract internal/render:FuzzDecode internal/render:FuzzKustomizeReferences \
	internal/seal:FuzzOpen internal/charts:FuzzParseIndex internal/egress:FuzzCheck internal/generate:FuzzRunAndFill internal/tenancy:FuzzAllowNotify

## fuzz: run each fuzz target for FUZZTIME (default 5s)
fuzz: bin/localcluster
	@KUBEBUILDER_ASSETS="$$($(LOCALCLUSTER) assets)" FUZZTIME=$(FUZZTIME) GO=$(GO) hack/fuzz.sh $(FUZZ_TARGETS)

## test-deps: install sshd, gpg, Chromium and npm when missing (apt-get as root; otherwise names what to install), and axe-core (npm, in the cache)
test-deps:
	@hack/test-deps.sh

# gotestsum runs go test and ends with a summary that names every skipped
# test and why, and every failure.
GOTESTSUM ?= $(GO) run gotest.tools/gotestsum@v1.13.0

# The cluster tool itself is small and builds in a second; the cluster
# binaries it builds are cached under ~/.cache/converge.
bin/localcluster:
	@$(GO) -C tools/localcluster build -o $(CURDIR)/bin/localcluster ./cmd/localcluster

## test-unit: package tests; envtest runs the apiserver and etcd built by tools/localcluster
test-unit: test-deps bin/localcluster
	assets="$$($(LOCALCLUSTER) assets)"; \
	KUBEBUILDER_ASSETS="$$assets" $(GOTESTSUM) --format pkgname-and-test-fails -- -count=1 ./...

## test-e2e: end-to-end tests; starts the local clusters (a, and b for fleets) when they are not running
test-e2e: test-deps cluster-up
	@$(CLUSTER_B) up
	assets="$$($(LOCALCLUSTER) assets)"; \
	KUBEBUILDER_ASSETS="$$assets" CONVERGE_KUBECONFIG=$(KUBECONFIG_LOCAL) CONVERGE_CLUSTER_B=$(CLUSTER_B_DIR) $(GOTESTSUM) --format testname -- -tags e2e -count=1 -timeout 20m ./test/e2e/...

## lint: gofmt, go vet over both modules, and generated files current
lint: verify-generated
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...
	$(GO) -C tools/localcluster vet ./cmd/localcluster ./internal/...

## assets: print the directory of the built cluster binaries (KUBEBUILDER_ASSETS)
assets: bin/localcluster
	@$(LOCALCLUSTER) assets

## cluster-up: build (first run only) and start the local cluster; idempotent
cluster-up: bin/localcluster
	@$(LOCALCLUSTER) up

## cluster-down: stop every process of the local cluster and remove its state (CLUSTER=a also stops b)
cluster-down: bin/localcluster
	@$(LOCALCLUSTER) down
	@if [ "$(CLUSTER)" = a ] && [ -d "$(CLUSTER_B_DIR)" ]; then $(CLUSTER_B) down; fi

## cluster-status: show what runs
cluster-status: bin/localcluster
	@$(LOCALCLUSTER) status

## soak: 100 apps under a commit every 3 s for SOAK (10m); logs the agent's RSS and goroutines
SOAK ?= 10m
soak: cluster-up
	assets="$$($(LOCALCLUSTER) assets)"; \
	KUBEBUILDER_ASSETS="$$assets" CONVERGE_KUBECONFIG=$(KUBECONFIG_LOCAL) CONVERGE_SOAK=$(SOAK) $(GO) test -tags e2e -count=1 -timeout 60m -run TestSoak -v ./test/e2e/

## bench: sync benchmarks on the local cluster (1,000 objects); prints a table, writes .cluster/bench.json
bench: cluster-up
	assets="$$($(LOCALCLUSTER) assets)"; \
	KUBEBUILDER_ASSETS="$$assets" CONVERGE_KUBECONFIG=$(KUBECONFIG_LOCAL) $(GO) run ./test/bench -out $(CLUSTER_DIR)/bench.json; \
	KUBEBUILDER_ASSETS="$$assets" $(GO) test -run '^$$' -bench . -benchmem ./internal/ui/

# Flux, built from the Go module proxy (tools/peers) for side-by-side
# benchmarks; cached outside the clone.
PEERS_CACHE ?= $(HOME)/.cache/converge/peers
FLUX_SOURCE := github.com/fluxcd/source-controller
FLUX_KUSTOMIZE := github.com/fluxcd/kustomize-controller

## peers: build Flux's source-controller and kustomize-controller (first run only; slow)
peers:
	@mkdir -p $(PEERS_CACHE)
	@for c in source-controller kustomize-controller; do \
	  v=$$($(GO) -C tools/peers/$$c list -m -f '{{.Version}}' github.com/fluxcd/$$c) || exit 1; \
	  bin=$(PEERS_CACHE)/$$c-$$v; \
	  if [ ! -x $$bin ]; then echo "building Flux $$c $$v (first run: several minutes)" >&2; \
	    GOFLAGS=-mod=mod $(GO) -C tools/peers/$$c build -o $$bin github.com/fluxcd/$$c || exit 1; fi; \
	  ln -sf $$bin $(PEERS_CACHE)/$$c; \
	done

## bench-peers: the same workloads with converge's agent and with Flux (one app of 1,000 objects; a fleet of 1,000 apps), alternating, 3 rounds
bench-peers: cluster-up build peers
	assets="$$($(LOCALCLUSTER) assets)"; \
	crds="$$($(GO) -C tools/peers/source-controller list -m -f '{{.Dir}}' $(FLUX_SOURCE))/config/crd/bases,$$($(GO) -C tools/peers/kustomize-controller list -m -f '{{.Dir}}' $(FLUX_KUSTOMIZE))/config/crd/bases"; \
	KUBEBUILDER_ASSETS="$$assets" CONVERGE_KUBECONFIG=$(KUBECONFIG_LOCAL) $(GO) run ./test/peers \
	  -converge bin/converge -source-controller $(PEERS_CACHE)/source-controller -kustomize-controller $(PEERS_CACHE)/kustomize-controller \
	  -flux-crds "$$crds" -out $(CLUSTER_DIR)/peers.json

CONTROLLER_GEN ?= $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0

## generate: deepcopy functions and CRD manifests from api/ (controller-gen)
generate:
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd

## verify-generated: fail when generated files are not current
verify-generated: generate
	@git diff --exit-code -- ':(glob)api/**/zz_generated.*.go' config/crd || { echo "generated files are stale: run make generate and commit"; exit 1; }
