#!/usr/bin/env bash
# setup.sh installs what statewire's build, demo and tests need on a fresh
# Debian 12 machine: the Debian packages that provide the lab's tools and the
# real peers of the end-to-end tests, and the Go modules. It installs only
# what is missing, so it is cheap to run before every build.
set -euo pipefail
cd "$(dirname "$0")/.."

# `setup.sh bpf`: only the XDP program's toolchain, for `make generate`
# (the compiled program is committed, so nothing else needs it).
if [ "${1:-}" = bpf ]; then
  declare -A bpf=([clang-14]=clang-14 [llvm-strip-14]=llvm-14)
  missing=()
  for cmd in "${!bpf[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${bpf[$cmd]}")
  done
  [ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
  [ -f /usr/include/linux/bpf.h ] || missing+=(linux-libc-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup: missing packages ${missing[*]}; run as root (or install them) first" >&2
      exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  exit 0
fi

# command -> Debian package that provides it.
declare -A need=(
  [ip]=iproute2
  [nft]=nftables
  # The kernel side of e2e's TestSpoofedIntoWrongPort loads the very
  # iptables-save file statewire reads.
  [iptables-legacy-restore]=iptables
  [conntrack]=conntrack
  # The peer of ctsync's interoperability tests (issue 14: state sync).
  [conntrackd]=conntrackd
  # The kernel side of e2e's TestIPSetAgainstKernel (issue 16: -m set).
  [ipset]=ipset
  [ping]=iputils-ping
  [tcpdump]=tcpdump
  [ethtool]=ethtool
  [socat]=socat
  # Real peers of the helper tests (e2e/alg). Their postinst may start the
  # services in the root namespace; the tests run their own copies inside the
  # lab's namespaces, which the root-namespace ones cannot reach.
  [vsftpd]=vsftpd
  [curl]=curl
  [in.tftpd]=tftpd-hpa
  [tftp]=tftp-hpa
  [ngircd]=ngircd
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages ${missing[*]}; run as root (or install them) first" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v go >/dev/null 2>&1 || { echo "setup: go is not on PATH (Go 1.26 expected at /usr/local/go/bin)" >&2; exit 1; }
go mod download
