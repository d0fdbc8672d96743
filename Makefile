# The README's two commands: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
TESTBINS_DIR ?= $(shell ./hack/testbins.sh --print-dir)
export TESTBINS_DIR
CLUSTER_DIR ?= $(CURDIR)/.cluster

.PHONY: all build testbins host-deps testbins-update crds manifests lint deny release image image-check \
	check-docker-context test cluster cluster-down bench bench-large demo demo-down

all: build

build:
	$(CARGO) build

## testbins: build etcd, kube-apiserver, kube-controller-manager, kubectl, helm, and the
## node's kubelet, kube-scheduler and kube-proxy (cached by version outside the repository)
testbins:
	./hack/testbins.sh

## host-deps: the node's Debian packages (containerd, runc, CNI plugins, umoci, iptables), pinned
host-deps:
	./hack/host-deps.sh

## testbins-update: regenerate the wrapper go.mod files after a version change
testbins-update:
	./hack/testbins-update.sh

CHART := deploy/helm/groupdocs-token-operator

## crds: regenerate crds/ (and the chart's copy) from the Rust types
crds:
	$(CARGO) run -q -- crd | awk '/^---$$/ { n++; next } { print > (n ? "crds/groupdocs.cloud_clustergroupdocscredentials.yaml" : "crds/groupdocs.cloud_groupdocscredentials.yaml") }'
	cp crds/groupdocs.cloud_groupdocscredentials.yaml crds/groupdocs.cloud_clustergroupdocscredentials.yaml $(CHART)/files/

## manifests: render deploy/manifests/ from the Helm chart, for `kubectl apply` users
manifests: testbins
	$(TESTBINS_DIR)/helm template groupdocs-token-operator $(CHART) --namespace groupdocs-token-operator \
	  --set namespace.create=true > deploy/manifests/groupdocs-token-operator.yaml

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --workspace -- -D warnings
	./hack/hadolint.sh

## deny: licences, bans and sources of every dependency (cargo-deny, offline; see deny.toml)
deny:
	./hack/cargo-deny.sh

## release: the release binary, built from the Dockerfile's COPY paths alone, offline and --locked
release:
	$(CARGO) fetch --locked
	./hack/docker-context-check.sh --out target/release/groupdocs-token-operator

## image: OCI image tarballs in target/image/ (operator, pause, consumer), built with umoci
image: host-deps release
	./hack/image.sh

## image-check: import and run the image tarballs in a throwaway containerd
image-check: image
	./hack/image-check.sh

## check-docker-context: build the Dockerfile's COPY paths alone, as `docker build` would
check-docker-context:
	./hack/docker-context-check.sh

## test: every test, the end-to-end ones against a real control plane and node included
test: testbins lint deny image
	$(CARGO) test --workspace --no-fail-fast

## cluster: start a local control plane in the background; prints `export KUBECONFIG=...`.
## NODE=1 adds a node that runs pods from the images of `make image`.
cluster: testbins $(if $(filter 1,$(NODE)),image)
	$(CARGO) build -q -p testenv --bins
	./target/debug/testenv up $(CLUSTER_DIR) $(if $(filter 1,$(NODE)),--node)

cluster-down:
	$(CARGO) build -q -p testenv --bins
	./target/debug/testenv down $(CLUSTER_DIR)

## bench: the scale benchmark (not part of `make test`); results in bench/results/
bench: testbins release
	$(CARGO) run --release -p bench

## bench-large: `make bench` with N = 100,000 as well (BENCH_SIZES=100,1000,10000,100000, about
## an hour more on two cores; etcd's quota is 8 GiB for it) and per-credential series only for
## credentials that need attention (BENCH_CREDENTIAL_METRICS=unhealthy, the operator's
## --credential-metrics; set it empty for the operator's default). Either variable set in the
## environment wins.
bench-large: testbins release
	BENCH_SIZES="$${BENCH_SIZES:-100,1000,10000,100000}" \
	BENCH_CREDENTIAL_METRICS="$${BENCH_CREDENTIAL_METRICS-unhealthy}" \
	$(CARGO) run --release -p bench

## demo: control plane (+ node) + development token server + operator + examples/
demo: testbins host-deps
	./hack/demo.sh

demo-down:
	./hack/demo.sh down
