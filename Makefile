# statewire build, demo and test entry points. Every target that needs
# system packages or Go modules runs scripts/setup.sh first, so each works on
# a fresh Debian 12 machine (as root).
GO      ?= go
PKGS    := ./...
TIMEOUT ?= 20m

.PHONY: all setup build demo test unit vet bench fuzz perf perf-quick clean

all: build

setup:
	@scripts/setup.sh

build: setup
	$(GO) build -o statewire ./cmd/statewire

# The main job in the built-in lab: namespaces, veth pairs, the bridge,
# traffic through it, the live table and a throughput line, then clean-up.
demo: build
	./statewire demo

# Everything CI runs: vet, the whole suite (end-to-end tests need root), and
# the race detector over the same suite.
test: setup vet
	$(GO) test -count=1 -timeout $(TIMEOUT) $(PKGS)

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test -count=1 -short $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1s -count 1 $(PKGS)

# Every fuzz target for FUZZTIME each (go test -fuzz takes one target at a
# time). Crashers land in the package's testdata/fuzz and become tests.
FUZZTIME ?= 30s
FUZZ := packet:FuzzParse statemachine:FuzzTrack rules:FuzzLoad \
	helpers:FuzzFTP helpers:FuzzIRC helpers:FuzzTFTP helpers:FuzzAmanda helpers:FuzzIn6pton
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

clean:
	rm -f statewire
