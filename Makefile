# careplane — one Makefile for building, generating, testing and demoing.
# `make help` lists every target. Tools are pinned below and built into ./bin
# on first use; nothing is downloaded except Go modules from the module proxy.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
export GOTOOLCHAIN := local

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
LOCALBIN ?= $(ROOT)/bin
K8S_BIN ?= $(LOCALBIN)/k8s
STORAGE_BIN ?= $(LOCALBIN)/storage
export STORAGE_BIN
export PATH := $(LOCALBIN):$(K8S_BIN):$(PATH)

## Tool pins. Kubernetes, etcd, kwok and the storage sidecars are pinned in
## hack/tools/*/go.mod.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.2
HELM_VERSION ?= v4.3.1
GOLANGCI_LINT_VERSION ?= v2.15.0

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUSTOMIZE ?= $(LOCALBIN)/kustomize
HELM ?= $(LOCALBIN)/helm
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
KUBECTL ?= $(K8S_BIN)/kubectl

## The local kwok cluster used by e2e tests and the demo.
CLUSTER_NAME ?= careplane
E2E_CLUSTER_NAME ?= careplane-e2e
KWOK_WORKDIR ?= $(ROOT)/.kwok
export KWOK_WORKDIR

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS ?= -s -w -X github.com/careplane/careplane/internal/version.Version=$(VERSION)
IMG ?= careplane/manager:$(VERSION)

# Go test flags; e.g. make test-unit GOTESTFLAGS='-run TestDeployment -v'.
GOTESTFLAGS ?=

# How long `make test-fuzz` runs each fuzz target, and further flags for it;
# e.g. make test-fuzz FUZZTIME=5m FUZZFLAGS='-parallel 1'.
FUZZTIME ?= 10s
FUZZFLAGS ?=

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: controller-gen ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: manifests
manifests: controller-gen ## Generate the CRD (config/crd/bases) and the manager's RBAC (config/rbac) from the code's markers.
	$(CONTROLLER_GEN) rbac:roleName=careplane-manager crd paths="./api/...;./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	hack/chart-sync.sh
	@# The preflight's copy of what it checks (internal/preflight/expected_generated.go) follows the RBAC and guardrails.
	UPDATE=1 go test -count=1 -run '^TestExpectedIsGenerated$$' ./internal/preflight/ >/dev/null

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint on the operator's module, the test CSI driver's (hack/csi-driver) and the release tooling's (hack/release).
	$(GOLANGCI_LINT) run ./...
	cd hack/csi-driver && $(GOLANGCI_LINT) run ./...
	cd hack/release && $(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: generate manifests api-docs chart-docs ## Regenerate everything (code, CRD, RBAC, chart and its values table, API reference) and fail if the tree changed.
	@if [ -n "$$(git status --porcelain -- api config charts docs internal/preflight)" ]; then \
		echo "Generated files are out of date; run 'make generate manifests api-docs' and commit:"; \
		git status --porcelain -- api config charts docs internal/preflight; git diff --stat -- api config charts docs internal/preflight; exit 1; fi
	go mod tidy -diff
	cd hack/csi-driver && go mod tidy -diff
	cd hack/release && go mod tidy -diff

##@ Test

.PHONY: test
test: test-unit test-csi test-chart test-fuzz test-integration test-e2e ## Run every test: units, the test CSI driver, chart, fuzzing, envtest integration, and e2e on a fresh kwok cluster.

.PHONY: test-unit
test-unit: ## Unit tests: pure packages, no cluster.
	go test $(GOTESTFLAGS) $$(go list ./... | grep -v -e /test/e2e -e /controllers -e /hack/charttest)

# The driver is its own module (hack/csi-driver), so ./... of the root
# module does not reach it.
.PHONY: test-csi
test-csi: ## Test the test cluster's CSI driver (hack/csi-driver): unit tests and the CSI conformance suite, csi-sanity.
	cd hack/csi-driver && go test $(GOTESTFLAGS) ./...

# go test -fuzz takes one target of one package per run, so the targets are
# listed and run in turn. A short -fuzzminimizetime keeps a short run
# fuzzing rather than shrinking each new input for a minute (the default).
# A failing input is also printed, so that a CI log is enough to reproduce
# it: on a clean clone it is the one untracked file under testdata/fuzz.
# Go before 1.27 can fail a target with a bare "context deadline exceeded"
# as -fuzztime runs out, with no failing input (go.dev/issue/75804): that,
# and only that, is fuzzed once more.
.PHONY: test-fuzz
test-fuzz: ## Run each fuzz target of ./internal/... for FUZZTIME; a failing input is saved under the package's testdata/fuzz, where every go test runs it.
	go test -list '^Fuzz' ./internal/... | \
		awk '/^Fuzz/ { targets[n++] = $$1; next } /^ok/ { for (i = 0; i < n; i++) print $$2, targets[i]; n = 0 }' | \
		while read -r pkg target; do \
			for try in 1 2; do \
				echo "fuzzing $$target ($$pkg) for $(FUZZTIME)"; \
				out=$$(go test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $(FUZZFLAGS) "$$pkg" 2>&1) && rc=0 || rc=$$?; \
				printf '%s\n' "$$out"; \
				[ $$rc = 0 ] && break; \
				inputs=$$(git ls-files --others --exclude-standard -- '*/testdata/fuzz/*'); \
				if [ $$try = 1 ] && [ -z "$$inputs" ] && printf '%s\n' "$$out" | grep -qx '    context deadline exceeded'; then \
					echo "no failing input: the fuzzing coordinator's deadline race (go.dev/issue/75804); once more"; continue; \
				fi; \
				printf '%s\n' "$$inputs" | xargs -r tail -n +1; exit 1; \
			done; \
		done

.PHONY: test-integration
test-integration: cluster-binaries storage-binaries manifests ## Integration tests of the reconcilers against a real kube-apiserver and etcd (envtest).
	KUBEBUILDER_ASSETS=$(K8S_BIN) go test $(GOTESTFLAGS) ./controllers/...

.PHONY: test-e2e
test-e2e: cluster-binaries storage-binaries manifests ## End-to-end tests on a fresh kwok cluster, started and deleted by this target.
	hack/e2e.sh $(E2E_CLUSTER_NAME) go test -tags e2e -count=1 -timeout 30m $(GOTESTFLAGS) ./test/e2e/...

##@ Benchmark

BENCH_N ?= 500
# Simulated nodes for the benchmark, 250 pods a node: ~13 pods per
# environment at the peak of the fleet restore (careplane's, the evidence pods
# every fence keeps, the rebuilt primaries' and the baselines' copies) and
# headroom. With N/25 nodes the fleet restore ran out of room ("Too many
# pods") and never finished.
BENCH_NODES ?= $(shell echo $$(( $(BENCH_N) / 12 + 4 )))

.PHONY: bench
bench: cluster-binaries storage-binaries manifests ## Benchmark careplane with BENCH_N environments (default 500) beside kubectl and a minimal client; writes docs/benchmarks.md.
	BENCH_N=$(BENCH_N) NODES=$(BENCH_NODES) DISABLE_QPS_LIMITS=true SERVICE_CIDR=10.0.0.0/16 hack/e2e.sh careplane-bench \
		go test -tags 'e2e bench' -count=1 -timeout 180m -run '^TestBench$$' -v ./test/e2e/

.PHONY: bench-requests
bench-requests: cluster-binaries manifests ## What kube-apiserver and etcd spend on each kind of request careplane sends (envtest; writes docs/request-costs.md, ~2 min).
	REQUEST_COST_OUT=$(CURDIR)/docs/request-costs.md KUBEBUILDER_ASSETS=$(K8S_BIN) go test -tags bench -count=1 -timeout 20m -run '^TestRequestCost$$' -v ./test/requestcost/

.PHONY: bench-memory
bench-memory: cluster-binaries storage-binaries manifests ## Only the operator's memory per environment with BENCH_N environments, and a heap profile (pprof top).
	BENCH_N=$(BENCH_N) NODES=$(BENCH_NODES) DISABLE_QPS_LIMITS=true SERVICE_CIDR=10.0.0.0/16 hack/e2e.sh careplane-bench-memory \
		go test -tags 'e2e bench' -count=1 -timeout 60m -run '^TestBenchMemory$$' -v ./test/e2e/

##@ Cluster

.PHONY: cluster-binaries
cluster-binaries: ## Build kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok and kwokctl from the Go module proxy into bin/k8s (no-op when up to date).
	hack/cluster-binaries.sh $(K8S_BIN)

.PHONY: storage-binaries
storage-binaries: ## Build the storage control plane (snapshot-controller, csi-snapshotter, csi-provisioner), the test CSI driver and the VolumeSnapshot CRDs into bin/storage (no-op when up to date).
	hack/storage-binaries.sh $(STORAGE_BIN)

.PHONY: cluster-up
cluster-up: cluster-binaries storage-binaries ## Start the local kwok cluster CLUSTER_NAME with its storage control plane, and write its kubeconfig to .kwok/CLUSTER_NAME.kubeconfig.
	hack/cluster.sh up $(CLUSTER_NAME)

.PHONY: cluster-down
cluster-down: ## Stop and delete the local kwok cluster CLUSTER_NAME.
	hack/cluster.sh down $(CLUSTER_NAME)

##@ Build

.PHONY: build
build: ## Build the manager binary into bin/manager.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/manager ./cmd/manager

.PHONY: build-image-binary
build-image-binary: ## Build bin/linux/manager exactly as the Dockerfile does (static, linux), for machines without a Docker engine.
	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/linux/manager ./cmd/manager

.PHONY: docker-build
docker-build: ## Build the manager image IMG (needs a Docker engine; there is none on the project's machines).
	docker build --build-arg VERSION=$(VERSION) -t $(IMG) .

.PHONY: run
run: manifests ## Run the manager locally against the current kubeconfig.
	go run ./cmd/manager

# --- kubectl-careplane plugin (begin) ---------------------------------------
PLUGIN_INSTALL_DIR ?= $(shell go env GOPATH)/bin

.PHONY: build-plugin
build-plugin: ## Build the kubectl plugin into bin/kubectl-careplane.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/kubectl-careplane ./cmd/kubectl-careplane

.PHONY: install-plugin
install-plugin: build-plugin ## Install kubectl-careplane into PLUGIN_INSTALL_DIR (default $GOPATH/bin; it must be on PATH) so that `kubectl careplane` works.
	install -d $(PLUGIN_INSTALL_DIR)
	install -m 0755 $(LOCALBIN)/kubectl-careplane $(PLUGIN_INSTALL_DIR)/kubectl-careplane
# --- kubectl-careplane plugin (end) -----------------------------------------

##@ Demo

.PHONY: demo
demo: build build-plugin helm cluster-up ## Build everything, start the local cluster, install careplane with its chart and tell an incident with the plugin.
	hack/demo.sh $(CLUSTER_NAME)

##@ Tools

.PHONY: tools
tools: controller-gen kustomize helm golangci-lint ## Build every pinned tool into bin/.

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Build controller-gen.
$(CONTROLLER_GEN): Makefile
	$(call go-install,$@,sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Build kustomize.
$(KUSTOMIZE): Makefile
	$(call go-install,$@,sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

.PHONY: helm
helm: $(HELM) ## Build helm.
$(HELM): Makefile
	$(call go-install,$@,helm.sh/helm/v4/cmd/helm,$(HELM_VERSION))

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT) ## Build golangci-lint.
$(GOLANGCI_LINT): Makefile
	$(call go-install,$@,github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

# go-install builds package $(2) at version $(3) into file $(1), via a
# versioned name so that changing a pin rebuilds the tool.
define go-install
@[ -x "$(1)-$(3)" ] || { echo "building $(notdir $(1)) $(3)"; mkdir -p $(LOCALBIN); \
	tmp=$$(mktemp -d); GOBIN=$$tmp CGO_ENABLED=0 go install -trimpath $(2)@$(3) && mv $$tmp/* "$(1)-$(3)"; rm -rf $$tmp; }
@ln -sf "$(notdir $(1))-$(3)" "$(1)"
endef

# >>> Helm chart (charts/careplane) — begin
##@ Helm chart

.PHONY: chart-sync
chart-sync: ## Copy the generated CRD, manager RBAC rules and guardrail policies from config/ into charts/careplane (also run by manifests).
	hack/chart-sync.sh

# The chart's tests are Go (hack/charttest) and need only bin/helm.
.PHONY: test-chart
test-chart: helm ## Chart tests: helm lint --strict, golden renders, every value used and documented, schema strict and rejecting typos, chart in sync, production defaults.
	HELM=$(HELM) go test -count=1 $(GOTESTFLAGS) ./hack/charttest/

.PHONY: chart-golden
chart-golden: helm ## Rewrite the chart's golden files (charts/careplane/testdata/*.golden.yaml) after an intended change.
	UPDATE=1 HELM=$(HELM) go test -count=1 -run '^TestGolden$$' ./hack/charttest/

.PHONY: chart-docs
chart-docs: ## Write the values table of charts/careplane/README.md from the '# --' comments of values.yaml (make verify fails on drift).
	go run ./hack/chart-docs charts/careplane
# test/e2e/helm_test.go installs the chart with bin/helm.
test-e2e: helm
# <<< Helm chart (charts/careplane) — end

# >>> API reference docs (docs/api-reference.md) — begin
##@ Documentation

CRD_REF_DOCS_VERSION ?= v0.3.0
CRD_REF_DOCS ?= $(LOCALBIN)/crd-ref-docs

.PHONY: api-docs
api-docs: crd-ref-docs ## Regenerate docs/api-reference.md from the Go types in api/v1alpha1 (crd-ref-docs).
	hack/gen-api-docs.sh $(CRD_REF_DOCS)

.PHONY: crd-ref-docs
crd-ref-docs: $(CRD_REF_DOCS) ## Build crd-ref-docs.
$(CRD_REF_DOCS): Makefile
	$(call go-install,$@,github.com/elastic/crd-ref-docs,$(CRD_REF_DOCS_VERSION))
# <<< API reference docs (docs/api-reference.md) — end

# >>> Release artefacts (make release-snapshot) — begin
##@ Release

# Tools only a release needs: built on first use by release-snapshot and
# test-release, never by `make test` or `make tools`.
KO_VERSION ?= v0.19.1
GORELEASER_VERSION ?= v2.17.0
KREW_VERSION ?= v0.4.3
KO ?= $(LOCALBIN)/ko
GORELEASER ?= $(LOCALBIN)/goreleaser
KREW ?= $(LOCALBIN)/krew
VALIDATE_KREW_MANIFEST ?= $(LOCALBIN)/validate-krew-manifest

DIST ?= $(ROOT)/dist
# One version on every artefact (the binaries' stamp, the image tag, the
# chart's version and appVersion, the plugin archives and krew manifest):
# VERSION when it is a tag vX.Y.Z[-pre], else v0.0.0-snapshot.g<VERSION>
# (hack/release/version.sh). Helm and OCI need SemVer.
RELEASE_VERSION := $(shell hack/release/version.sh $(VERSION))
# Files in the archives and the image are dated by the commit, not the build.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
release-snapshot release-artefacts test-release: VERSION = $(RELEASE_VERSION)

.PHONY: release-snapshot
release-snapshot: release-artefacts test-release ## Build the release artefacts into dist/ without Docker or publishing (manager image as a multi-arch OCI layout with SBOMs, plugin archives with checksums and a krew manifest, chart package), then check them.

.PHONY: release-artefacts
release-artefacts: ko goreleaser helm build-image-binary ## Only build the release artefacts into dist/ (see release-snapshot).
	rm -rf $(DIST)
	LDFLAGS="$(LDFLAGS)" go -C hack/release run ./cmd/build-image -ko $(KO) -root $(ROOT) -out $(DIST) \
		-version $(VERSION) -source-date-epoch $(SOURCE_DATE_EPOCH)
	VERSION=$(VERSION) LDFLAGS="$(LDFLAGS)" $(GORELEASER) release --snapshot --clean --skip=publish
	$(HELM) package charts/careplane --version $(VERSION) --app-version $(VERSION) -d $(DIST)/chart
	@du -sh $(DIST)/image $(DIST)/*.oci.tar $(DIST)/plugin/*.tar.gz $(DIST)/chart/*.tgz

.PHONY: test-release
test-release: helm krew validate-krew-manifest ## Check the artefacts in dist/: the image layout's platforms, user, entrypoint, binary and SBOMs; the plugin archives, checksums and krew manifest (krew installs each); the chart's stamped version.
	cd hack/release && DIST=$(DIST) VERSION=$(VERSION) IMAGE_BINARY=$(LOCALBIN)/linux/manager \
		HELM=$(HELM) KREW=$(KREW) VALIDATE_KREW_MANIFEST=$(VALIDATE_KREW_MANIFEST) \
		go test -count=1 $(GOTESTFLAGS) ./...

.PHONY: ko
ko: $(KO) ## Build ko (release only).
$(KO): Makefile
	$(call go-install,$@,github.com/google/ko,$(KO_VERSION))

.PHONY: goreleaser
goreleaser: $(GORELEASER) ## Build goreleaser (release only).
$(GORELEASER): Makefile
	$(call go-install,$@,github.com/goreleaser/goreleaser/v2,$(GORELEASER_VERSION))

.PHONY: krew
krew: $(KREW) ## Build krew (test-release only).
$(KREW): Makefile
	$(call go-install,$@,sigs.k8s.io/krew/cmd/krew,$(KREW_VERSION))

.PHONY: validate-krew-manifest
validate-krew-manifest: $(VALIDATE_KREW_MANIFEST) ## Build krew's manifest validator (test-release only).
$(VALIDATE_KREW_MANIFEST): Makefile
	$(call go-install,$@,sigs.k8s.io/krew/cmd/validate-krew-manifest,$(KREW_VERSION))
# <<< Release artefacts (make release-snapshot) — end

# >>> Alert rules (charts/careplane/files/prometheus-rules.yaml) — begin
##@ Alerts

# promtool from the Prometheus module on the Go module proxy, pinned.
PROMETHEUS_VERSION ?= v0.316.0
PROMTOOL ?= $(LOCALBIN)/promtool

.PHONY: test-rules
test-rules: promtool ## Check careplane's alert rules and run their promtool tests (test/prometheus).
	$(PROMTOOL) check rules charts/careplane/files/prometheus-rules.yaml
	$(PROMTOOL) test rules test/prometheus/*.yaml

# The alert scenarios of the e2e suite, with the rules evaluated over what
# the manager exported (make test-e2e runs them too, evaluating the rules
# only when bin/promtool exists: its cold build is long).
.PHONY: test-alerts
test-alerts: promtool cluster-binaries storage-binaries manifests ## Cause each alert on a fresh kwok cluster and evaluate the rules (promtool) over the manager's series.
	REQUIRE_PROMTOOL=1 PROMTOOL=$(PROMTOOL) hack/e2e.sh $(E2E_CLUSTER_NAME) go test -tags e2e -count=1 -timeout 30m -run '^TestAlertSeries$$' -v ./test/e2e/...

.PHONY: promtool
promtool: $(PROMTOOL) ## Build promtool.
$(PROMTOOL): Makefile
	$(call go-install,$@,github.com/prometheus/prometheus/cmd/promtool,$(PROMETHEUS_VERSION))
# <<< Alert rules — end
