package offload

// The XDP program is compiled from offload.c by bpf2go; the generated Go
// (offload_bpfel.go) and object (offload_bpfel.o) are committed so that
// building statewire needs no clang. `make generate` reruns this with the
// compiler and flags of this machine (see the Makefile).
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type flow_key -type flow_value -type port_stats -type egress_dev bpf offload.c
