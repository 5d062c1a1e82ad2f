package perf

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/statewire/statewire/flowtable"
)

// The xdp-lookup device is XDP_REDIRECT after one BPF hash-map look-up per
// frame, keyed as statewire's fast path keys a flow, with one write into
// the entry found (a missing flow is inserted). It is the cheapest
// forwarding that keeps any per-flow state: its ratio to xdp-redirect at a
// flow count is what a flow-keyed fast path pays for the look-up alone
// (cache and TLB misses once the flows outgrow the caches), so statewire's
// ratio to it is what statewire's own work costs on top.
//
// Like statewire's flow map, the map has the flow table's default maximum
// entries (flowtable.DefaultMaxEntries) and its key is 40 bytes (two
// 16-byte addresses, two ports, protocol, family, VLAN; see offload.c's
// struct flow_key); the value is one 64-byte cache line (a packet counter
// written per frame, where statewire writes last-seen and counters).
const (
	lookupKeySize   = 40
	lookupValueSize = 64
)

// Offsets into the IPv4 test frames (UDP and TCP): protocol, addresses.
const (
	offIPProto = 23
	offIPSrc   = 26
	offIPDst   = 30
)

// newLookupMap makes the xdp-lookup device's flow map.
func newLookupMap() (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "swperf_flows",
		Type:       ebpf.Hash,
		KeySize:    lookupKeySize,
		ValueSize:  lookupValueSize,
		MaxEntries: uint32(flowtable.DefaultMaxEntries()),
	})
	if err != nil {
		return nil, fmt.Errorf("perf: create map swperf_flows: %w", err)
	}
	return m, nil
}

// lookupProgram returns the xdp-lookup program: build the key from the
// frame, look it up in flows (insert it when missing), add one to the
// entry's counter, bpf_redirect(ifindex, 0). Frames too short for the key
// are redirected without a look-up (the TCP handshake's frames are long
// enough; nothing else is sent).
func lookupProgram(flows *ebpf.Map, ifindex int) (*ebpf.Program, error) {
	const (
		key    = -lookupKeySize        // r10 offset of the key
		value  = key - lookupValueSize // r10 offset of a zero value to insert
		need   = offDport + 2          // bytes of the frame the key reads
		bpfAny = 0
	)
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, offData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, offDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, need),
		asm.JGT.Reg(asm.R4, asm.R3, "redirect"),
	}
	// Zero the key and the value (the verifier wants initialised stack).
	for off := value; off < 0; off += 4 {
		insns = append(insns, asm.StoreImm(asm.R10, int16(off), 0, asm.Word))
	}
	insns = append(insns,
		// Addresses (first 4 bytes of each 16-byte slot), ports, protocol
		// and family, as statewire's key has them.
		asm.LoadMem(asm.R4, asm.R2, offIPSrc, asm.Word),
		asm.StoreMem(asm.R10, key, asm.R4, asm.Word),
		asm.LoadMem(asm.R4, asm.R2, offIPDst, asm.Word),
		asm.StoreMem(asm.R10, key+16, asm.R4, asm.Word),
		asm.LoadMem(asm.R4, asm.R2, offSport, asm.Half),
		asm.StoreMem(asm.R10, key+32, asm.R4, asm.Half),
		asm.LoadMem(asm.R4, asm.R2, offDport, asm.Half),
		asm.StoreMem(asm.R10, key+34, asm.R4, asm.Half),
		asm.LoadMem(asm.R4, asm.R2, offIPProto, asm.Byte),
		asm.StoreMem(asm.R10, key+36, asm.R4, asm.Byte),
		asm.StoreImm(asm.R10, key+37, 4, asm.Byte),

		asm.LoadMapPtr(asm.R1, 0).WithReference("flows"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, key),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "insert"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Ja.Label("redirect"),

		asm.LoadMapPtr(asm.R1, 0).WithReference("flows").WithSymbol("insert"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, key),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, value),
		asm.Mov.Imm(asm.R4, bpfAny),
		asm.FnMapUpdateElem.Call(),

		asm.Mov.Imm(asm.R1, int32(ifindex)).WithSymbol("redirect"),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
	)
	return loadXDP("swperf_lookup", insns, map[string]*ebpf.Map{"flows": flows})
}
