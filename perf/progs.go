package perf

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// XDP actions, from enum xdp_action.
const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

// Offsets into struct xdp_md.
const (
	offData           = 0
	offDataEnd        = 4
	offIngressIfindex = 12
)

// Offsets into the test frame: Ethernet (14) + IPv4 without options (20) +
// UDP (8), then the payload that carries the magic and the timestamp.
const (
	offSport   = 34
	offDport   = 36
	offPayload = 42
	offMagic   = offPayload     // 4 bytes, Magic
	offStamp   = offPayload + 4 // 8 bytes, bpf_ktime_get_ns at the generator
	// minFrame is the shortest frame the programs accept: up to the end of
	// the timestamp.
	minFrame = offStamp + 8
)

// layout says where the generator and the sink find their fields in a
// template frame.
type layout struct {
	// sport and dport are where the flow's source and destination port
	// values go (swapped for frames of the reply direction).
	sport, dport int
	// csum is the offset of an L4 checksum to update for the new ports
	// (0: none, UDP sends checksum 0); csumBase is the template's value
	// there, in the 16-bit memory view. The update starts from csumBase,
	// never from the frame: live-frames mode recycles pages without
	// re-initialising them, so after the first batch the frame holds the
	// previous flow's ports and checksum.
	csum     int
	csumBase uint16
	// magic and stamp are the payload offsets of Magic and of the
	// timestamp (stamp 0: the frame has no room for one).
	magic, stamp int
}

// udpLayout is the layout of Frame.
var udpLayout = layout{sport: offSport, dport: offDport, magic: offMagic, stamp: offStamp}

// need returns the frame length the generator needs.
func (l layout) need(stamp bool) int {
	n := max(l.sport, l.dport) + 2
	if l.csum > 0 {
		n = max(n, l.csum+2)
	}
	if stamp && l.stamp > 0 {
		n = max(n, l.stamp+8)
	}
	return n
}

// Magic marks the harness's frames in the payload, so the sink counts only
// them and never a stray frame of the hosts.
const Magic = 0x53575046 // "SWPF" read as a little-endian u32 is what the sink compares

// HistBuckets is the number of 1 µs latency buckets at the sink; the last
// one collects everything at or above HistBuckets-1 µs.
const HistBuckets = 4096

// genProgram returns the generator: for every run it takes a per-CPU
// counter c, writes the flow index i = c mod flows into the UDP ports
// (sport = 0x8000|i&0x7fff, dport = 0x4000 + i>>15, so up to 2^29 distinct
// flows without touching the IPv4 checksum; the UDP checksum is 0, "none"),
// optionally stamps bpf_ktime_get_ns into the payload, and returns XDP_TX,
// which BPF_PROG_RUN in live-frames mode turns into a transmit on the
// ingress device named in the context.
//
// With lay.csum the L4 checksum is updated incrementally (RFC 1624 with
// the template's ports at 0): csum' = ~(~csumBase + sport + dport), in the
// same 16-bit memory view for every operand, which one's complement
// arithmetic allows.
//
// With imix (a UDP template of the largest IMIX size) the frame of run c
// is cut to IMIXSizes[class(c mod 12)] with bpf_xdp_adjust_tail, and the
// IPv4 total length, header checksum and UDP length are written for that
// size on every run, the 1500 B ones included: live-frames pages keep the
// bytes of their previous run, only the length is reset.
//
// With several cpus (GenConfig.CPUs) the program run on cpus[k] sends
// only the flows f with f mod len(cpus) == k, cycling through them with
// that CPU's counter: the flows split between the generator threads as
// RSS splits them between a NIC's queues.
func genProgram(counter *ebpf.Map, flows uint32, cpus []int, stamp bool, lay layout, imix *imixFields) (*ebpf.Program, error) {
	if flows == 0 {
		flows = 1
	}
	if lay.stamp == 0 {
		stamp = false
	}
	need := lay.need(stamp)
	if imix != nil {
		need = max(need, offUDPLen+2)
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// key 0 on the stack
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference("counter"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.DWord),
		asm.Mov.Reg(asm.R8, asm.R7),
		asm.Add.Imm(asm.R8, 1),
		asm.StoreMem(asm.R0, 0, asm.R8, asm.DWord),
	}
	if imix != nil {
		// m = c mod 12 on the stack; cut the frame to its class's size.
		insns = append(insns,
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.Mod.Imm(asm.R1, imixCycle),
			asm.StoreMem(asm.R10, -16, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R2, int32(imix.delta[0])),
			asm.JLT.Imm(asm.R1, imixWeights[0], "adjust"),
			asm.Mov.Imm(asm.R2, int32(imix.delta[1])),
			asm.JLT.Imm(asm.R1, imixWeights[0]+imixWeights[1], "adjust"),
			asm.Ja.Label("sized"),
			asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("adjust"),
			asm.FnXdpAdjustTail.Call(),
			asm.JNE.Imm(asm.R0, 0, "drop"),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("sized"),
		)
	}
	// r7 = flow index
	if n := len(cpus); n > 1 {
		// r8 = the flows of this CPU's part, r1 = the part; a CPU not
		// in the list (none: the threads are pinned) sends part 0's.
		insns = append(insns,
			asm.FnGetSmpProcessorId.Call(),
			asm.Mov.Imm(asm.R8, int32(max(partFlows(int(flows), 0, n), 1))),
			asm.Mov.Imm(asm.R1, 0),
		)
		for k := 1; k < n; k++ {
			next := fmt.Sprintf("part%d", k+1)
			if k == n-1 {
				next = "parted"
			}
			insns = append(insns,
				asm.JNE.Imm(asm.R0, int32(cpus[k]), next).WithSymbol(fmt.Sprintf("part%d", k)),
				asm.Mov.Imm(asm.R8, int32(max(partFlows(int(flows), k, n), 1))),
				asm.Mov.Imm(asm.R1, int32(k)),
				asm.Ja.Label("parted"),
			)
		}
		insns = append(insns,
			asm.Mod.Reg(asm.R7, asm.R8).WithSymbol("parted"),
			asm.Mul.Imm(asm.R7, int32(n)),
			asm.Add.Reg(asm.R7, asm.R1),
		)
	} else {
		insns = append(insns, asm.Mod.Imm(asm.R7, int32(flows)))
	}
	if stamp {
		insns = append(insns,
			asm.FnKtimeGetNs.Call(),
			asm.Mov.Reg(asm.R9, asm.R0),
		)
	}
	insns = append(insns,
		// bounds check after the helper calls (they clobber r1-r5)
		asm.LoadMem(asm.R2, asm.R6, offData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, offDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, int32(need)),
		asm.JGT.Reg(asm.R4, asm.R3, "drop"),
		// sport
		asm.Mov.Reg(asm.R8, asm.R7),
		asm.And.Imm(asm.R8, 0x7fff),
		asm.Or.Imm(asm.R8, 0x8000),
		asm.HostTo(asm.BE, asm.R8, asm.Half),
		asm.StoreMem(asm.R2, int16(lay.sport), asm.R8, asm.Half),
		// dport
		asm.Mov.Reg(asm.R5, asm.R7),
		asm.RSh.Imm(asm.R5, 15),
		asm.Add.Imm(asm.R5, 0x4000),
		asm.HostTo(asm.BE, asm.R5, asm.Half),
		asm.StoreMem(asm.R2, int16(lay.dport), asm.R5, asm.Half),
	)
	if imix != nil {
		insns = append(insns, asm.LoadMem(asm.R4, asm.R10, -16, asm.DWord))
		for i := range imixWeights {
			lbl := fmt.Sprintf("imix%d", i)
			next := fmt.Sprintf("imix%d", i+1)
			if i == len(imixWeights)-1 {
				next = "imixdone"
			}
			var bound int32
			for _, w := range imixWeights[:i+1] {
				bound += w
			}
			f := imix.fields[i]
			insns = append(insns,
				asm.JGE.Imm(asm.R4, bound, next).WithSymbol(lbl),
				asm.StoreImm(asm.R2, offIPLen, int64(f[0]), asm.Half),
				asm.StoreImm(asm.R2, offIPCsum, int64(f[1]), asm.Half),
				asm.StoreImm(asm.R2, offUDPLen, int64(f[2]), asm.Half),
				asm.Ja.Label("imixdone"),
			)
		}
		insns = append(insns, asm.Mov.Imm(asm.R4, 0).WithSymbol("imixdone"))
	}
	if lay.csum > 0 {
		insns = append(insns,
			asm.Mov.Imm(asm.R3, int32(lay.csumBase)),
			asm.Xor.Imm(asm.R3, 0xffff),
			asm.Add.Reg(asm.R3, asm.R8),
			asm.Add.Reg(asm.R3, asm.R5),
			asm.Mov.Reg(asm.R4, asm.R3),
			asm.RSh.Imm(asm.R4, 16),
			asm.And.Imm(asm.R3, 0xffff),
			asm.Add.Reg(asm.R3, asm.R4),
			asm.Mov.Reg(asm.R4, asm.R3),
			asm.RSh.Imm(asm.R4, 16),
			asm.And.Imm(asm.R3, 0xffff),
			asm.Add.Reg(asm.R3, asm.R4),
			asm.Xor.Imm(asm.R3, 0xffff),
			asm.StoreMem(asm.R2, int16(lay.csum), asm.R3, asm.Half),
		)
	}
	if stamp {
		insns = append(insns, asm.StoreMem(asm.R2, int16(lay.stamp), asm.R9, asm.DWord))
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R0, xdpTX),
		asm.Return(),
		asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("drop"),
		asm.Return(),
	)
	return loadXDP("swperf_gen", insns, map[string]*ebpf.Map{"counter": counter})
}

// sinkProgram returns the sink: frames with the magic increment per-CPU
// counter 0 (others counter 1) and are dropped. With hist, the delay since
// the generator's stamp goes into a per-CPU histogram of 1 µs buckets.
func sinkProgram(counter, hist *ebpf.Map, lay layout) (*ebpf.Program, error) {
	if lay.stamp == 0 {
		hist = nil
	}
	need := lay.magic + 4
	if hist != nil {
		need = max(need, lay.stamp+8)
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R7, 1), // counter key: 1 = other
		asm.Mov.Imm(asm.R8, 0), // stamp
		asm.LoadMem(asm.R2, asm.R6, offData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, offDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, int32(need)),
		asm.JGT.Reg(asm.R4, asm.R3, "count"),
		asm.LoadMem(asm.R4, asm.R2, int16(lay.magic), asm.Word),
		asm.JNE.Imm(asm.R4, Magic, "count"),
		asm.Mov.Imm(asm.R7, 0),
	}
	if hist != nil {
		insns = append(insns, asm.LoadMem(asm.R8, asm.R2, int16(lay.stamp), asm.DWord))
	}
	insns = append(insns,
		asm.StoreMem(asm.R10, -4, asm.R7, asm.Word).WithSymbol("count"),
		asm.LoadMapPtr(asm.R1, 0).WithReference("counter"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
	)
	if hist != nil {
		insns = append(insns,
			asm.JNE.Imm(asm.R7, 0, "drop"),
			asm.JEq.Imm(asm.R8, 0, "drop"), // not stamped
			asm.FnKtimeGetNs.Call(),
			asm.Sub.Reg(asm.R0, asm.R8),
			asm.Div.Imm(asm.R0, 1000),
			asm.JLT.Imm(asm.R0, HistBuckets-1, "bucket"),
			asm.Mov.Imm(asm.R0, HistBuckets-1),
			asm.StoreMem(asm.R10, -8, asm.R0, asm.Word).WithSymbol("bucket"),
			asm.LoadMapPtr(asm.R1, 0).WithReference("hist"),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -8),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "drop"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		)
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("drop"),
		asm.Return(),
	)
	return loadXDP("swperf_sink", insns, map[string]*ebpf.Map{"counter": counter, "hist": hist})
}

// redirectProgram returns bpf_redirect(ifindex, 0): every frame leaves by
// the other port, the kernel's XDP forwarding ceiling.
func redirectProgram(ifindex int) (*ebpf.Program, error) {
	return loadXDP("swperf_redir", asm.Instructions{
		asm.Mov.Imm(asm.R1, int32(ifindex)),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
	}, nil)
}

// passProgram returns XDP_PASS. Attached to a veth it turns on the veth's
// NAPI, which the generator's XDP transmit into its peer needs.
func passProgram() (*ebpf.Program, error) {
	return loadXDP("swperf_pass", asm.Instructions{
		asm.Mov.Imm(asm.R0, xdpPass),
		asm.Return(),
	}, nil)
}

func loadXDP(name string, insns asm.Instructions, maps map[string]*ebpf.Map) (*ebpf.Program, error) {
	for i := range insns {
		if ref := insns[i].Reference(); ref != "" && insns[i].IsLoadFromMap() {
			m := maps[ref]
			if m == nil {
				return nil, fmt.Errorf("perf: %s: no map %q", name, ref)
			}
			if err := insns[i].AssociateMap(m); err != nil {
				return nil, fmt.Errorf("perf: %s: associate %s: %w", name, ref, err)
			}
		}
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         name,
		Type:         ebpf.XDP,
		Instructions: insns,
		License:      "Dual MIT/GPL",
		// Frags support (BPF_F_XDP_HAS_FRAGS): a veth takes an XDP
		// program without it only up to an MTU of about 3500 (ERANGE
		// above, --mtu 9000), and multi-buffer frames reach it. Every
		// program here reads only the headers, in the first buffer
		// (data..data_end); for frames of one buffer nothing changes.
		Flags: unix.BPF_F_XDP_HAS_FRAGS,
	})
	if err != nil {
		return nil, fmt.Errorf("perf: load %s: %w", name, err)
	}
	return p, nil
}

// newPerCPUArray makes a per-CPU array of n u64 counters.
func newPerCPUArray(name string, n uint32) (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       name,
		Type:       ebpf.PerCPUArray,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: n,
	})
	if err != nil {
		return nil, fmt.Errorf("perf: create map %s: %w", name, err)
	}
	return m, nil
}

// sumPerCPU returns the sum over CPUs of entry key of a per-CPU u64 array.
func sumPerCPU(m *ebpf.Map, key uint32) (uint64, error) {
	var vals []uint64
	if err := m.Lookup(key, &vals); err != nil {
		return 0, fmt.Errorf("perf: read %v[%d]: %w", m, key, err)
	}
	var s uint64
	for _, v := range vals {
		s += v
	}
	return s, nil
}
