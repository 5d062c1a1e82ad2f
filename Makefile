# statewire build, demo and test entry points. Every target that needs
# system packages or Go modules runs scripts/setup.sh first, so each works on
# a fresh Debian 12 machine (as root).
GO      ?= go
PKGS    := ./...
TIMEOUT ?= 20m

.PHONY: all setup build demo test unit vet bench bench-baseline fuzz perf perf-quick soak clean generate

all: build

setup:
	@scripts/setup.sh

build: setup
	$(GO) build -o statewire ./cmd/statewire

# Rebuild the XDP fast path (offload/offload.c) and its bpf2go bindings.
# The outputs are committed, so only this target needs clang: setup.sh bpf
# installs it (clang-14, llvm, libbpf-dev) from Debian's packages.
BPF_CC    ?= clang-14
BPF_STRIP ?= llvm-strip-14
generate:
	@scripts/setup.sh bpf
	cd offload && BPF2GO_CC=$(BPF_CC) BPF2GO_STRIP=$(BPF_STRIP) \
		BPF2GO_CFLAGS="-O2 -g -Wall -Werror -I/usr/include/$$(uname -m)-linux-gnu" $(GO) generate ./

# The main job in the built-in lab: namespaces, veth pairs, the bridge,
# traffic through it, the live table and a throughput line, then clean-up.
demo: build
	./statewire demo

# Everything CI runs: vet, then the whole suite (end-to-end tests need root)
# under the race detector. RACE= runs it without (about half the time).
RACE    ?= -race
test: setup vet
	$(GO) test $(RACE) -count=1 -timeout $(TIMEOUT) $(PKGS)

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test -count=1 -short $(PKGS)

# Hot-path benchmarks, BENCHCOUNT runs each, compared by benchstat with the
# baseline committed in perf/bench-baseline.txt (recorded on this kind of
# machine by `make bench-baseline`; absolute figures drift between machines,
# so read the deltas of one machine against its own baseline).
BENCHSTAT  := $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
BENCHPKGS  := ./packet ./statemachine ./flowtable ./rules ./helpers ./bridge ./ring
BENCHCOUNT ?= 6
BENCHTIME  ?= 300ms
bench: setup
	mkdir -p perf/out
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) $(BENCHPKGS) | tee perf/out/bench.txt
	$(BENCHSTAT) perf/bench-baseline.txt perf/out/bench.txt

bench-baseline: setup
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) $(BENCHPKGS) | tee perf/bench-baseline.txt

# Every fuzz target for FUZZTIME each (go test -fuzz takes one target at a
# time). Crashers land in the package's testdata/fuzz and become tests.
FUZZTIME ?= 30s
FUZZ := packet:FuzzParse packet:FuzzParseDifferential statemachine:FuzzTrack rules:FuzzLoad ipset:FuzzParse \
	helpers:FuzzFTP helpers:FuzzIRC helpers:FuzzTFTP helpers:FuzzAmanda helpers:FuzzIn6pton \
	replay:FuzzReplay bridge:FuzzPipeline
fuzz:
	@for t in $(FUZZ); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 3s ./$$pkg || exit 1; \
	done

# The perf harness: statewire next to the Linux bridge, the bridge with
# conntrack and XDP_REDIRECT, in one run (root). perf-quick takes a minute.
perf: build
	mkdir -p perf/out
	./statewire perf --json perf/out/results.json --svg perf/out/results.svg

perf-quick: build
	mkdir -p perf/out
	./statewire perf --quick --json perf/out/results.json --svg perf/out/results.svg

# The soak test (build tag soak: never compiled by CI): SOAK_DURATION of
# mixed traffic and churn through the datapath (root); a sample every 10 s
# in SOAK_OUT (TSV), the summary next to it (.summary.txt).
SOAK_DURATION ?= 30m
SOAK_OUT      ?= $(CURDIR)/soak.tsv
soak: setup
	SOAK_DURATION=$(SOAK_DURATION) SOAK_OUT=$(SOAK_OUT) $(GO) test -tags soak -count=1 -run '^TestSoak$$' -timeout 0 -v ./e2e/soak

clean:
	rm -f statewire
