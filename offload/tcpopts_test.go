package offload_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/packet/packettest"
)

// TestTCPOptionWalk runs ACKs of an offered flow whose SACK option comes
// after 0-30 NOPs (and after other options, an end of list, a malformed
// SACK) through the program and the pipeline (harness). offload.c walks
// the first six options inline and the rest with tcp_opt calls, so the
// SACK option is found by either. Each ACK comes twice: with a SACK edge
// within the data the server sent (the program takes it, and its window
// update must equal the pipeline's) and with an edge beyond it (INVALID in
// Go: the program must punt it for the window, which it can only do if it
// found the option).
func TestTCPOptionWalk(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 64, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	s := bridge.DefaultSettings()
	h := newHarness(t, prog, s)
	const (
		cli, srv = "198.18.0.1", "198.19.0.1"
		cport    = 40000
		sport    = 80
		ciss     = uint32(1000)
		sent     = 2000 // bytes the server sends
	)
	siss := uint32(0xfffff800) // the edges wrap
	c2s := func(f packettest.TCPFields) []byte { return packettest.TCP4(cli, srv, cport, sport, f) }
	s2c := func(f packettest.TCPFields) []byte { return packettest.TCP4(srv, cli, sport, cport, f) }
	h.step("syn", c2s(packettest.TCPFields{Flags: packet.TCPSyn, Seq: ciss, Window: 64240, MSS: 1460, SACKPerm: true}), 0, 0, true)
	h.step("syn-ack", s2c(packettest.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: siss, Ack: ciss + 1, Window: 65160, MSS: 1460, SACKPerm: true}), 0, 1, true)
	h.step("ack", c2s(packettest.TCPFields{Flags: packet.TCPAck, Seq: ciss + 1, Ack: siss + 1, Window: 502}), 0, 0, true)
	h.step("data", s2c(packettest.TCPFields{Flags: packet.TCPAck, Seq: siss + 1, Ack: ciss + 1, Window: 65160, Payload: make([]byte, sent)}), 0, 1, true)
	h.fullEvery = 1 // compare the whole Conn after every taken frame

	sack := func(left, right uint32) []byte {
		o := []byte{5, 10}
		o = binary.BigEndian.AppendUint32(o, left)
		return binary.BigEndian.AppendUint32(o, right)
	}
	nops := func(n int) []byte {
		o := make([]byte, n)
		for i := range o {
			o[i] = 1
		}
		return o
	}
	ts := []byte{8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	type layout struct {
		name    string
		opts    func(sk []byte) []byte
		hasSACK bool // the pipeline sees the SACK option
		steps   int  // options walked up to the SACK's end (7 and more: tcp_opt)
	}
	var layouts []layout
	for k := 0; k <= 30; k++ {
		layouts = append(layouts, layout{fmt.Sprintf("%d NOPs, SACK", k),
			func(sk []byte) []byte { return append(nops(k), sk...) }, true, k + 1})
	}
	for k := 0; k <= 18; k++ {
		layouts = append(layouts, layout{fmt.Sprintf("%d NOPs, timestamps, SACK", k),
			func(sk []byte) []byte { return append(append(nops(k), ts...), sk...) }, true, k + 2})
	}
	layouts = append(layouts,
		layout{"8 NOPs, malformed SACK (length 9), SACK",
			func(sk []byte) []byte { return append(append(nops(8), 5, 9, 0, 0, 0, 0, 0, 0, 0), sk...) }, true, 10},
		layout{"8 NOPs, unknown option, SACK",
			func(sk []byte) []byte { return append(append(nops(8), 99, 4, 0, 0), sk...) }, true, 10},
		layout{"8 NOPs, end of list, SACK",
			func(sk []byte) []byte { return append(append(nops(8), 0), sk...) }, false, 9},
		layout{"8 NOPs, length 1, SACK",
			func(sk []byte) []byte { return append(append(nops(8), 99, 1), sk...) }, false, 9},
	)

	// Per layout: the ACK beyond (a punt takes the flow back; the
	// pipeline judges it INVALID, which leaves no cached verdict for the
	// next offer), one within (punted for the verdict, judged, cached,
	// offered again), and one within that the program must take.
	var viaCall, takenIn, puntedBeyond int
	for i, l := range layouts {
		for j, beyond := range []bool{true, false, false} {
			right := siss + 1 + sent/2
			if beyond {
				right = siss + 1 + sent + 5000
			}
			f := packettest.TCPFields{Flags: packet.TCPAck, Seq: ciss + 1, Ack: siss + 1, Window: uint16(502 + 3*i + j),
				Opts: l.opts(sack(siss+1+sent/4, right))}
			name := fmt.Sprintf("%s (frame %d, beyond %v)", l.name, j, beyond)
			if n := len(f.TCPOptions()); n > 40 {
				t.Fatalf("%s: %d bytes of options", name, n)
			}
			taken, window := h.taken, h.punts[offload.PuntWindow]
			h.step(name, c2s(f), 0, 0, true)
			tookIt, puntedWindow := h.taken > taken, h.punts[offload.PuntWindow] > window
			switch {
			case beyond && l.hasSACK && !puntedWindow:
				t.Errorf("%s: an ACK whose SACK edge is beyond the data sent was not punted for the window (taken %v)", name, tookIt)
			case beyond && !l.hasSACK && !tookIt:
				t.Errorf("%s: the program did not take an ACK whose SACK option the walk never reaches (punts %s)", name, puntString(h.punts))
			case j == 2 && !tookIt:
				t.Errorf("%s: the program did not take an ACK within the window (punts %s)", name, puntString(h.punts))
			}
			if beyond && puntedWindow {
				puntedBeyond++
			}
			if j == 2 && tookIt {
				takenIn++
			}
			if l.steps > 6 {
				viaCall++
			}
		}
	}
	h.drain("end")
	t.Logf("%d layouts (%d frames walked past the inline steps): %d ACKs within the window taken, %d beyond it punted for the window; %d whole-Conn comparisons agree",
		len(layouts), viaCall, takenIn, puntedBeyond, h.fullCompares)
}
