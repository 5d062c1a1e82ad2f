# statewire build, demo and test entry points. Every target that needs
# system packages or Go modules runs scripts/setup.sh first, so each works on
# a fresh Debian 12 machine (as root).
GO      ?= go
PKGS    := ./...
TIMEOUT ?= 20m

.PHONY: all setup build demo test unit vet bench fuzz clean

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

clean:
	rm -f statewire
