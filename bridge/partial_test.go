package bridge

import (
	"bytes"
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

// TestPartialChecksumHandshake: a TCP handshake and a data segment whose
// frames carry partial checksums (a host that offloads them) are tracked
// as the correct frames are, with nf_conntrack_checksum on and off, and
// every accepted frame leaves with the correct checksum, byte for byte
// the frame the host would have sent without offload; CsumCompleted counts
// them, in Process and in ProcessBatch. A frame the rules drop is left
// alone; a genuinely bad checksum stays INVALID and is dropped by
// --ctstate INVALID -j DROP.
func TestPartialChecksumHandshake(t *testing.T) {
	c, s := "198.18.0.1", "198.18.0.2"
	syn := pt.TCP4(c, s, 1031, 22, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1000, Window: 64240, MSS: 1460})
	synack := pt.TCP4(s, c, 22, 1031, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 5000, Ack: 1001, Window: 65160, MSS: 1460})
	ack := pt.TCP4(c, s, 1031, 22, pt.TCPFields{Flags: packet.TCPAck, Seq: 1001, Ack: 5001, Window: 502})
	data := pt.TCP4(c, s, 1031, 22, pt.TCPFields{Flags: packet.TCPAck | packet.TCPPsh, Seq: 1001, Ack: 5001, Window: 502, Payload: []byte("SSH-2.0-OpenSSH_9.2\r\n")})
	good := [][]byte{syn, synack, ack, data}
	ports := []Port{PortA, PortB, PortA, PortA}
	wantStates := []statemachine.CtState{statemachine.StateNew, statemachine.StateEstablished, statemachine.StateEstablished, statemachine.StateEstablished}
	for _, verify := range []bool{true, false} {
		for _, batch := range []bool{false, true} {
			st := DefaultSettings()
			st.VerifyChecksum = verify
			st.Rules = loadRules(t, "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m conntrack --ctstate INVALID -j DROP\n-A FORWARD -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT\nCOMMIT\n")
			pl := newTestPipeline(t, st, 1024)
			for i, g := range good {
				f := pt.Partial(g)
				var r Result
				if batch {
					out := make([]Result, 1)
					pl.ProcessBatch([][]byte{f}, ports[i], 100*sec, out)
					r = out[0]
				} else {
					r = pl.Process(f, 0, ports[i], 100*sec)
				}
				if r.State != wantStates[i] || r.Verdict != Accept {
					t.Fatalf("verify %v batch %v frame %d: got %v/%v (parse %v), want %v/ACCEPT", verify, batch, i, r.State, r.Verdict, r.Parse, wantStates[i])
				}
				if !bytes.Equal(f, g) {
					t.Fatalf("verify %v batch %v frame %d: forwarded frame is not the correct one:\n% x\nwant\n% x", verify, batch, i, f, g)
				}
				var q packet.Packet
				packet.Parse(g, 0, packet.Options{}, &q)
				if want := q.L4Off + 16; r.CsumAt != want {
					t.Fatalf("verify %v batch %v frame %d: CsumAt %d, want %d (the TCP checksum field)", verify, batch, i, r.CsumAt, want)
				}
			}
			if got := pl.Stats().CsumCompleted; got != uint64(len(good)) {
				t.Errorf("verify %v batch %v: CsumCompleted %d, want %d", verify, batch, got, len(good))
			}
			if es := entries(pl); len(es) != 1 || es[0].Conn.State != statemachine.TCPEstablished {
				t.Fatalf("verify %v batch %v: table %+v, want one ESTABLISHED entry", verify, batch, es)
			}
			// A genuinely bad checksum: INVALID, dropped by the rule,
			// when verified; untouched either way.
			bad := append([]byte(nil), data...)
			bad[len(bad)-1] ^= 1
			orig := append([]byte(nil), bad...)
			r := pl.Process(bad, 0, PortA, 100*sec)
			if verify && (r.State != statemachine.StateInvalid || r.Verdict != Drop || r.Parse != packet.ReasonBadChecksum) {
				t.Errorf("bad checksum: got %v/%v (parse %v), want INVALID/DROP (bad-checksum)", r.State, r.Verdict, r.Parse)
			}
			if !bytes.Equal(bad, orig) {
				t.Error("a frame with a bad checksum was changed")
			}
			// A partial frame the rules drop stays as it came.
			n := pl.Stats().CsumCompleted
			drop := pt.Partial(pt.TCP4(c, s, 1032, 22, pt.TCPFields{Flags: packet.TCPAck, Seq: 1, Ack: 1, Window: 502}))
			orig = append([]byte(nil), drop...)
			st2 := *st
			st2.Rules = loadRules(t, "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n")
			pl.ctl.Store(&st2)
			if r := pl.Process(drop, 0, PortA, 100*sec); r.Verdict != Drop {
				t.Fatalf("policy DROP: got %v", r.Verdict)
			}
			if !bytes.Equal(drop, orig) || pl.Stats().CsumCompleted != n {
				t.Error("a dropped partial frame was completed or counted")
			}
		}
	}
}

// TestPartialChecksumAllocatesNothing: completing costs no allocation.
func TestPartialChecksumAllocatesNothing(t *testing.T) {
	pl := newTestPipeline(t, nil, 1024)
	l, r := "198.18.0.1", "198.18.0.2"
	udp := pt.UDP4(l, r, 1, 2, make([]byte, 100))
	part := pt.Partial(udp)
	f := append([]byte(nil), part...)
	if n := testing.AllocsPerRun(200, func() {
		copy(f, part)
		pl.Process(f, 0, PortA, sec)
	}); n != 0 {
		t.Errorf("%v allocations per partial frame, want 0", n)
	}
	if !bytes.Equal(f, udp) || pl.Stats().CsumCompleted == 0 {
		t.Errorf("not completed (CsumCompleted %d)", pl.Stats().CsumCompleted)
	}
}
