package statemachine

import "testing"

// Ports of the kernel selftests tools/testing/selftests/net/netfilter/
// packetdrill/conntrack_*.pkt. "local" is the host running packetdrill
// (conntrack's host), "remote" the scripted peer. Local sequence numbers
// are the script's relative ones plus localISN; remote ones are as written.

const localISN = 3_000_000_000 // exercises wraparound of the relative numbers too

// conntrack_ack_loss_stall.pkt: after 46 ACKed segments the peer
// retransmits 1:1461; it must be IGNORED, not INVALID.
func TestPacketdrillAckLossStall(t *testing.T) {
	tr := newTracker(t)
	remote, local := client, server
	tr.send(remote, seg{flags: fS, seq: 0, win: 32792, wscale: -1})
	tr.send(local, seg{flags: fSA, seq: localISN, ack: 1, win: 65535, wscale: -1})
	tr.send(remote, seg{flags: fA, seq: 1, ack: localISN + 1, win: 65535, wscale: -1})
	tr.wantState("handshake", TCPEstablished)
	seq := uint32(1)
	for i := 0; i < 46; i++ {
		if r := tr.send(remote, seg{flags: fPA, seq: seq, ack: localISN + 1, win: 257, wscale: -1, len: 1460}); r.State != StateEstablished || r.Ignored {
			t.Fatalf("segment %d: %+v", i, r)
		}
		seq += 1460
		tr.send(local, seg{flags: fA, seq: localISN + 1, ack: seq, win: 65535, wscale: -1})
	}
	if seq != 67161 {
		t.Fatalf("script arithmetic: seq %d, want 67161", seq)
	}
	r := tr.send(remote, seg{flags: fPA, seq: 1, ack: localISN + 1, win: 257, wscale: -1, len: 1460})
	if r.State == StateInvalid || !r.Ignored {
		t.Fatalf("retransmitted 1:1461: %+v, want ignored, not INVALID", r)
	}
	tr.send(local, seg{flags: fA, seq: localISN + 1, ack: 67161, win: 65535, wscale: -1})
	tr.wantInvalid(0)
	tr.wantState("end", TCPEstablished)
}

// localHandshake is the connect() opening of the client-side scripts: local
// SYN with wscale 8 and sackOK, remote SYN/ACK without options, local ACK,
// three 1000-byte remote segments and their ACKs.
func localHandshake(tr *tracker) {
	local, remote := client, server
	tr.send(local, seg{flags: fS, seq: localISN, win: 65535, wscale: 8, sackPerm: true})
	tr.send(remote, seg{flags: fSA, seq: 0, ack: localISN + 1, win: 65535, wscale: -1})
	tr.send(local, seg{flags: fA, seq: localISN + 1, ack: 1, win: 65535, wscale: -1})
	for s := uint32(1); s < 3001; s += 1000 {
		tr.send(remote, seg{flags: fA, seq: s, ack: localISN + 1, win: 65535, wscale: -1, len: 1000})
	}
	for a := uint32(1001); a <= 3001; a += 1000 {
		tr.send(local, seg{flags: fA, seq: localISN + 1, ack: a, win: 65535, wscale: -1})
	}
}

// conntrack_inexact_rst.pkt: peer FIN → CLOSE_WAIT, local RST → CLOSE, a
// stray peer RST with another seq is not INVALID.
func TestPacketdrillInexactRst(t *testing.T) {
	tr := newTracker(t)
	local, remote := client, server
	localHandshake(tr)
	tr.send(local, seg{flags: fPA, seq: localISN + 1, ack: 3001, win: 65535, wscale: -1, len: 1000})
	tr.send(remote, seg{flags: fFA, seq: 3001, ack: localISN + 1001, win: 65535, wscale: -1})
	tr.wantState("peer FIN", TCPFinWait)
	tr.send(local, seg{flags: fA, seq: localISN + 1001, ack: 3002, win: 65535, wscale: -1})
	tr.wantState("ACK of FIN", TCPCloseWait)
	tr.send(local, seg{flags: fRA, seq: localISN + 1001, ack: 3002, win: 65535, wscale: -1})
	tr.wantState("local RST", TCPClose)
	if r := tr.send(remote, seg{flags: fR, seq: 2001, win: 0, wscale: -1}); r.State == StateInvalid {
		t.Fatalf("stray RST: INVALID (%v)", r.Reason)
	}
	tr.wantState("stray RST", TCPClose)
	tr.wantInvalid(0)
}

// conntrack_rst_invalid.pkt: next expected peer seq 3001; RSTs with seq 0,
// 1000000, 42 and 3000 are INVALID and keep ESTABLISHED; RST 3001 closes.
func TestPacketdrillRstInvalid(t *testing.T) {
	tr := newTracker(t)
	local, remote := client, server
	localHandshake(tr)
	for i, s := range []uint32{0, 1000000, 42} {
		if r := tr.send(remote, seg{flags: fR, seq: s, win: 0, wscale: -1}); r.State != StateInvalid {
			t.Fatalf("RST %d (seq %d): %+v, want INVALID", i, s, r)
		}
		tr.wantState("after out-of-window RST", TCPEstablished)
	}
	tr.send(local, seg{flags: fPA, seq: localISN + 1, ack: 3001, win: 65535, wscale: -1, len: 1000})
	tr.send(remote, seg{flags: fA, seq: 3001, ack: localISN + 1001, win: 65535, wscale: -1})
	if r := tr.send(remote, seg{flags: fRA, seq: 3000, ack: localISN + 1001, win: 0, wscale: -1}); r.State != StateInvalid {
		t.Fatalf("RST 3000: %+v, want INVALID", r)
	}
	tr.wantState("after RST 3000", TCPEstablished)
	if r := tr.send(remote, seg{flags: fRA, seq: 3001, ack: localISN + 1001, win: 0, wscale: -1}); r.State == StateInvalid {
		t.Fatalf("RST 3001: INVALID (%v)", r.Reason)
	}
	tr.wantState("exact RST", TCPClose)
	tr.wantInvalid(4)
}

// conntrack_syn_challenge_ack.pkt: SYN, challenge ACK of an old
// incarnation, RST with seq = its ack, SYN again: a fresh SYN_SENT
// [UNREPLIED] entry, then ESTABLISHED [ASSURED], no INVALID.
func TestPacketdrillSynChallengeAck(t *testing.T) {
	tr := newTracker(t)
	local, remote := client, server
	syn := seg{flags: fS, seq: localISN, win: 65535, wscale: 8, sackPerm: true}
	tr.send(local, syn)
	if r := tr.send(remote, seg{flags: fA, seq: 145824453, ack: localISN + 643160523, win: 240, wscale: -1}); !r.Ignored {
		t.Fatalf("challenge ACK: %+v, want ignored", r)
	}
	if r := tr.send(local, seg{flags: fR, seq: localISN + 643160523, win: 0, wscale: -1}); r.State == StateInvalid {
		t.Fatalf("RST: INVALID (%v)", r.Reason)
	}
	r := tr.send(local, syn)
	if r.State != StateNew {
		t.Fatalf("SYN again: %v, want NEW", r.State)
	}
	tr.wantState("SYN again", TCPSynSent)
	tr.wantStatus("SYN again", false, false)
	tr.send(remote, seg{flags: fSA, seq: 0, ack: localISN + 1, win: 250, wscale: 0})
	tr.send(local, seg{flags: fA, seq: localISN + 1, ack: 1, win: 256, wscale: -1})
	tr.wantState("3whs", TCPEstablished)
	tr.wantStatus("3whs", true, true)
	tr.wantInvalid(0)
}

// conntrack_synack_old.pkt: a SYN/ACK with a wrong ack is INVALID (once),
// the SYN retransmission keeps SYN_SENT [UNREPLIED], the right SYN/ACK and
// ACK give ESTABLISHED [ASSURED].
func TestPacketdrillSynackOld(t *testing.T) {
	tr := newTracker(t)
	local, remote := client, server
	syn := seg{flags: fS, seq: localISN, win: 65535, wscale: 8, sackPerm: true}
	tr.send(local, syn)
	if r := tr.send(remote, seg{flags: fSA, seq: 145824453, ack: localISN + 643160523, win: 240, wscale: 0}); r.State != StateInvalid {
		t.Fatalf("old SYN/ACK: %+v, want INVALID", r)
	}
	tr.send(local, syn)
	tr.wantState("SYN retransmit", TCPSynSent)
	tr.wantStatus("SYN retransmit", false, false)
	if r := tr.send(remote, seg{flags: fSA, seq: 145758918, ack: localISN + 1, win: 250, wscale: 0}); r.State == StateInvalid {
		t.Fatalf("right SYN/ACK: INVALID (%v)", r.Reason)
	}
	tr.send(local, seg{flags: fPA, seq: localISN + 1, ack: 145758919, win: 256, wscale: -1, len: 1})
	tr.wantState("data", TCPEstablished)
	tr.wantStatus("data", true, true)
	tr.wantInvalid(1)
}

// conntrack_synack_reuse.pkt: ESTABLISHED; a new SYN from the peer is
// ignored; the challenge ACK passes; the peer's RST closes; the SYN again
// replaces the entry and the SYN/ACK gives SYN_RECV; no INVALID.
func TestPacketdrillSynackReuse(t *testing.T) {
	tr := newTracker(t)
	remote, local := client, server
	tr.send(remote, seg{flags: fS, seq: 0, win: 32792, wscale: 7})
	tr.send(local, seg{flags: fSA, seq: localISN, ack: 1, win: 65535, wscale: 8})
	tr.send(remote, seg{flags: fA, seq: 1, ack: localISN + 1, win: 257, wscale: -1})
	tr.send(remote, seg{flags: fPA, seq: 1, ack: localISN + 1, win: 257, wscale: -1, len: 100})
	tr.send(local, seg{flags: fA, seq: localISN + 1, ack: 101, win: 256, wscale: -1})
	tr.wantState("established", TCPEstablished)
	if r := tr.send(remote, seg{flags: fS, seq: 2000, win: 32792, wscale: 7}); !r.Ignored {
		t.Fatalf("new SYN: %+v, want ignored", r)
	}
	if r := tr.send(local, seg{flags: fA, seq: localISN + 1, ack: 101, win: 256, wscale: -1}); r.State == StateInvalid {
		t.Fatalf("challenge ACK: INVALID (%v)", r.Reason)
	}
	tr.send(remote, seg{flags: fRA, seq: 101, ack: localISN + 1, win: 257, wscale: -1})
	tr.wantState("RST", TCPClose)
	r := tr.send(remote, seg{flags: fS, seq: 2000, win: 32792, wscale: 0})
	if r.State != StateNew {
		t.Fatalf("SYN again: %v (%v), want NEW", r.State, r.Reason)
	}
	tr.wantState("SYN again", TCPSynSent)
	tr.send(local, seg{flags: fSA, seq: localISN + 99999, ack: 2001, win: 65535, wscale: 8})
	tr.wantState("SYN/ACK", TCPSynRecv)
	tr.wantInvalid(0)
}
