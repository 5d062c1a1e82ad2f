package perf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/statewire/statewire/lab"
)

// The endpoints of the CPS mode are two XDP programs, no socket: the
// server program on the right host's veth answers every frame of the
// session with the next one (XDP_TX), the client program on the left
// host's veth does the same and is also the generator: BPF_PROG_RUN in
// live-frames mode runs it on a SYN template, and it writes a fresh
// 5-tuple from a per-CPU counter into it, as the flood generator does. A
// frame costs an endpoint one XDP run and one veth transmit, no copy to
// user space and no wake-up, which puts the endpoints' ceiling far above
// the devices' (the AF_XDP endpoints before them capped CPS at 56 000 to
// 130 000 conn/s, under the devices). Every frame an endpoint takes is
// counted per step in its per-CPU statistics; the device's counters are
// never read.
//
// The answering frame is written whole from the template of its step
// (cpsBuildPorts with ports 0, compiled into the program as immediates),
// then the ports are copied from the frame answered (swapped) and added to
// the template's TCP checksum (RFC 1624, as genProgram): nothing of the
// arriving frame but its ports survives, so a device that rewrote a byte
// elsewhere cannot leak it into the next step, and the program never
// parses beyond 48 bytes. A frame shorter than 60 bytes (a kernel bridge
// with br_netfilter trims the Ethernet padding to the IPv4 length) is
// grown with bpf_xdp_adjust_tail first.

// Indexes into an endpoint's statistics (a per-CPU array of u64).
const (
	cpsStatRX    = 0  // + step: frames of that step received
	cpsStatTX    = 8  // + step: frames of that step sent (XDP_TX)
	cpsStatStray = 16 // IPv4 TCP frames from the peer that are no step
	cpsStatTail  = 17 // frames dropped: too short and could not grow
	cpsStatGen   = 18 // the generator's connection counter (client)
	cpsStatN     = 19
)

// cpsProgram returns the client's (client true) or the server's program
// for the veth with index ifindex. Frames that are not IPv4 TCP from the
// peer (the hosts' ARP, IPv6 neighbour discovery) pass to the host's
// stack. The client's program run with another ingress device (BPF_PROG_RUN
// with the context naming the namespace's loopback) is the generator: it
// writes the SYN of the next connection and redirects it out of ifindex.
func cpsProgram(stats *ebpf.Map, a *cpsAddrs, client bool, ifindex int) (*ebpf.Program, error) {
	self, peer := a.client.As4(), a.server.As4()
	if !client {
		self, peer = peer, self
	}
	n := 0
	count := func(key int) asm.Instructions {
		n++
		after := fmt.Sprintf("counted%d", n)
		return asm.Instructions{
			asm.StoreImm(asm.R10, -4, int64(key), asm.Word),
			asm.LoadMapPtr(asm.R1, 0).WithReference("stats"),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, after),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(after),
		}
	}
	mem32 := func(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) }
	seqMem := func(step int) int32 {
		isn := uint32(cpsISNC)
		if cpsScript[step].fromServer {
			isn = cpsISNS
		}
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], isn+cpsScript[step].seq)
		return mem32(b[:])
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
	}
	if client {
		// The generator: a run that did not come in by the veth is
		// BPF_PROG_RUN's (whose context names another device). Not the
		// frame's content: live-frames mode recycles its pages as they
		// come back, holding whatever the session last wrote into them
		// (the final ACK, after a round trip through the endpoints).
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.R6, offIngressIfindex, asm.Word),
			asm.JNE.Imm32(asm.R1, int32(ifindex), "generate"),
		)
	}
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R6, offData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, offDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 48),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R4, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R4, 0x0008, "pass"), // 0x0800 in the memory view
		asm.LoadMem(asm.R4, asm.R2, 23, asm.Byte),
		asm.JNE.Imm(asm.R4, 6, "pass"),
		asm.LoadMem(asm.R7, asm.R2, 34, asm.Word), // both ports, memory view
		asm.LoadMem(asm.R8, asm.R2, 38, asm.Word), // sequence number, memory view
		asm.LoadMem(asm.R9, asm.R2, 47, asm.Byte),
		asm.And.Imm(asm.R9, 0x3f),
		asm.LoadMem(asm.R4, asm.R2, 26, asm.Word), // source address
	)
	insns = append(insns, asm.JNE.Imm32(asm.R4, mem32(peer[:]), "pass"))
	// Which step arrived: flags and sequence number.
	for j := range cpsSteps {
		if cpsScript[j].fromServer != client {
			continue
		}
		next := fmt.Sprintf("not%d", j)
		insns = append(insns,
			asm.JNE.Imm32(asm.R9, int32(cpsScript[j].flags), next),
			asm.JEq.Imm32(asm.R8, seqMem(j), fmt.Sprintf("got%d", j)),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(next),
		)
	}
	insns = append(insns, count(cpsStatStray)...)
	insns = append(insns, asm.Ja.Label("drop"))
	for j := range cpsSteps {
		if cpsScript[j].fromServer != client {
			continue
		}
		c := count(cpsStatRX + j)
		c[0] = c[0].WithSymbol(fmt.Sprintf("got%d", j))
		insns = append(insns, c...)
		if j == cpsSteps-1 {
			insns = append(insns, asm.Ja.Label("drop"))
			continue
		}
		// The answer goes back with the ports swapped.
		insns = append(insns,
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.RSh.Imm(asm.R1, 16),
			asm.LSh.Imm(asm.R7, 16),
			asm.Or.Reg(asm.R7, asm.R1),
			asm.Mov.Reg32(asm.R7, asm.R7),
			asm.Ja.Label(fmt.Sprintf("reply%d", j+1)),
		)
	}
	if client {
		insns = append(insns,
			asm.StoreImm(asm.R10, -4, cpsStatGen, asm.Word).WithSymbol("generate"),
			asm.LoadMapPtr(asm.R1, 0).WithReference("stats"),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "drop"),
			asm.LoadMem(asm.R7, asm.R0, 0, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.And.Imm(asm.R7, cpsTuples-1),
			// client port 0x8000|k&0x7fff, server port 0x4000+k>>15,
			// big-endian, side by side in r7 as the frame holds them.
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.And.Imm(asm.R1, 0x7fff),
			asm.Or.Imm(asm.R1, 0x8000),
			asm.HostTo(asm.BE, asm.R1, asm.Half),
			asm.RSh.Imm(asm.R7, 15),
			asm.Add.Imm(asm.R7, 0x4000),
			asm.HostTo(asm.BE, asm.R7, asm.Half),
			asm.LSh.Imm(asm.R7, 16),
			asm.Or.Reg(asm.R7, asm.R1),
			asm.Ja.Label("reply0"),
		)
	}
	tmpl := make([]byte, cpsFrameLen)
	for r := range cpsSteps {
		if cpsScript[r].fromServer == client {
			continue
		}
		cpsBuildPorts(tmpl, a, 0, 0, r)
		base := binary.LittleEndian.Uint16(tmpl[50:])
		write := fmt.Sprintf("write%d", r)
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.R6, offData, asm.Word).WithSymbol(fmt.Sprintf("reply%d", r)),
			asm.LoadMem(asm.R3, asm.R6, offDataEnd, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, cpsFrameLen),
			asm.JLE.Reg(asm.R4, asm.R3, write),
			// Shorter than a session frame: grow it (to 60 bytes from
			// the 54 a trimmed frame has; longer frames keep padding).
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R2, cpsFrameLen-54),
			asm.FnXdpAdjustTail.Call(),
			asm.JNE.Imm(asm.R0, 0, "tail"),
			asm.LoadMem(asm.R2, asm.R6, offData, asm.Word),
			asm.LoadMem(asm.R3, asm.R6, offDataEnd, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, cpsFrameLen),
			asm.JGT.Reg(asm.R4, asm.R3, "tail"),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(write),
		)
		for off := 0; off+8 <= cpsFrameLen; off += 8 {
			insns = append(insns,
				asm.LoadImm(asm.R1, int64(binary.LittleEndian.Uint64(tmpl[off:])), asm.DWord),
				asm.StoreMem(asm.R2, int16(off), asm.R1, asm.DWord),
			)
		}
		insns = append(insns,
			asm.StoreImm(asm.R2, 56, int64(binary.LittleEndian.Uint32(tmpl[56:])), asm.Word),
			asm.StoreMem(asm.R2, 34, asm.R7, asm.Word),
			// TCP checksum: ~(~base + both ports), folded, in the
			// memory view.
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.And.Imm(asm.R1, 0xffff),
			asm.Mov.Reg(asm.R3, asm.R7),
			asm.RSh.Imm(asm.R3, 16),
			asm.Add.Reg(asm.R1, asm.R3),
			asm.Add.Imm(asm.R1, int32(^base)),
			asm.Mov.Reg(asm.R3, asm.R1),
			asm.RSh.Imm(asm.R3, 16),
			asm.And.Imm(asm.R1, 0xffff),
			asm.Add.Reg(asm.R1, asm.R3),
			asm.Mov.Reg(asm.R3, asm.R1),
			asm.RSh.Imm(asm.R3, 16),
			asm.And.Imm(asm.R1, 0xffff),
			asm.Add.Reg(asm.R1, asm.R3),
			asm.Xor.Imm(asm.R1, 0xffff),
			asm.StoreMem(asm.R2, 50, asm.R1, asm.Half),
		)
		insns = append(insns, count(cpsStatTX+r)...)
		if r == 0 {
			// The generator's SYN leaves by the veth: bpf_redirect,
			// as its run came in by another device.
			insns = append(insns,
				asm.Mov.Imm(asm.R1, int32(ifindex)),
				asm.Mov.Imm(asm.R2, 0),
				asm.FnRedirect.Call(),
				asm.Return(),
			)
			continue
		}
		insns = append(insns,
			asm.Mov.Imm(asm.R0, xdpTX),
			asm.Return(),
		)
	}
	c := count(cpsStatTail)
	c[0] = c[0].WithSymbol("tail")
	insns = append(insns, c...)
	insns = append(insns,
		asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("drop"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
		asm.Return(),
	)
	name := "swperf_cpss"
	if client {
		name = "swperf_cpsc"
	}
	return loadXDP(name, insns, map[string]*ebpf.Map{"stats": stats})
}

// cpsEnd is one endpoint: its program and statistics, attached to a veth.
type cpsEnd struct {
	prog  *ebpf.Program
	stats *ebpf.Map
	link  link.Link
}

func newCPSEnd(a *cpsAddrs, client bool, ns, ifname string) (*cpsEnd, error) {
	e := &cpsEnd{}
	var ifindex int
	err := lab.Do(ns, func() (err error) {
		ifindex, err = ifindexOf(ifname)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("perf: CPS endpoint: %w", err)
	}
	if e.stats, err = newPerCPUArray("swperf_cps", cpsStatN); err != nil {
		return nil, err
	}
	if e.prog, err = cpsProgram(e.stats, a, client, ifindex); err != nil {
		e.close()
		return nil, err
	}
	if e.link, err = attachXDP(ns, ifname, e.prog); err != nil {
		e.close()
		return nil, fmt.Errorf("perf: CPS endpoint: %w", err)
	}
	return e, nil
}

func (e *cpsEnd) close() error {
	var errs []error
	if e.link != nil {
		errs = append(errs, e.link.Close())
	}
	if e.prog != nil {
		errs = append(errs, e.prog.Close())
	}
	if e.stats != nil {
		errs = append(errs, e.stats.Close())
	}
	return errors.Join(errs...)
}

// cpsStats is a snapshot of an endpoint's statistics.
type cpsStats [cpsStatN]uint64

func (e *cpsEnd) read() (s cpsStats, err error) {
	for i := range s {
		if s[i], err = sumPerCPU(e.stats, uint32(i)); err != nil {
			return s, err
		}
	}
	return s, nil
}

// CPSTrial is one connections-per-second trial.
type CPSTrial struct {
	// Target is the connection opening rate asked for (0: as fast as the
	// generator can), connections per second.
	Target float64 `json:"target_cps"`
	// Offered is the rate at which the client opened the counted
	// connections; Completed is completed connections per second.
	Offered   float64 `json:"offered_cps"`
	Completed float64 `json:"completed_cps"`
	// Opened and Done are the counts of the counted connections.
	Opened uint64 `json:"opened"`
	Done   uint64 `json:"done"`
	// Ratio is Done/Opened.
	Ratio float64 `json:"complete_ratio"`
	// FramesTX and FramesRX are the endpoints' frame counts (both sides);
	// Stray the frames from the peer that were no step of the session.
	FramesTX uint64 `json:"frames_tx"`
	FramesRX uint64 `json:"frames_rx"`
	Stray    uint64 `json:"stray"`
	// Received counts the frames of each step that arrived at their
	// endpoint (SYN, ACK, ... at the server; SYN/ACK, ... at the client),
	// Sent the frames of each step the endpoints transmitted.
	Received [cpsSteps]uint64 `json:"received_per_step"`
	Sent     [cpsSteps]uint64 `json:"sent_per_step"`
	// CPUs is how busy the generator's and the device's CPUs were during
	// the counted connections (/proc/stat).
	CPUs []CPUSplit `json:"cpus,omitempty"`
	// DeviceDrops is what statewire counted as dropped during the trial,
	// by reason, both ports (its control socket's `conntrack -S` drops
	// lines; reasons with none left out): not the measurement, which is
	// the endpoints' count, but where the lost connections went.
	DeviceDrops map[string]uint64 `json:"device_drops,omitempty"`
}

// cpsPair is the client and the server endpoint of a device and the
// generator that opens the connections (the client's program run by
// BPF_PROG_RUN; its counter makes every connection of the run a fresh
// 5-tuple).
type cpsPair struct {
	client, server *cpsEnd
	gen            *Generator
	addrs          cpsAddrs
}

// openCPS attaches the client to cns/cif and the server to sns/sif and
// makes the generator (pinned to cpu, -1 for none).
func openCPS(a cpsAddrs, cns, cif, sns, sif string, cpu int) (p *cpsPair, err error) {
	p = &cpsPair{addrs: a}
	defer func() {
		if err != nil {
			p.close()
			p = nil
		}
	}()
	if p.client, err = newCPSEnd(&p.addrs, true, cns, cif); err != nil {
		return nil, err
	}
	if p.server, err = newCPSEnd(&p.addrs, false, sns, sif); err != nil {
		return nil, err
	}
	// BPF_PROG_RUN's context names the loopback device: the client's
	// program then generates (its attachment to the veth keeps it in
	// the kernel's XDP dispatcher, as the flood generator's anchor does).
	syn := make([]byte, cpsFrameLen)
	cpsBuildPorts(syn, &p.addrs, 0, 0, 0)
	p.gen, err = NewGenerator(GenConfig{NS: cns, Ifname: "lo", Flows: 1, CPU: cpu, tmpl: syn, prog: p.client.prog})
	return p, err
}

func (p *cpsPair) close() error {
	var errs []error
	if p.gen != nil {
		errs = append(errs, p.gen.Close())
	}
	for _, e := range []*cpsEnd{p.client, p.server} {
		if e != nil {
			errs = append(errs, e.close())
		}
	}
	return errors.Join(errs...)
}

// cpsDrain bounds the wait for the last connections after a trial.
const (
	cpsDrainIdle = 50 * time.Millisecond
	cpsDrainMax  = time.Second
	cpsDrainPoll = time.Millisecond
)

// read returns the statistics of both endpoints.
func (p *cpsPair) read() (c, s cpsStats, err error) {
	if c, err = p.client.read(); err != nil {
		return
	}
	s, err = p.server.read()
	return
}

// drain waits until no endpoint has received a frame for cpsDrainIdle (or
// cpsDrainMax passed): the connections still open will not complete. It
// returns when it last saw a frame arrive (to a poll interval).
func (p *cpsPair) drain() (time.Time, error) {
	start := time.Now()
	var last uint64
	lastChange := start
	for time.Since(start) < cpsDrainMax {
		c, s, err := p.read()
		if err != nil {
			return lastChange, err
		}
		var rx uint64
		for j := range cpsSteps {
			rx += c[cpsStatRX+j] + s[cpsStatRX+j]
		}
		if rx != last {
			last, lastChange = rx, time.Now()
		} else if time.Since(lastChange) >= cpsDrainIdle {
			return lastChange, nil
		}
		time.Sleep(cpsDrainPoll)
	}
	return lastChange, nil
}

// run opens connections at rate (0: as fast as the generator can) for
// lead, lets them finish, then opens the counted ones for d and waits for
// them: Done is the final ACKs that arrived at the client. Completed is
// Done over the time from the first SYN to the last frame seen arriving
// (not to the end of sending: a device, or the endpoints back to back,
// may still be working through its queues when the generator is done).
func (p *cpsPair) run(rate float64, lead, d time.Duration) (t CPSTrial, err error) {
	t.Target = rate
	if lead > 0 {
		if _, _, err := p.gen.Send(rate, lead); err != nil {
			return t, err
		}
		if _, err := p.drain(); err != nil {
			return t, err
		}
	}
	c0, s0, err := p.read()
	if err != nil {
		return t, err
	}
	start := time.Now()
	_, elapsed, err := p.gen.Send(rate, d)
	if err != nil {
		return t, err
	}
	last, err := p.drain()
	if err != nil {
		return t, err
	}
	span := max(elapsed, last.Sub(start))
	c1, s1, err := p.read()
	if err != nil {
		return t, err
	}
	for j := range cpsSteps {
		rx, tx := c1[cpsStatRX+j]-c0[cpsStatRX+j], c1[cpsStatTX+j]-c0[cpsStatTX+j]
		rx += s1[cpsStatRX+j] - s0[cpsStatRX+j]
		tx += s1[cpsStatTX+j] - s0[cpsStatTX+j]
		t.Received[j], t.Sent[j] = rx, tx
		t.FramesRX += rx
		t.FramesTX += tx
	}
	t.Stray = c1[cpsStatStray] - c0[cpsStatStray] + s1[cpsStatStray] - s0[cpsStatStray]
	// Opened is the SYNs the client's program wrote, not Send's count: a
	// BPF_PROG_RUN call interrupted by a signal (EINTR, Go's preemption
	// signal among them) has run part of its frames, which Send does not
	// count.
	t.Opened = t.Sent[0]
	t.Done = t.Received[cpsSteps-1]
	if secs := elapsed.Seconds(); secs > 0 {
		t.Offered = float64(t.Opened) / secs
	}
	if secs := span.Seconds(); secs > 0 {
		t.Completed = float64(t.Done) / secs
	}
	if t.Opened > 0 {
		t.Ratio = float64(t.Done) / float64(t.Opened)
	}
	return t, nil
}
