package statemachine

import "testing"

// TestRSTAfterLetThroughSYN pins the RST that follows a SYN the tracker let
// through, in SYN_SENT (after a SYN/ACK ignored for its ack) and in
// SYN_SENT2 (simultaneous open). The kernel skips the window check for
// such a RST only when it comes from the other side than that SYN (kernel
// nf_conntrack_tcp_packet, case TCP_CONNTRACK_CLOSE: SEEN_REPLY, last_index
// == TCP_SYN_SET, last_dir != dir, ack == last_end; upstream bed6e04be8e6);
// a RST from the SYN's own sender goes through tcp_in_window. Every row was
// checked on Linux 6.18 through conformance's kernel oracle (the first two
// are conformance's rst_in_syn_sent_after_ignored_synack and
// rst_in_syn_sent2, found by TestDifferentialRandomTCP seed 4).
func TestRSTAfterLetThroughSYN(t *testing.T) {
	const isn, sisn = 3513383091, 2915748989 // client and server ISNs
	// SYN, then a SYN/ACK whose ack lies far below the SYN's end: window
	// check IV ignores it (ESTABLISHED, no state change) but SEEN_REPLY is
	// set and the SYN stays the last packet (last_index SYN, last_dir
	// original).
	ignoredSynAck := func(ack uint32) []step {
		return []step{
			{client, seg{flags: fS, seq: isn, win: 17294, wscale: -1}},
			{server, seg{flags: fSA, seq: sisn, ack: ack, win: 15401, wscale: -1}},
		}
	}
	// SYN, then a SYN from the server: SYN_SENT2, last_index SYN, last_dir
	// reply.
	simultaneous := []step{
		{client, seg{flags: fS, seq: isn, win: 14813, wscale: -1}},
		{server, seg{flags: fS, seq: sisn, win: 58890, wscale: -1}},
	}
	const wrongAck = 2829595291 // below isn+1-66000: ignored by check IV
	tests := []struct {
		name    string
		before  []step
		rst     step
		ct      CtState
		reason  InvalidReason
		ignored bool
		state   TCPState
		timeout int64
	}{
		// Past the SYN's end by more than the server's window: check I.
		{"SYN_SENT: client RST past the window", ignoredSynAck(wrongAck),
			step{client, seg{flags: fR, seq: isn + 31505, win: 17294, wscale: -1}},
			StateInvalid, ReasonTCPSeqOverUpper, false, TCPSynSent, 120},
		// Past the SYN's end by less than the server's window: the
		// "bytes more than expected" case of check I, ignored.
		{"SYN_SENT: client RST overshooting", ignoredSynAck(wrongAck),
			step{client, seg{flags: fR, seq: isn + 15000, win: 17294, wscale: -1}},
			StateEstablished, ReasonNone, true, TCPSynSent, 120},
		{"SYN_SENT: client RST at the SYN's end", ignoredSynAck(wrongAck),
			step{client, seg{flags: fR, seq: isn + 1, win: 17294, wscale: -1}},
			StateEstablished, ReasonNone, false, TCPClose, 10},
		// Below the window (check II): ignored. Had the window check been
		// skipped this would close.
		{"SYN_SENT: client RST below the window", ignoredSynAck(isn + 1 - 70000),
			step{client, seg{flags: fR, seq: isn - 70001, win: 17294, wscale: -1}},
			StateEstablished, ReasonNone, true, TCPSynSent, 120},
		{"SYN_SENT2: server RST inside the window", simultaneous,
			step{server, seg{flags: fR, seq: sisn + 1121, win: 58890, wscale: -1}},
			StateEstablished, ReasonNone, true, TCPSynSent2, 120},
		{"SYN_SENT2: server RST past the window", simultaneous,
			step{server, seg{flags: fR, seq: sisn + 100001, win: 58890, wscale: -1}},
			StateInvalid, ReasonTCPSeqOverUpper, false, TCPSynSent2, 120},
		{"SYN_SENT2: server RST at its SYN's end", simultaneous,
			step{server, seg{flags: fR, seq: sisn + 1, win: 58890, wscale: -1}},
			StateEstablished, ReasonNone, false, TCPClose, 10},
		// From the other side than the last SYN, ack == last_end (0):
		// the window check is skipped, CLOSE even out of window.
		{"SYN_SENT2: client RST out of window", simultaneous,
			step{client, seg{flags: fR, seq: isn + 1000000, win: 14813, wscale: -1}},
			StateEstablished, ReasonNone, false, TCPClose, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker(t)
			for i, st := range tc.before {
				if r := tr.send(st.from, st.s); r.State == StateInvalid {
					t.Fatalf("setup packet %d: got INVALID (%v), want accepted", i+1, r.Reason)
				}
			}
			tr.wantStatus("before the RST", true, false)
			r := tr.send(tc.rst.from, tc.rst.s)
			if r.State != tc.ct || r.Reason != tc.reason {
				t.Errorf("RST: got %v (%v), want %v (%v)", r.State, r.Reason, tc.ct, tc.reason)
			}
			if r.Ignored != tc.ignored || r.Kill || r.Reopen {
				t.Errorf("RST: got Ignored %v Kill %v Reopen %v, want Ignored %v, no Kill, no Reopen", r.Ignored, r.Kill, r.Reopen, tc.ignored)
			}
			tr.wantState("after the RST", tc.state)
			if got := tr.timeout(); got != tc.timeout {
				t.Errorf("timeout after the RST: got %d s, want %d s", got, tc.timeout)
			}
			// The RST path is on the hot path too: no allocation (on a
			// copy, so a closing row can run again).
			p := tc.rst.s.packet()
			dir := Dir(tc.rst.from ^ tr.origSide)
			c := tr.c
			if n := testing.AllocsPerRun(100, func() { c = tr.c; Update(&c, p, dir, tr.now, &tr.cfg) }); n != 0 {
				t.Errorf("Update of the RST: got %v allocations, want 0", n)
			}
		})
	}
}

// step is one segment of a test sequence and the side that sends it.
type step struct {
	from int
	s    seg
}

// TestSynAckResyncKeepsLiberal: a connection picked up mid-stream is
// liberal on both sides; an ignored SYN then the SYN/ACK answering it
// rebuild both sides (SYN_RECV), and the SYN/ACK's options must not clear
// BE_LIBERAL on the server side (kernel tcp_options keeps it), so the
// server's next segment, which ACKs client data the tracker never saw, is
// still accepted. From TestDifferentialRandomTCP seed 24 (client port
// 20349), checked on Linux 6.18.
func TestSynAckResyncKeepsLiberal(t *testing.T) {
	tr := newTracker(t)
	steps := []struct {
		name    string
		from    int
		s       seg
		ct      CtState
		reason  InvalidReason
		state   TCPState
		liberal [2]bool // BE_LIBERAL on the original and reply side after
	}{
		{"pickup ACK", client, seg{flags: fA, seq: 4043494459, ack: 3344699281, win: 25441, wscale: -1},
			StateNew, ReasonNone, TCPEstablished, [2]bool{true, true}},
		{"SYN (ignored)", client, seg{flags: fS, seq: 4043496282, win: 25441, wscale: 7},
			StateNew, ReasonNone, TCPEstablished, [2]bool{true, true}},
		// Answers the ignored SYN: the client side is rebuilt from the
		// SYN (not liberal), the server side re-initialised.
		{"SYN/ACK with options", server, seg{flags: fSA, seq: 3344699282, ack: 4043496283, win: 33725, wscale: 7, sackPerm: true},
			StateEstablished, ReasonNone, TCPSynRecv, [2]bool{false, true}},
		{"server FIN acking unseen data", server, seg{flags: fFA, seq: 3344699283, ack: 4043497013, win: 33725, wscale: -1, len: 330},
			StateEstablished, ReasonNone, TCPFinWait, [2]bool{false, true}},
	}
	for _, st := range steps {
		r := tr.send(st.from, st.s)
		if r.State != st.ct || r.Reason != st.reason {
			t.Fatalf("%s: got %v (%v), want %v (%v)", st.name, r.State, r.Reason, st.ct, st.reason)
		}
		tr.wantState(st.name, st.state)
		for d, want := range st.liberal {
			if got := tr.c.TCP.Peer[d].Flags&TCPFlagBeLiberal != 0; got != want {
				t.Fatalf("%s: BE_LIBERAL in direction %d (0 original, 1 reply): got %v, want %v", st.name, d, got, want)
			}
		}
	}
}
