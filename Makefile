# skep — build, test, generate, lab, bench.
GO       ?= go
BIN      ?= bin
GOFLAGS  ?=
# The whole suite stays under ~20 minutes on 2 cores.
TEST_TIMEOUT ?= 25m
# Go-installed tools the tests drive (cnitool) live in GOPATH/bin.
export PATH := $(PATH):$(shell $(GO) env GOPATH)/bin

.PHONY: all build test unit bpf bpf-check openapi openapi-check lab lab-down bench fmt vet clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# The one test command: unit, privileged (as root) and e2e tests.
test: build vet bpf-check openapi-check
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# Unprivileged unit tests only.
unit:
	$(GO) test -count=1 -short ./...

vet:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet ./...

# Regenerate the eBPF objects and Go bindings (needs clang); they are committed.
bpf:
	$(GO) generate ./bpf/...

# Fails when the committed objects differ from what the sources compile to.
bpf-check: bpf
	@git diff --exit-code --stat -- bpf/ || { echo "bpf objects are stale: run make bpf and commit"; exit 1; }

# Regenerate the OpenAPI definitions of the served kinds (openapi-gen over
# k8s.io/api, as Kubernetes generates its own); they are committed.
openapi:
	$(GO) generate ./controlplane/apiserver/openapi/

openapi-check: openapi
	@git diff --exit-code --stat -- controlplane/apiserver/openapi/ || { echo "openapi definitions are stale: run make openapi and commit"; exit 1; }

# The lab: a cluster in network namespaces on this machine, and its demo.
lab: build
	$(BIN)/skep lab up
	$(BIN)/skep lab demo

lab-down: build
	$(BIN)/skep lab down

# Every performance figure the issues ask for, each a ratio against a baseline
# measured in the same run: data path vs direct and kube-proxy-shaped iptables,
# store and API vs bbolt-per-write and etcd, skep-cni vs bridge+host-local,
# proxy programming and event-to-datapath latency.
bench: build
	$(BIN)/skep bench datapath --out $(BIN)/bench-datapath.json
	$(GO) test -run '^$$' -bench . -benchtime 1x ./controlplane/... ./tools/apibench/ ./proxy/ ./bpf/
	$(GO) test -run '^$$' -bench AddDel -benchtime 300x ./cni/

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
