package statemachine

import (
	"testing"
	"unsafe"

	"github.com/statewire/statewire/packet"
)

// established returns a tracker after a handshake (client ISN ci, server
// ISN si, no window scaling) and 1000 bytes client→server ACKed.
func established(t *testing.T, ci, si uint32) *tracker {
	tr := newTracker(t)
	tr.handshake(ci, si, -1, -1)
	tr.send(client, seg{flags: fPA, seq: ci + 1, ack: si + 1, win: 1024, wscale: -1, len: 1000})
	tr.send(server, seg{flags: fA, seq: si + 1, ack: ci + 1001, win: 65535, wscale: -1})
	tr.wantInvalid(0)
	return tr
}

func TestWindowChecks(t *testing.T) {
	const ci, si = 1000, 500000
	tests := []struct {
		name        string
		s           seg
		wantInvalid InvalidReason
		wantIgnored bool
	}{
		{"in window", seg{flags: fPA, seq: ci + 1001, ack: si + 1, win: 1024, len: 1000}, 0, false},
		{"seq beyond window", seg{flags: fPA, seq: ci + 1001 + 200000, ack: si + 1, win: 1024, len: 10}, ReasonTCPSeqOverUpper, false},
		{"acks unseen data", seg{flags: fA, seq: ci + 1001, ack: si + 5000, win: 1024}, ReasonTCPAckOverUpper, false},
		{"recent retransmission (inside the receiver window)", seg{flags: fPA, seq: ci + 1, ack: si + 1, win: 1024, len: 1000}, 0, false},
		{"overshoot within receiver window", seg{flags: fPA, seq: ci + 1001 + 65536, ack: si + 1, win: 1024, len: 100}, 0, true},
		{"ack too old", seg{flags: fA, seq: ci + 1001, ack: si + 1 - 70000, win: 1024}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := established(t, ci, si)
			tt.s.wscale = -1
			r := tr.send(client, tt.s)
			if tt.wantInvalid != 0 {
				if r.State != StateInvalid || r.Reason != tt.wantInvalid {
					t.Fatalf("got %v/%v, want INVALID/%v", r.State, r.Reason, tt.wantInvalid)
				}
				return
			}
			if r.State == StateInvalid {
				t.Fatalf("got INVALID (%v)", r.Reason)
			}
			if r.Ignored != tt.wantIgnored {
				t.Fatalf("Ignored %v, want %v", r.Ignored, tt.wantIgnored)
			}
		})
	}
}

// An old retransmission (entirely before the receiver's window) is ignored.
func TestOldRetransmissionIgnored(t *testing.T) {
	tr := established(t, 1000, 500000)
	// Push the sender's td_end far ahead, all ACKed.
	seq := uint32(1001)
	for i := 0; i < 80; i++ {
		tr.send(client, seg{flags: fPA, seq: seq, ack: 500001, win: 1024, wscale: -1, len: 1000})
		seq += 1000
		tr.send(server, seg{flags: fA, seq: 500001, ack: seq, win: 65535, wscale: -1})
	}
	r := tr.send(client, seg{flags: fPA, seq: 1001, ack: 500001, win: 1024, wscale: -1, len: 1000})
	if r.State == StateInvalid || !r.Ignored {
		t.Fatalf("got %+v, want ignored", r)
	}
	tr.wantInvalid(0)
}

func TestWindowScale(t *testing.T) {
	tests := []struct {
		name               string
		cws, sws           int
		wantCScale, wantSS uint8
	}{
		{"both", 7, 9, 7, 9},
		{"clamped to 14", 20, 15, 14, 14},
		{"client only", 7, -1, 0, 0},
		{"server only", -1, 7, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker(t)
			tr.handshake(1000, 2000, tt.cws, tt.sws)
			if got := tr.c.TCP.Peer[Original].Scale; got != tt.wantCScale {
				t.Errorf("client scale %d, want %d", got, tt.wantCScale)
			}
			if got := tr.c.TCP.Peer[Reply].Scale; got != tt.wantSS {
				t.Errorf("server scale %d, want %d", got, tt.wantSS)
			}
		})
	}
	// The scale widens the window: with server scale 7, a 1000-byte raw
	// window lets the client send 100000 bytes ahead.
	tr := newTracker(t)
	tr.handshake(1000, 2000, 7, 7)
	tr.send(server, seg{flags: fA, seq: 2001, ack: 1001, win: 1000, wscale: -1})
	if r := tr.send(client, seg{flags: fPA, seq: 1001 + 100000, ack: 2001, win: 1000, wscale: -1, len: 10}); r.State == StateInvalid {
		t.Fatalf("scaled window: INVALID (%v)", r.Reason)
	}
	tr2 := newTracker(t)
	tr2.handshake(1000, 2000, -1, -1)
	tr2.send(server, seg{flags: fA, seq: 2001, ack: 1001, win: 1000, wscale: -1})
	if r := tr2.send(client, seg{flags: fPA, seq: 1001 + 200000, ack: 2001, win: 1000, wscale: -1, len: 10}); r.State != StateInvalid {
		t.Fatalf("unscaled window: %+v, want INVALID", r)
	}
}

// SACK blocks count only when the receiver sent SACK_PERM.
func TestSACK(t *testing.T) {
	for _, perm := range []bool{true, false} {
		tr := newTracker(t)
		tr.send(client, seg{flags: fS, seq: 1000, win: 65535, wscale: -1, sackPerm: perm})
		tr.send(server, seg{flags: fSA, seq: 2000, ack: 1001, win: 65535, wscale: -1, sackPerm: perm})
		tr.send(client, seg{flags: fA, seq: 1001, ack: 2001, win: 65535, wscale: -1})
		tr.send(server, seg{flags: fPA, seq: 2001, ack: 1001, win: 65535, wscale: -1, len: 3000})
		// Client ACKs 2001 and SACKs beyond what the server sent.
		r := tr.send(client, seg{flags: fA, seq: 1001, ack: 2001, win: 65535, wscale: -1,
			sack: []packet.SACKBlock{{Left: 3001, Right: 9001}}})
		if perm && (r.State != StateInvalid || r.Reason != ReasonTCPAckOverUpper) {
			t.Fatalf("SACK_PERM: %v/%v, want INVALID/%v", r.State, r.Reason, ReasonTCPAckOverUpper)
		}
		if !perm && r.State == StateInvalid {
			t.Fatalf("no SACK_PERM: INVALID (%v), want SACK ignored", r.Reason)
		}
		// An in-range SACK widens td_maxwin by the SACKed span.
		r = tr.send(client, seg{flags: fA, seq: 1001, ack: 2001, win: 100, wscale: -1,
			sack: []packet.SACKBlock{{Left: 3001, Right: 5001}}})
		if r.State == StateInvalid {
			t.Fatalf("perm %v: in-range SACK INVALID (%v)", perm, r.Reason)
		}
	}
}

// Sequence numbers wrap: a connection whose ISNs sit just below 2^32
// carries data across the wrap.
func TestWraparound(t *testing.T) {
	const ci, si = 0xFFFFF000, 0xFFFFFF00
	tr := newTracker(t)
	tr.handshake(ci, si, -1, -1)
	seq, sack := uint32(ci+1), uint32(si+1)
	for i := 0; i < 10; i++ {
		if r := tr.send(client, seg{flags: fPA, seq: seq, ack: sack, win: 65535, wscale: -1, len: 1400}); r.State == StateInvalid || r.Ignored {
			t.Fatalf("client segment %d at %#x: %+v", i, seq, r)
		}
		seq += 1400
		if r := tr.send(server, seg{flags: fPA, seq: sack, ack: seq, win: 65535, wscale: -1, len: 100}); r.State == StateInvalid || r.Ignored {
			t.Fatalf("server segment %d at %#x: %+v", i, sack, r)
		}
		sack += 100
	}
	if seq >= ci || sack >= si {
		t.Fatalf("test did not wrap: client %#x server %#x", seq, sack)
	}
	if r := tr.send(client, seg{flags: fPA, seq: seq + 1000000, ack: sack, win: 65535, wscale: -1, len: 10}); r.State != StateInvalid {
		t.Fatalf("beyond window after wrap: %+v, want INVALID", r)
	}
	tr.wantState("end", TCPEstablished)
}

func TestLiberalAndWindowTrackingOff(t *testing.T) {
	for _, mode := range []string{"be_liberal", "window_tracking_off"} {
		t.Run(mode, func(t *testing.T) {
			tr := newTracker(t)
			if mode == "be_liberal" {
				tr.cfg.BeLiberal = true
			} else {
				tr.cfg.WindowTracking = false
			}
			tr.handshake(1000, 500000, -1, -1)
			if r := tr.send(client, seg{flags: fPA, seq: 1001 + 5000000, ack: 500001, win: 1024, wscale: -1, len: 10}); r.State == StateInvalid || r.Ignored {
				t.Fatalf("out-of-window data: %+v, want accepted", r)
			}
			if r := tr.send(client, seg{flags: fFA, seq: 77, ack: 99, win: 1024, wscale: -1}); r.State == StateInvalid {
				t.Fatalf("wild FIN: INVALID (%v)", r.Reason)
			}
			tr.wantState("FIN", TCPFinWait)
			// The table still applies.
			if r := tr.send(client, seg{flags: fSA, seq: 1000, ack: 500001, win: 1024, wscale: -1}); r.State != StateInvalid {
				t.Fatalf("client SYN/ACK: %+v, want INVALID", r)
			}
		})
	}
	// An RST before td_maxack is INVALID with be_liberal, not with
	// window tracking off or ignore_invalid_rst.
	for _, tt := range []struct {
		name string
		set  func(*Config)
		want bool
	}{
		{"be_liberal", func(c *Config) { c.BeLiberal = true }, true},
		{"window_tracking_off", func(c *Config) { c.WindowTracking = false }, false},
		{"ignore_invalid_rst", func(c *Config) { c.IgnoreInvalidRST = true }, false},
	} {
		tr := established(t, 1000, 500000)
		tt.set(&tr.cfg)
		r := tr.send(server, seg{flags: fR, seq: 42, wscale: -1})
		if got := r.State == StateInvalid; got != tt.want {
			t.Errorf("%s: RST before maxack INVALID=%v, want %v", tt.name, got, tt.want)
		}
	}
}

// Three identical ACK retransmissions cut the timeout to max_retrans.
func TestRetransTimeout(t *testing.T) {
	tr := established(t, 1000, 500000)
	// established() ended with this ACK; repeat it three times.
	a := seg{flags: fA, seq: 500001, ack: 2001, win: 65535, wscale: -1}
	if got := tr.timeout(); got != 432000 {
		t.Fatalf("timeout %d, want 432000", got)
	}
	for i := 1; i <= 3; i++ {
		tr.send(server, a)
	}
	if tr.c.TCP.Retrans != 3 {
		t.Fatalf("retrans %d, want 3", tr.c.TCP.Retrans)
	}
	if got := tr.timeout(); got != 300 {
		t.Fatalf("timeout %d after 3 retransmissions, want 300", got)
	}
	// Unacknowledged data also gives 300; zero window too.
	tr.send(client, seg{flags: fPA, seq: 2001, ack: 500001, win: 1024, wscale: -1, len: 10})
	if got := tr.timeout(); got != 300 {
		t.Fatalf("timeout %d with unacked data, want 300", got)
	}
	tr.send(server, seg{flags: fA, seq: 500001, ack: 2011, win: 0, wscale: -1})
	if got := tr.timeout(); got != 300 {
		t.Fatalf("timeout %d with zero window, want 300", got)
	}
}

// Closing: FIN_WAIT sets CLOSE_INIT on the sender, and the full close ends
// in TIME_WAIT 120 s.
func TestClose(t *testing.T) {
	tr := established(t, 1000, 500000)
	tr.send(client, seg{flags: fFA, seq: 2001, ack: 500001, win: 1024, wscale: -1})
	tr.wantState("FIN", TCPFinWait)
	if tr.c.TCP.Peer[Original].Flags&TCPFlagCloseInit == 0 {
		t.Fatalf("CLOSE_INIT not set on the FIN sender")
	}
	tr.send(server, seg{flags: fA, seq: 500001, ack: 2002, win: 65535, wscale: -1})
	tr.wantState("ACK", TCPCloseWait)
	tr.send(server, seg{flags: fFA, seq: 500001, ack: 2002, win: 65535, wscale: -1})
	tr.wantState("FIN back", TCPLastAck)
	if got := tr.timeout(); got != 30 {
		t.Fatalf("LAST_ACK timeout %d, want 30", got)
	}
	tr.send(client, seg{flags: fA, seq: 2002, ack: 500002, win: 1024, wscale: -1})
	tr.wantState("last ACK", TCPTimeWait)
	if got := tr.timeout(); got != 120 {
		t.Fatalf("TIME_WAIT timeout %d, want 120", got)
	}
	// A new SYN reopens.
	r := tr.send(client, seg{flags: fS, seq: 90000, win: 1024, wscale: -1})
	if r.State != StateNew || tr.c.State != TCPSynSent || tr.c.Status != 0 {
		t.Fatalf("reopen: %v state %v status %#x", r.State, tr.c.State, tr.c.Status)
	}
	tr.wantInvalid(0)
}

// Challenge ACK in LAST_ACK: a SYN is ignored, the peer's ACK answering it
// does not count as the last ACK.
func TestChallengeAckInLastAck(t *testing.T) {
	tr := established(t, 1000, 500000)
	tr.send(client, seg{flags: fFA, seq: 2001, ack: 500001, win: 1024, wscale: -1})
	tr.send(server, seg{flags: fFA, seq: 500001, ack: 2002, win: 65535, wscale: -1})
	tr.wantState("FINs", TCPLastAck)
	if r := tr.send(client, seg{flags: fS, seq: 7777, win: 1024, wscale: -1}); !r.Ignored {
		t.Fatalf("SYN in LAST_ACK: %+v, want ignored", r)
	}
	if r := tr.send(server, seg{flags: fA, seq: 500002, ack: 2002, win: 65535, wscale: -1}); !r.Ignored {
		t.Fatalf("challenge ACK: %+v, want ignored", r)
	}
	tr.wantState("challenge ACK", TCPLastAck)
}

// Simultaneous open: SYN both ways → SYN_SENT2 → SYN_RECV → ESTABLISHED.
func TestSimultaneousOpen(t *testing.T) {
	tr := newTracker(t)
	tr.send(client, seg{flags: fS, seq: 1000, win: 65535, wscale: -1})
	tr.send(server, seg{flags: fS, seq: 2000, win: 65535, wscale: -1})
	tr.wantState("reply SYN", TCPSynSent2)
	tr.send(client, seg{flags: fSA, seq: 1000, ack: 2001, win: 65535, wscale: -1})
	tr.wantState("SYN/ACK", TCPSynRecv)
	tr.send(server, seg{flags: fA, seq: 2001, ack: 1001, win: 65535, wscale: -1})
	tr.wantState("reply ACK", TCPEstablished)
	tr.wantInvalid(0)
}

// Resync: a SYN/ACK answering a SYN we ignored rebuilds the window data.
func TestSynAckResync(t *testing.T) {
	tr := established(t, 1000, 500000)
	tr.send(client, seg{flags: fS, seq: 9000000, win: 4000, wscale: 5})
	r := tr.send(server, seg{flags: fSA, seq: 7000000, ack: 9000001, win: 5000, wscale: 6})
	if r.State == StateInvalid || r.Ignored {
		t.Fatalf("resync SYN/ACK: %+v", r)
	}
	tr.wantState("resync", TCPSynRecv)
	if p := tr.c.TCP.Peer[Original]; p.End != 9000001 || p.Scale != 5 {
		t.Fatalf("client peer after resync: %+v", p)
	}
	tr.send(client, seg{flags: fA, seq: 9000001, ack: 7000001, win: 100, wscale: -1})
	tr.wantState("ACK", TCPEstablished)
	tr.wantInvalid(0)
}

func TestConnSize(t *testing.T) {
	if got := unsafe.Sizeof(Conn{}); got > 72 {
		t.Fatalf("unsafe.Sizeof(Conn{}) = %d, want ≤ 72 (entry budget: 128 bytes)", got)
	}
}

func TestUpdateEstablishedAllocs(t *testing.T) {
	tr := established(t, 1000, 500000)
	p := seg{flags: fA, seq: 2001, ack: 500001, win: 1024, wscale: -1}.packet()
	cfg := DefaultConfig()
	if n := testing.AllocsPerRun(1000, func() { Update(&tr.c, p, Original, tr.now, &cfg) }); n != 0 {
		t.Fatalf("Update allocates %v per packet, want 0", n)
	}
}

func BenchmarkUpdateEstablished(b *testing.B) {
	tr := newTracker(b)
	tr.handshake(1000, 500000, 7, 7)
	pd := seg{flags: fPA, seq: 1001, ack: 500001, win: 1024, wscale: -1, len: 1400}.packet()
	pa := seg{flags: fA, seq: 500001, ack: 1001, win: 1024, wscale: -1}.packet()
	cfg := DefaultConfig()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// Data one way, its ACK the other: both window updates run.
		pd.TCP.Seq += 1400
		pa.TCP.Ack = pd.TCP.Seq + 1400
		r1 := Update(&tr.c, pd, Original, tr.now, &cfg)
		r2 := Update(&tr.c, pa, Reply, tr.now, &cfg)
		if r1.State != StateEstablished || r2.State != StateEstablished || r1.Ignored || r2.Ignored {
			b.Fatalf("iteration %d: %+v %+v", i, r1, r2)
		}
	}
	b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "pkts/s")
}
