package offload_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/packet/packettest"
)

// TestDifferentialRandom runs random TCP and UDP conversations through the
// program and the pipeline (see harness): handshakes with and without
// window scaling and SACK, data both ways with scaled and zero windows,
// SACK blocks, exact retransmissions (up to the max_retrans timeout),
// out-of-window segments and ACKs, sequence numbers wrapping, bad
// checksums, VLAN tags, Ethernet padding, frames on the wrong port, time
// jumps across the UDP stream deadline and the timeouts, FIN and RST; each
// seed with its own be_liberal / window-tracking / checksum settings.
func TestDifferentialRandom(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 4096, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	var frames, taken, punted, full, tcp, udp int
	var punts [offload.NumPuntReasons]int
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 0x0ff10ad))
		s := bridge.DefaultSettings()
		s.VerifyChecksum = seed%4 != 3
		c := &s.Conntrack
		c.BeLiberal = seed%5 == 4
		c.WindowTracking = seed%7 != 6
		c.MaxRetrans = uint8(1 + rng.IntN(4))
		// Short timeouts so that the time jumps reach them.
		c.Timeouts.TCPEstablished = 600 * time.Second
		c.Timeouts.TCPUnacknowledged = 120 * time.Second
		c.Timeouts.TCPMaxRetrans = 60 * time.Second
		c.Timeouts.UDP = 30 * time.Second
		c.Timeouts.UDPStream = 90 * time.Second
		h := newHarness(t, prog, s)
		h.fullEvery = 1 + rng.IntN(8)
		g := &gen{t: t, h: h, rng: rng, prog: prog, seed: seed}
		g.run()
		h.drain(fmt.Sprintf("seed %d", seed))
		frames += h.frames
		taken += h.taken
		punted += h.punted
		full += h.fullCompares
		tcp += h.takenTCP
		udp += h.takenUDP
		for i, n := range h.punts {
			punts[i] += n
		}
	}
	t.Logf("%d seeds, %d frames: %d taken by the fast path (%d TCP, %d UDP), %d punted, %d whole-Conn comparisons after TakeBack: all agree",
		seeds, frames, taken, tcp, udp, punted, full)
	t.Logf("punts by reason: %s", puntString(punts))
	if punts[offload.PuntWindow] == 0 || punts[offload.PuntChecksum] == 0 || punts[offload.PuntVerdict] == 0 || punts[offload.PuntExpired] == 0 {
		t.Errorf("the conversations missed a case: punts %s", puntString(punts))
	}
}

type gen struct {
	t    *testing.T
	h    *harness
	rng  *rand.Rand
	prog *offload.Program
	seed int
	n    int
}

// conv is one TCP or UDP conversation between a client (side 0) and a
// server (side 1).
type conv struct {
	id       int
	udp      bool
	v6       bool
	addr     [2]string
	port     [2]uint16
	wire     [2]int // ingress port of each side's frames
	vlan     []uint16
	tagType  []uint16
	nxt      [2]uint32 // next sequence number to send
	acked    [2]uint32 // highest ack sent
	wscale   [2]int    // -1: no option
	sack     bool
	last     [2][]byte // last frame each side sent (for retransmissions)
	steps    int
	closed   bool
	syn      bool
	udpZero  bool // IPv4 UDP with checksum 0
	replying bool
}

func (g *gen) newConv(id int) *conv {
	r := g.rng
	c := &conv{id: id, udp: r.IntN(3) == 0, v6: r.IntN(3) == 0, steps: 20 + r.IntN(120)}
	if c.v6 {
		c.addr = [2]string{fmt.Sprintf("2001:db8::%x", 1+r.IntN(200)), fmt.Sprintf("2001:db8:1::%x", 1+r.IntN(200))}
	} else {
		c.addr = [2]string{fmt.Sprintf("198.18.%d.%d", r.IntN(4), 1+r.IntN(250)), fmt.Sprintf("198.19.%d.%d", r.IntN(4), 1+r.IntN(250))}
	}
	c.port = [2]uint16{uint16(1024 + r.IntN(60000)), uint16([]int{80, 443, 53, 5000 + r.IntN(100)}[r.IntN(4)])}
	if r.IntN(2) == 0 {
		c.wire = [2]int{0, 1}
	} else {
		c.wire = [2]int{1, 0}
	}
	for range r.IntN(3) {
		c.vlan = append(c.vlan, uint16(1+r.IntN(4094)))
		c.tagType = append(c.tagType, []uint16{0x8100, 0x88a8, 0x9100}[r.IntN(3)])
	}
	for i := range 2 {
		if r.IntN(4) == 0 {
			c.nxt[i] = uint32(0) - uint32(r.IntN(20000)) // wraps soon
		} else {
			c.nxt[i] = r.Uint32()
		}
		c.wscale[i] = -1
		if r.IntN(3) != 0 {
			c.wscale[i] = r.IntN(15)
		}
	}
	c.sack = r.IntN(2) == 0
	c.udpZero = !c.v6 && r.IntN(4) == 0
	c.replying = r.IntN(5) != 0
	return c
}

func (g *gen) run() {
	var convs []*conv
	nconv := 2 + g.rng.IntN(5)
	for i := range nconv {
		convs = append(convs, g.newConv(i))
	}
	for live := len(convs); live > 0; {
		c := convs[g.rng.IntN(len(convs))]
		if c.steps <= 0 {
			live = 0
			for _, c := range convs {
				if c.steps > 0 {
					live++
				}
			}
			continue
		}
		c.steps--
		if g.rng.IntN(25) == 0 {
			g.jump()
		}
		if c.udp {
			g.udpStep(c)
		} else {
			g.tcpStep(c)
		}
	}
}

// jump moves both clocks forward: within the UDP stream deadline, across
// it, or across the timeouts.
func (g *gen) jump() {
	d := []time.Duration{time.Millisecond, 500 * time.Millisecond, 2500 * time.Millisecond, 40 * time.Second, 100 * time.Second, 700 * time.Second}[g.rng.IntN(6)]
	if err := g.prog.AdjustClock(d); err != nil {
		g.t.Fatal(err)
	}
}

// frame wraps an L3 frame from packettest with c's VLAN tags, sometimes
// Ethernet padding, sometimes a bad L4 checksum.
func (g *gen) frame(c *conv, f []byte, payload int) []byte {
	r := g.rng
	for i := len(c.vlan) - 1; i >= 0; i-- {
		tag := make([]byte, 4)
		binary.BigEndian.PutUint16(tag, c.tagType[i])
		binary.BigEndian.PutUint16(tag[2:], c.vlan[i])
		f = append(f[:12:12], append(tag, f[12:]...)...)
	}
	if r.IntN(8) == 0 {
		f = append(f, make([]byte, 1+r.IntN(30))...) // padding beyond the IP length
	}
	if r.IntN(30) == 0 {
		// A bad checksum: flip a bit of the last L4 byte (the padding,
		// if any, is not covered: flip inside the datagram).
		ipEnd := len(f)
		if p := ethIPEnd(f); p > 0 {
			ipEnd = p
		}
		f[ipEnd-1] ^= 0x40
	}
	return f
}

// ethIPEnd returns the end of the IP datagram in f (after tags), or 0.
func ethIPEnd(f []byte) int {
	off := 12
	et := binary.BigEndian.Uint16(f[off:])
	for et == 0x8100 || et == 0x88a8 || et == 0x9100 {
		off += 4
		et = binary.BigEndian.Uint16(f[off:])
	}
	off += 2
	switch et {
	case 0x0800:
		return off + int(binary.BigEndian.Uint16(f[off+2:]))
	case 0x86dd:
		return off + 40 + int(binary.BigEndian.Uint16(f[off+4:]))
	}
	return 0
}

func (g *gen) send(c *conv, side int, f []byte) {
	g.n++
	port, learn := c.wire[side], true
	if g.rng.IntN(40) == 0 {
		port, learn = port^1, false // spoofed: the other port
	}
	g.h.step(fmt.Sprintf("seed %d frame %d conv %d side %d", g.seed, g.n, c.id, side), f, 0, port, learn)
}

func (g *gen) udpStep(c *conv) {
	r := g.rng
	side := 0
	if c.replying && r.IntN(2) == 0 {
		side = 1
	}
	payload := make([]byte, r.IntN(600))
	for i := range payload {
		payload[i] = byte(r.IntN(256))
	}
	src, dst := c.addr[side], c.addr[side^1]
	var f []byte
	if c.v6 {
		f = packettest.UDP6(src, dst, c.port[side], c.port[side^1], payload)
	} else {
		f = packettest.UDP4(src, dst, c.port[side], c.port[side^1], payload)
		if c.udpZero {
			binary.BigEndian.PutUint16(f[14+20+6:], 0)
		}
	}
	g.send(c, side, g.frame(c, f, len(payload)))
}

func (g *gen) tcp(c *conv, side int, f packettest.TCPFields) []byte {
	src, dst := c.addr[side], c.addr[side^1]
	var b []byte
	if c.v6 {
		b = packettest.TCP6(src, dst, c.port[side], c.port[side^1], f)
	} else {
		b = packettest.TCP4(src, dst, c.port[side], c.port[side^1], f)
	}
	return g.frame(c, b, len(f.Payload))
}

func (g *gen) tcpStep(c *conv) {
	r := g.rng
	if !c.syn {
		c.syn = true
		syn := packettest.TCPFields{Flags: packet.TCPSyn, Seq: c.nxt[0], Window: 64240, MSS: 1460, SACKPerm: c.sack}
		if c.wscale[0] >= 0 {
			syn.HasWScale, syn.WScale = true, uint8(c.wscale[0])
		}
		g.send(c, 0, g.tcp(c, 0, syn))
		c.nxt[0]++
		sa := packettest.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: c.nxt[1], Ack: c.nxt[0], Window: 65160, MSS: 1460, SACKPerm: c.sack}
		if c.wscale[1] >= 0 {
			sa.HasWScale, sa.WScale = true, uint8(c.wscale[1])
		}
		g.send(c, 1, g.tcp(c, 1, sa))
		c.nxt[1]++
		c.acked = [2]uint32{c.nxt[1], c.nxt[0]}
		g.send(c, 0, g.tcp(c, 0, packettest.TCPFields{Flags: packet.TCPAck, Seq: c.nxt[0], Ack: c.nxt[1], Window: 502}))
		return
	}
	if c.closed {
		return
	}
	side := r.IntN(2)
	o := side ^ 1
	if c.steps == 0 && r.IntN(2) == 0 {
		// Close: FIN from one side (the rest of the close, if any,
		// comes from later steps: none, so the flow stays half closed).
		g.send(c, side, g.tcp(c, side, packettest.TCPFields{Flags: packet.TCPFin | packet.TCPAck, Seq: c.nxt[side], Ack: c.nxt[o], Window: 500}))
		c.closed = true
		return
	}
	switch k := r.IntN(40); {
	case k < 3 && c.last[side] != nil:
		// An exact retransmission of the side's last segment.
		g.send(c, side, c.last[side])
		return
	case k == 3:
		// Out of window: far ahead or behind.
		d := uint32(1 << (18 + r.IntN(13)))
		seq := c.nxt[side] + d
		if r.IntN(2) == 0 {
			seq = c.nxt[side] - d
		}
		g.send(c, side, g.tcp(c, side, packettest.TCPFields{Flags: packet.TCPAck, Seq: seq, Ack: c.nxt[o], Window: 500, Payload: make([]byte, r.IntN(100))}))
		return
	case k == 4:
		// ACK of data never sent.
		g.send(c, side, g.tcp(c, side, packettest.TCPFields{Flags: packet.TCPAck, Seq: c.nxt[side], Ack: c.nxt[o] + uint32(1+r.IntN(1<<20)), Window: 500}))
		return
	case k == 5 && c.steps < 5:
		g.send(c, side, g.tcp(c, side, packettest.TCPFields{Flags: packet.TCPRst | packet.TCPAck, Seq: c.nxt[side], Ack: c.nxt[o]}))
		c.closed = true
		return
	case k == 6:
		// Segment with a flag combination the fast path never takes.
		flags := []uint8{packet.TCPAck | packet.TCPPsh | packet.TCPUrg, packet.TCPAck | packet.TCPEce | packet.TCPCwr, packet.TCPPsh, packet.TCPSyn}[r.IntN(4)]
		g.send(c, side, g.tcp(c, side, packettest.TCPFields{Flags: flags, Seq: c.nxt[side], Ack: c.nxt[o], Window: 500}))
		return
	}
	// Data (or a pure ACK) in sequence, sometimes acking old data,
	// sometimes a zero or tiny window, with SACK blocks when negotiated.
	n := 0
	if r.IntN(3) != 0 {
		n = 1 + r.IntN(1400)
	}
	ack := c.nxt[o]
	if r.IntN(6) == 0 {
		ack -= uint32(r.IntN(3000))
	}
	win := uint16(r.IntN(65536))
	if r.IntN(10) == 0 {
		win = 0
	}
	f := packettest.TCPFields{Flags: packet.TCPAck, Seq: c.nxt[side], Ack: ack, Window: win, Payload: make([]byte, n)}
	if r.IntN(2) == 0 {
		f.Flags |= packet.TCPPsh
	}
	if r.IntN(3) == 0 {
		f.TS, f.TSVal, f.TSEcr = true, r.Uint32(), r.Uint32()
	}
	if (c.sack && r.IntN(3) == 0) || r.IntN(12) == 0 { // SACK blocks, negotiated or not
		for range 1 + r.IntN(4) {
			left := ack + uint32(r.IntN(5000))
			f.SACK = append(f.SACK, packet.SACKBlock{Left: left, Right: left + uint32(1+r.IntN(3000))})
		}
		if len(f.SACK) > 3 && f.TS {
			f.SACK = f.SACK[:3] // 40 bytes of options at most
		}
	}
	for i := range f.Payload {
		f.Payload[i] = byte(r.IntN(256))
	}
	b := g.tcp(c, side, f)
	c.last[side] = b
	c.nxt[side] += uint32(n)
	g.send(c, side, b)
}
