# conntrace_exporter. `make help` lists the targets.
# sudo resets PATH: find Go where scripts/install-deps.sh expects it too.
export PATH := $(PATH):/usr/local/go/bin
GO        ?= go
BINARY    ?= conntrace_exporter
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
PROMVER    = github.com/prometheus/common/version
LDFLAGS   ?= -X $(PROMVER).Version=$(VERSION) -X $(PROMVER).Revision=$(REVISION) -X $(PROMVER).Branch=$(BRANCH)
ARGS      ?=

.PHONY: help build run generate check-generate mixin test test-kernel test-kernels test-e2e bench lint clean

help:
	@echo "build           build ./$(BINARY) (static, CGO_ENABLED=0)"
	@echo "run             build and run it as root: make run ARGS='--log.level=debug'"
	@echo "generate        compile bpf/conntrace.c with clang and regenerate the Go bindings (bpf2go)"
	@echo "check-generate  regenerate and fail if the committed objects differ"
	@echo "mixin           render mixin/ (jsonnet) into mixin/out and format the jsonnet"
	@echo "test            lint, check-generate, every test (kernel and e2e tests need root), then test-kernels"
	@echo "test-kernels    the kernel matrix: start-up and kernel tests on the host and on Debian's 5.10, 6.1, 6.12 and newest kernels under QEMU"
	@echo "bench           Go benchmarks and the scripts of BENCHMARKS.md (overhead, each program's cost, a scrape at 100,000 connections)"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BINARY) .

run: build
	./$(BINARY) $(ARGS)

generate:
	cd bpf && $(GO) generate ./...

# The generated objects are committed; this proves they come from the
# committed C sources (clang from Debian bookworm, see .ci/run).
check-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: generated files differ from the committed ones: run 'make generate' and commit"; exit 1; }

mixin:
	$(GO) test -count=1 ./mixin -run 'TestRenderedUpToDate|TestJsonnetFormattedAndLinted' -update

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	@# The BPF object is built per architecture (the kprobe fallback reads registers): both must compile.
	GOARCH=arm64 CGO_ENABLED=0 $(GO) build -o /dev/null .

# Kernel and end-to-end tests load the real programs: run as root. Without
# root they skip with a message, except under CI=true where they fail.
test-kernel:
	$(GO) test -count=1 -v -run 'Exact|Retransmits|RTTHistogramMatches|ShortLived|ClientsInterleaved|Preexisting|LoadAttach' ./tracer/

test-e2e:
	$(GO) test -count=1 -v ./e2e/

# The kernel matrix (scripts/kernels): downloads Debian's kernels, boots each
# under QEMU (TCG) and runs the exporter and the kernel tests of
# scripts/kernels/tests.list in it; one table of results at the end.
# KERNELS="host 6.1" chooses some.
test-kernels:
	scripts/kernels/run.sh

test: lint check-generate
	# -p 1: kernel tests of different packages would see each other's traffic.
	$(GO) test -race -count=1 -p 1 ./...
	$(MAKE) test-kernels

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./filter/ ./netstate/ ./tracer/ ./collector/
	./scripts/bench-overhead.sh
	./scripts/bench-programs.sh
	./scripts/bench-scale.sh

clean:
	rm -f $(BINARY)
