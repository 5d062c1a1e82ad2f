package perf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/cilium/ebpf"
	"github.com/statewire/statewire/internal/sched"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// bpfFTestXDPLiveFrames is BPF_F_TEST_XDP_LIVE_FRAMES: BPF_PROG_RUN turns
// XDP_TX and XDP_REDIRECT into real transmits.
const bpfFTestXDPLiveFrames = 2

// xdpMD is struct xdp_md, the context BPF_PROG_RUN takes for XDP.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// GenConfig describes the traffic of a Generator.
type GenConfig struct {
	// NS and Ifname are the namespace and the interface the frames leave by
	// (the left host's veth).
	NS, Ifname string
	// Src and Dst are the Ethernet addresses of the frames.
	Src, Dst net.HardwareAddr
	// FrameSize is the Ethernet frame size including the 4-byte FCS the
	// wire would carry (64, 512, 1518); the buffer is 4 bytes shorter.
	// IMIX mixes IMIXSizes frame by frame (UDP only).
	FrameSize int
	// Flows is the number of distinct UDP 5-tuples, cycled round-robin.
	Flows int
	// Stamp writes bpf_ktime_get_ns into every frame for the sink's
	// latency histogram (costs the generator a helper call per frame).
	Stamp bool
	// CPU pins the generating thread (-1: no pinning).
	CPU int
	// CPUs, with more than one entry, replaces CPU: one live-frames
	// thread per CPU, thread k sending the flows f with f mod len(CPUs)
	// == k at its share of the rate (genmulti.go). veth puts what a CPU
	// transmits on port A's RX queue CPU mod queues, so the flows spread
	// over the queues by flow, as RSS spreads them on a NIC.
	CPUs []int
	// Interval is the shortest time between paced calls (0: minInterval).
	Interval time.Duration
	// Kind is GenLive (default, "") or GenPacket; frames above
	// LiveMaxFrame need GenPacket.
	Kind string
	// MinBatch is the fewest frames a paced call sends (0: minBatch).
	// The packet generator's calls are cheap enough for 1: frames then
	// leave evenly spaced, as on a wire, not in bursts.
	MinBatch int

	// tmpl and lay replace Frame and udpLayout (TCP traffic, see tcp.go).
	tmpl []byte
	lay  *layout
	// prog replaces the generator program (the CPS client, cpsend.go);
	// its owner keeps it and closes it, Close leaves it.
	prog *ebpf.Program
}

// Generator injects frames with BPF_PROG_RUN in XDP live-frames mode: the
// kernel runs the generator program on a frame in a page pool and
// transmits it out of the interface, with no socket and no copy from user
// space, which is why it outruns every device under test.
//
// Ownership: one goroutine at a time may call Send; Close once after.
type Generator struct {
	cfg     GenConfig
	prog    *ebpf.Program
	counter *ebpf.Map
	frame   []byte
	ifindex int
	// pkt and lay are the packet generator (Kind GenPacket); prog and
	// counter are nil then.
	pkt *packetTX
	lay layout
	// parts are the threads of a generator on several CPUs (CPUs): each
	// a copy of this one with its CPU, its flows and the shared program
	// (genmulti.go).
	parts []*Generator
}

// NewGenerator loads the generator program for cfg.
func NewGenerator(cfg GenConfig) (*Generator, error) {
	lay := udpLayout
	if cfg.lay != nil {
		lay = *cfg.lay
	}
	frame := cfg.tmpl
	var imix *imixFields
	if frame == nil && cfg.FrameSize == IMIX {
		imix = newIMIXFields(cfg.Src, cfg.Dst)
		frame = Frame(cfg.Src, cfg.Dst, IMIXSizes[len(IMIXSizes)-1])
	}
	switch cfg.Kind {
	case "", GenLive:
		if frame == nil && cfg.FrameSize > LiveMaxFrame {
			return nil, fmt.Errorf("perf: %d-byte frames exceed what BPF_PROG_RUN live frames can send (%d bytes: one page, no fragments in live mode); use the packet generator (%s)", cfg.FrameSize, LiveMaxFrame, GenPacket)
		}
	case GenPacket:
		if imix != nil {
			return nil, errors.New("perf: IMIX needs the live-frames generator (it resizes frames in XDP)")
		}
	default:
		return nil, fmt.Errorf("perf: generator %q: want %s or %s", cfg.Kind, GenLive, GenPacket)
	}
	if frame == nil {
		if cfg.FrameSize-4 < minFrame {
			return nil, fmt.Errorf("perf: frame size %d below minimum %d", cfg.FrameSize, minFrame+4)
		}
		frame = Frame(cfg.Src, cfg.Dst, cfg.FrameSize)
	}
	if lay.csum > 0 && len(frame) >= lay.csum+2 {
		lay.csumBase = binary.LittleEndian.Uint16(frame[lay.csum:])
	}
	if len(frame) < lay.need(cfg.Stamp) {
		return nil, fmt.Errorf("perf: frame of %d bytes too short for its fields (%d)", len(frame), lay.need(cfg.Stamp))
	}
	if cfg.Flows <= 0 || cfg.Flows > 1<<29 {
		return nil, fmt.Errorf("perf: flows %d out of range 1..2^29", cfg.Flows)
	}
	if len(cfg.CPUs) > 1 && (cfg.Kind == GenPacket || cfg.prog != nil) {
		return nil, fmt.Errorf("perf: a generator on several CPUs (%v) is the live-frames flood generator only", cfg.CPUs)
	}
	g := &Generator{cfg: cfg, frame: frame, lay: lay}
	if cfg.Kind == GenPacket {
		var err error
		g.pkt, err = newPacketTX(cfg.NS, cfg.Ifname, len(frame))
		return g, err
	}
	err := lab.Do(cfg.NS, func() error {
		ifc, err := net.InterfaceByName(cfg.Ifname)
		if err != nil {
			return err
		}
		g.ifindex = ifc.Index
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("perf: generator interface: %w", err)
	}
	if cfg.prog != nil {
		g.prog = cfg.prog
		return g, nil
	}
	if g.counter, err = newPerCPUArray("swperf_gcnt", 1); err != nil {
		return nil, err
	}
	if g.prog, err = genProgram(g.counter, uint32(cfg.Flows), cfg.CPUs, cfg.Stamp, lay, imix); err != nil {
		g.counter.Close()
		return nil, err
	}
	g.split()
	return g, nil
}

// Frame builds the template frame: IPv4 UDP from 198.18.0.1 to 198.18.0.2
// with a zero (absent) UDP checksum and the magic in the payload. size
// includes the FCS.
func Frame(src, dst net.HardwareAddr, size int) []byte {
	f := make([]byte, size-4)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-14))
	ip[8] = 64
	ip[9] = 17
	copy(ip[12:16], lab.LeftIPv4.Addr().AsSlice())
	copy(ip[16:20], lab.RightIPv4.Addr().AsSlice())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], 0x8000)
	binary.BigEndian.PutUint16(udp[2:], 0x4000)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(f)-34))
	binary.LittleEndian.PutUint32(f[offMagic:], Magic)
	return f
}

// maxLag bounds the frames one paced call may carry to rate x maxLag.
const maxLag = 2 * time.Millisecond

// minBatch is the smallest paced call.
const minBatch = 8

// enospcWait is how long Send retries a call the kernel refuses with
// ENOSPC (no memory-model id free) before it gives up on the trial.
const enospcWait = 2 * time.Second

// minInterval is the shortest time between paced calls. Every
// BPF_PROG_RUN call registers a page pool under a memory-model id, and a
// pool whose pages are still in flight (in a backlog on the other CPU) is
// released up to a second later; at 50 000 calls a second the 65 534 ids
// run out and the call fails with ENOSPC. 5 000 calls a second stay clear.
const minInterval = 200 * time.Microsecond

// Send transmits frames at rate frames per second (0: as fast as it can)
// for d and returns how many it sent and the time it took. Pacing runs
// BPF_PROG_RUN calls on a schedule; see the comment inside on bursts.
func (g *Generator) Send(rate float64, d time.Duration) (sent uint64, elapsed time.Duration, err error) {
	return g.send(rate, d, 0)
}

// SendCount transmits exactly count frames at rate (each flow once when
// count is the flow count: the counter starts at 0 for a new Generator).
func (g *Generator) SendCount(rate float64, count uint64) (sent uint64, elapsed time.Duration, err error) {
	return g.send(rate, time.Hour, count)
}

// send is Send, stopping after limit frames when limit > 0.
func (g *Generator) send(rate float64, d time.Duration, limit uint64) (sent uint64, elapsed time.Duration, err error) {
	// BPF_PROG_RUN with repeat > 1 adds the program to the kernel's XDP
	// dispatcher and removes it afterwards, rewriting the dispatcher's
	// code each time: about 1 ms of CPU per call, which would cap the
	// generator and make every paced call a millisecond burst. A program
	// attached in driver mode stays in the dispatcher, so the test runs
	// find it there and patch nothing: the program is attached to the left
	// host's veth for the duration of Send. That veth receives nothing in
	// the lab (the hosts are bare and the sink drops everything), so the
	// anchor never runs. One Send at a time per interface.
	// An interface that already has a program (the right host's veth,
	// with the sink, when it sends TCP handshake replies) goes without:
	// slower, and those phases are slow anyway.
	if g.parts != nil {
		return g.sendParts(rate, d, limit)
	}
	if g.pkt != nil {
		return g.sendPacket(rate, d, limit)
	}
	if anchor, aerr := attachXDP(g.cfg.NS, g.cfg.Ifname, g.prog); aerr == nil {
		defer func() {
			if cerr := anchor.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("perf: detach generator anchor: %w", cerr)
			}
		}()
	}
	err = lab.Do(g.cfg.NS, func() error {
		if err := g.pin(); err != nil {
			return err
		}
		interval := g.interval()
		opts := ebpf.RunOptions{
			Data:    g.frame,
			Flags:   bpfFTestXDPLiveFrames,
			Context: xdpMD{DataEnd: uint32(len(g.frame)), IngressIfindex: uint32(g.ifindex)},
		}
		// Paced sending: one BPF_PROG_RUN per turn with every frame due
		// by now, spinning while fewer than max(minBatch, rate x
		// minInterval) are due (the generator owns its CPU; a sleep on a
		// busy machine oversleeps by milliseconds and the catch-up burst
		// would overflow the device's queues). A call runs its frames
		// back to back at the generator's full speed, so frames leave in
		// bursts of about rate x 200 µs; a turn more than maxLag late
		// does not grow the burst further: the schedule slips and Offered
		// shows the shortfall.
		start := time.Now()
		var slipped float64            // frames the schedule gave up on
		refusedAt := time.Duration(-1) // since when the kernel refuses the calls (ENOSPC)
		for {
			now := time.Since(start)
			if now >= d || (limit > 0 && sent >= limit) {
				elapsed = now
				return nil
			}
			n := uint64(1 << 14)
			if rate > 0 {
				due := rate*now.Seconds() - slipped - float64(sent)
				if late := due - rate*maxLag.Seconds(); late > 0 {
					slipped += late
					due -= late
				}
				if due < max(g.minBatch(), rate*interval.Seconds()) {
					continue // spin
				}
				n = min(uint64(due), 1<<14)
			}
			if limit > 0 {
				n = min(n, limit-sent)
			}
			opts.Repeat = uint32(n)
			if _, err := g.prog.Run(&opts); err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if refusedAt < 0 {
					refusedAt = now
				}
				if errors.Is(err, unix.ENOSPC) && now-refusedAt < enospcWait {
					// The machine's XDP memory-model ids are all held
					// by page pools of earlier calls (anyone's) whose
					// pages are still in flight; they come back as
					// those pages are freed. Wait for one rather than
					// fail the trial: the frames not sent meanwhile
					// slip (see above) and show as a shortfall of the
					// offered rate.
					time.Sleep(time.Millisecond)
					continue
				}
				return fmt.Errorf("perf: BPF_PROG_RUN live frames (%d frames): %w", n, err)
			}
			refusedAt = -1
			sent += n
		}
	})
	return sent, elapsed, err
}

// Close releases the program and its map, or the packet socket.
func (g *Generator) Close() error {
	if g.pkt != nil {
		return g.pkt.close()
	}
	if g.cfg.prog != nil {
		return nil
	}
	return errors.Join(g.prog.Close(), g.counter.Close())
}

// minBatch returns the fewest frames a paced call sends.
func (g *Generator) minBatch() float64 {
	if g.cfg.MinBatch > 0 {
		return float64(g.cfg.MinBatch)
	}
	return minBatch
}

// interval returns the shortest time between paced calls.
func (g *Generator) interval() time.Duration {
	if g.cfg.Interval > 0 {
		return g.cfg.Interval
	}
	return minInterval
}

// pin pins the calling (locked) thread to the generator CPU and renices it.
func (g *Generator) pin() error {
	if g.cfg.CPU >= 0 {
		if err := sched.Pin(g.cfg.CPU); err != nil {
			return fmt.Errorf("perf: generator (--gen-cpu): %w", err)
		}
	}
	if err := sched.Nice(Nice); err != nil {
		return fmt.Errorf("perf: generator: %w", err)
	}
	return nil
}

// sendPacket is send for the packet generator, paced as the live one: each
// turn queues every frame due by now (at least max(minBatch, rate x
// minInterval)) into the TX ring and flushes it with one sendto; a turn
// more than maxLag late does not grow the burst. It returns when the
// kernel has taken every frame it was given.
func (g *Generator) sendPacket(rate float64, d time.Duration, limit uint64) (sent uint64, elapsed time.Duration, err error) {
	err = lab.Do(g.cfg.NS, func() error {
		if err := g.pin(); err != nil {
			return err
		}
		interval := g.interval()
		start := time.Now()
		var slipped float64
		for {
			now := time.Since(start)
			if now >= d || (limit > 0 && sent >= limit) {
				elapsed = now
				break
			}
			n := uint64(pktSlots)
			if rate > 0 {
				due := rate*now.Seconds() - slipped - float64(sent)
				if late := due - rate*maxLag.Seconds(); late > 0 {
					slipped += late
					due -= late
				}
				if due < max(g.minBatch(), rate*interval.Seconds()) {
					continue // spin
				}
				n = min(uint64(due), pktSlots)
			}
			if limit > 0 {
				n = min(n, limit-sent)
			}
			sent += g.pkt.fill(g, g.lay, n)
			if err := g.pkt.flush(); err != nil {
				return err
			}
		}
		refused, err := g.pkt.drain(time.Second)
		sent -= min(refused, sent)
		return err
	})
	return sent, elapsed, err
}
