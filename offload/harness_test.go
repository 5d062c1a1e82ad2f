package offload_test

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/replay"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// harness runs frames through the compiled program (BPF_PROG_RUN) and the
// Go pipeline side by side, filling the flow map from the pipeline's table
// the way the datapath does: a flow is offered once it is eligible and has
// a cached ACCEPT, and taken back before the pipeline judges a frame of it
// that the program punted.
//
// The pipeline's table is a shadow that judges every frame: for a frame the
// program took, the pipeline runs it at the time the program recorded and
// must accept it with the same state, status and Expires; every
// fullEvery-th taken frame, and before every punted frame of an offered
// flow, TakeBack's whole Conn must equal the pipeline's.
type harness struct {
	t         *testing.T
	prog      *offload.Program
	rp        *replay.Replayer
	oc        offload.OfferConfig
	fullEvery int

	offered map[flowtable.Key]bool
	ports   map[flowtable.Key]*[2]int8 // ingress port of frames from A (0) and from B (1), -1 unknown
	pkt     packet.Packet

	punts                         [offload.NumPuntReasons]int
	frames, taken, punted, notRun int
	partial                       int // taken frames with a partial checksum (completed by both)
	fullCompares, offers          int
	takenTCP, takenUDP            int
}

func newHarness(t *testing.T, prog *offload.Program, s *bridge.Settings) *harness {
	rp, err := replay.New(replay.Options{Settings: s})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{
		t: t, prog: prog, rp: rp,
		oc:        offload.OfferConfig{Conntrack: &s.Conntrack, VerifyChecksum: s.VerifyChecksum},
		fullEvery: 1,
		offered:   map[flowtable.Key]bool{},
		ports:     map[flowtable.Key]*[2]int8{},
	}
}

// entry returns the live entry of k without expiring anything.
func (h *harness) entry(k *flowtable.Key) *flowtable.Entry {
	return h.rp.Pipeline.Shard().Lookup(k, h.rp.Table.HashKey(k), math.MinInt64)
}

// ctinfo is the CtState the tracker gives a packet of c in dir
// (statemachine ctinfo).
func ctinfo(c *statemachine.Conn, dir statemachine.Dir) statemachine.CtState {
	switch {
	case dir != statemachine.Original || c.Status&statemachine.StatusSeenReply != 0:
		return statemachine.StateEstablished
	case c.Status&statemachine.StatusExpected != 0:
		return statemachine.StateRelated
	}
	return statemachine.StateNew
}

// step runs one frame that arrived on port. learn says whether the frame
// may teach the harness which port a direction uses (false for frames
// sent on the wrong port on purpose).
func (h *harness) step(name string, frame []byte, wireLen, port int, learn bool) {
	t := h.t
	t.Helper()
	h.frames++
	s := h.rp.Control.Load()
	var k flowtable.Key
	hasKey := false
	switch packet.Parse(frame, wireLen, packet.Options{VerifyChecksum: s.VerifyChecksum}, &h.pkt) {
	case packet.ReasonOK, packet.ReasonBadChecksum:
		hasKey = !h.pkt.IsICMPError() && k.SetOf(&h.pkt)
	}
	var e *flowtable.Entry
	if hasKey {
		e = h.entry(&k)
	}

	// The pipeline completes a partial checksum in the frame it is
	// given (as the program does in its copy): keep the caller's bytes.
	frame = append([]byte(nil), frame...)
	ret := uint32(offload.ActionPass)
	reason := -1
	var progOut []byte // the frame as the program left it
	if len(frame) >= 14 && len(frame) <= 3000 {
		before, err := h.prog.Stats()
		if err != nil {
			t.Fatal(err)
		}
		progOut = make([]byte, len(frame))
		ret, err = h.prog.EBPF(port).Run(&ebpf.RunOptions{Data: frame, DataOut: progOut})
		if err != nil {
			t.Fatalf("%s: BPF_PROG_RUN: %v", name, err)
		}
		after, err := h.prog.Stats()
		if err != nil {
			t.Fatal(err)
		}
		for i := range after[port].Punts {
			if after[port].Punts[i] != before[port].Punts[i] {
				reason = i
				h.punts[i]++
			}
		}
		if d := after[port].FastPackets - before[port].FastPackets; (d == 1) != (ret == offload.ActionRedirect) {
			t.Fatalf("%s: returned %d, fast-path counter moved by %d", name, ret, d)
		}
	} else {
		h.notRun++
	}
	// The program punts for a bad checksum only what the parser calls
	// bad: a good checksum it cannot verify would be a missed frame.
	// A partial checksum is good too (with or without verification).
	if reason == int(offload.PuntChecksum) && (h.pkt.ChecksumChecked && h.pkt.ChecksumOK || h.pkt.ChecksumPartial) && len(frame)-int(h.pkt.L4Off) < 4096 {
		t.Fatalf("%s: program called a good checksum bad (partial %v)", name, h.pkt.ChecksumPartial)
	}

	switch ret {
	case offload.ActionRedirect:
		h.taken++
		if e == nil || !h.offered[k] {
			t.Fatalf("%s: the program took a frame of a flow that is not offered (key %v)", name, k)
		}
		var u offload.Usage
		if ok, err := h.prog.Peek(e, &u); err != nil || !ok {
			t.Fatalf("%s: Peek after a taken frame: ok=%v err=%v", name, ok, err)
		}
		pre := e.Conn
		dir := e.DirOf(&h.pkt)
		partial := h.pkt.ChecksumPartial
		r := h.rp.Pipeline.Process(frame, wireLen, bridge.Port(port), u.LastSeen)
		// Both forward the same bytes: a partial checksum completed
		// alike (packet.CompleteChecksum and csum_partial), else as is.
		if !bytes.Equal(progOut, frame) {
			t.Fatalf("%s: the program forwards other bytes than the pipeline (partial checksum %v):\n% x\n% x", name, partial, progOut, frame)
		}
		if partial {
			h.partial++
		}
		switch {
		case r.Verdict != bridge.Accept:
			t.Fatalf("%s: program took it; pipeline says %v (%v, invalid %v)", name, r.Verdict, r.State, r.Invalid)
		case r.State != ctinfo(&pre, dir) || r.Dir != dir:
			t.Fatalf("%s: pipeline state %v dir %v, want %v dir %v", name, r.State, r.Dir, ctinfo(&pre, dir), dir)
		case h.entry(&k) != e:
			t.Fatalf("%s: the pipeline replaced the entry of a taken frame", name)
		case e.Conn.State != pre.State || e.Conn.Status != pre.Status:
			t.Fatalf("%s: pipeline changed state %v->%v status %#x->%#x on a taken frame", name, pre.State, e.Conn.State, pre.Status, e.Conn.Status)
		case e.Conn.Expires != u.Expires:
			t.Fatalf("%s: Expires: fast path %d, pipeline %d (delta %d)", name, u.Expires, e.Conn.Expires, u.Expires-e.Conn.Expires)
		}
		if k.Proto == packet.ProtoTCP {
			h.takenTCP++
		} else {
			h.takenUDP++
		}
		if h.fullEvery > 0 && h.taken%h.fullEvery == 0 {
			h.compare(name, &k, e)
			h.offer(name, &k)
		}
	case offload.ActionPass:
		h.punted++
		if hasKey && h.offered[k] {
			if e == nil {
				t.Fatalf("%s: offered flow without an entry", name)
			}
			h.compare(name, &k, e)
		}
		h.rp.Pipeline.Process(frame, wireLen, bridge.Port(port), h.prog.Now())
	default:
		t.Fatalf("%s: program returned %d: every frame not taken must go to the XSK redirect (XDP_PASS here)", name, ret)
	}
	if !hasKey {
		return
	}
	if learn {
		ps := h.ports[k]
		if ps == nil {
			ps = &[2]int8{-1, -1}
			h.ports[k] = ps
		}
		if i := fromB(&k, h.pkt.Src, h.pkt.SrcPort); ps[i] < 0 {
			ps[i] = int8(port)
		}
	}
	if !h.offered[k] {
		h.offer(name, &k)
	}
}

// compare takes k back and requires the whole Conn to equal the
// pipeline's entry e.
func (h *harness) compare(name string, k *flowtable.Key, e *flowtable.Entry) {
	t := h.t
	t.Helper()
	cp := *e
	ok, err := h.prog.TakeBack(&cp)
	if err != nil || !ok {
		t.Fatalf("%s: TakeBack: ok=%v err=%v", name, ok, err)
	}
	delete(h.offered, *k)
	h.fullCompares++
	if cp.Conn != e.Conn {
		t.Fatalf("%s: after TakeBack\n fast path %+v\n pipeline  %+v", name, cp.Conn, e.Conn)
	}
}

// offer offers k's entry when it is eligible and has an ACCEPT cached for
// a direction whose port is known, as the datapath would.
func (h *harness) offer(name string, k *flowtable.Key) {
	e := h.entry(k)
	if e == nil || !offload.Eligible(e) {
		return
	}
	ps := h.ports[*k]
	if ps == nil {
		return
	}
	gen := h.rp.Control.Load().Rules.Generation()
	var vs [2]uint8
	any := false
	orig := e.Tuple()
	for d := range 2 {
		v, ok := e.CachedVerdict(statemachine.Dir(d), gen)
		port := ps[fromB(k, orig.Src, orig.SrcPort)^d]
		if fp := rules.CachedVerdict(v).FastPath(); ok && fp != 0 && port >= 0 {
			vs[d] = fp | uint8(port)<<6
			any = true
		}
	}
	if !any {
		return
	}
	if err := h.prog.Offer(e, vs, h.oc); err != nil {
		if errors.Is(err, offload.ErrOffered) {
			h.t.Fatalf("%s: Offer: %v (harness lost track)", name, err)
		}
		h.t.Fatalf("%s: Offer: %v", name, err)
	}
	h.offered[*k] = true
	h.offers++
}

// drain takes every offered flow back, comparing each.
func (h *harness) drain(name string) {
	for k := range h.offered {
		e := h.entry(&k)
		if e == nil {
			h.t.Fatalf("%s: offered flow without an entry", name)
		}
		h.compare(name, &k, e)
	}
}

// fromB says whether a packet from (src, sport) runs from the key's B
// endpoint: the index of harness.ports.
func fromB(k *flowtable.Key, src packet.Addr, sport uint16) int {
	if src == k.A && sport == k.PortA {
		return 0
	}
	return 1
}
