# The README's two commands: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
TESTBINS_DIR ?= $(shell ./hack/testbins.sh --print-dir)
export TESTBINS_DIR
CLUSTER_DIR ?= $(CURDIR)/.cluster

.PHONY: bench all build test unit e2e testbins testbins-update crds check-crds lint cluster cluster-down demo demo-down manifests release

all: build

build:
	$(CARGO) build

## testbins: build etcd, kube-apiserver, kube-controller-manager, kubectl and helm (cached)
testbins:
	./hack/testbins.sh

## testbins-update: regenerate the wrapper go.mod files after a version change
testbins-update:
	./hack/testbins-update.sh

CHART := deploy/helm/groupdocs-token-operator

## crds: regenerate crds/ (and the chart's copy) from the Rust types
crds:
	$(CARGO) run -q -- crd > crds/groupdocs.cloud_groupdocscredentials.yaml
	cp crds/groupdocs.cloud_groupdocscredentials.yaml $(CHART)/files/

## manifests: render deploy/manifests/ from the Helm chart, for `kubectl apply` users
manifests: testbins
	$(TESTBINS_DIR)/helm template groupdocs-token-operator $(CHART) --namespace groupdocs-token-operator \
	  --set namespace.create=true > deploy/manifests/groupdocs-token-operator.yaml

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --workspace -- -D warnings
	./hack/hadolint.sh

## release: the release binary, built as the Dockerfile builds it
release:
	$(CARGO) build --release --locked --bin groupdocs-token-operator -p groupdocs-token-operator

## test: every test, the end-to-end ones against a real control plane included
test: testbins lint
	$(CARGO) test --workspace --no-fail-fast

## cluster: start a local control plane in the background; prints `export KUBECONFIG=...`
cluster: testbins
	$(CARGO) build -q -p testenv
	./target/debug/testenv up $(CLUSTER_DIR)

cluster-down:
	$(CARGO) build -q -p testenv
	./target/debug/testenv down $(CLUSTER_DIR)

## bench: the scale benchmark (not part of `make test`); results in bench/results/
bench: testbins release
	$(CARGO) run --release -p bench

## demo: control plane + development token server + operator + examples/
demo: testbins
	./hack/demo.sh

demo-down:
	./hack/demo.sh down
