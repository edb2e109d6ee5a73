# The two commands a new user needs are `make run` and `make test`; see README.md.

GO      ?= go
BIN     := $(CURDIR)/bin
PONTOON := $(BIN)/pontoon
# static_build keeps containerd's client from importing Go's plugin
# package, which makes the linker export every symbol of the binary
# dynamically: 29 MB more binary and 7 MB more resident memory for a
# feature Pontoon does not use (containerd's own static builds set it).
export GOFLAGS := -tags=static_build $(GOFLAGS)

# Debian packages, each by the command or file that shows it is installed.
# Installed once, only when missing. A node runs containerd and runc, the
# CNI plugins (portmap calls iptables), and makes its images from
# busybox-static.
NODE_PACKAGES  := containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
                  /bin/busybox:busybox-static iptables:iptables
TEST_PACKAGES  := $(NODE_PACKAGES)
BENCH_PACKAGES := etcd:etcd-server $(NODE_PACKAGES)
# The conformance images' shell (busybox's runs its own applets first).
CONFORMANCE_PACKAGES := /bin/bash-static:bash-static $(NODE_PACKAGES)

.PHONY: run build test unit fuzz e2e bench conformance deps-node deps-test deps-bench deps-conformance fmt vet clean

build:
	$(GO) build -o $(PONTOON) ./cmd/pontoon

# One server and a node with its data under ./.pontoon; Ctrl-C stops it
# (its pods keep running), `./bin/pontoon dev --cleanup` removes them.
run: deps-node build
	$(PONTOON) dev

test: deps-test vet build
	$(GO) test -race -count=1 ./...
	$(MAKE) fuzz
	$(MAKE) e2e

# A short run of the store's fuzz test: any log entry is refused or applies
# alike on two stores, and none panics.
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzApply -fuzztime=15s ./fsm

unit:
	$(GO) test -race -count=1 ./...

# The end-to-end suite drives real server processes built with the race
# detector, so a data race under chaos fails the run.
e2e:
	$(GO) build -race -o $(BIN)/pontoon-race ./cmd/pontoon
	cd test && PONTOON_BIN=$(BIN)/pontoon-race $(GO) test -race -count=1 -timeout 20m ./...

bench: deps-bench build
	cd test && PONTOON_BIN=$(PONTOON) $(GO) run ./bench -out $(CURDIR)/docs/benchmarks.md

# Kubernetes' own conformance tests against `pontoon dev`, with the suite
# ../shared/conformance/build.sh built: [sig-node]'s by default (docs/node.md,
# "Conformance"); FOCUS picks others, as
# `make conformance FOCUS='\[sig-network\].*\[Conformance\]'` (docs/network.md).
FOCUS ?= \[sig-node\].*\[Conformance\]
conformance: deps-conformance build
	cd test && PONTOON_BIN=$(PONTOON) $(GO) run ./conformance -focus '$(FOCUS)' -log $(CURDIR)/conformance.log

vet:
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || (echo "gofmt: the files above need formatting" >&2; exit 1)
	$(GO) vet ./...
	cd test && $(GO) vet ./...

deps-node:
	@./deploy/install-packages.sh $(NODE_PACKAGES)

deps-test:
	@./deploy/install-packages.sh $(TEST_PACKAGES)

deps-bench:
	@./deploy/install-packages.sh $(BENCH_PACKAGES)

deps-conformance:
	@./deploy/install-packages.sh $(CONFORMANCE_PACKAGES)

# The dev node's pods, mounts and cgroups go before its data dir.
clean:
	if [ -d .pontoon ] && [ -x $(PONTOON) ]; then $(PONTOON) dev --cleanup; fi
	rm -rf $(BIN) .pontoon
