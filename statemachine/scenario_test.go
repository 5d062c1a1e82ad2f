package statemachine

import (
	"testing"

	"github.com/statewire/statewire/packet"
)

// TestSSHWalkthrough is the seeds' example: SYN → SYN_SENT [UNREPLIED]
// 120 s, SYN/ACK → SYN_RECV 60 s, ACK → ESTABLISHED [ASSURED] 432000 s.
func TestSSHWalkthrough(t *testing.T) {
	tr := newTracker(t)
	steps := []struct {
		name      string
		from      int
		s         seg
		wantCt    CtState
		state     TCPState
		timeout   int64
		seenReply bool
		assured   bool
	}{
		{"SYN", client, seg{flags: fS, seq: 100, win: 64240, wscale: 7, sackPerm: true}, StateNew, TCPSynSent, 120, false, false},
		{"SYN/ACK", server, seg{flags: fSA, seq: 900, ack: 101, win: 65160, wscale: 7, sackPerm: true}, StateEstablished, TCPSynRecv, 60, true, false},
		{"ACK", client, seg{flags: fA, seq: 101, ack: 901, win: 502, wscale: -1}, StateEstablished, TCPEstablished, 432000, true, true},
		{"data", client, seg{flags: fPA, seq: 101, ack: 901, win: 502, wscale: -1, len: 21}, StateEstablished, TCPEstablished, 300, true, true},
		{"ack of data", server, seg{flags: fA, seq: 901, ack: 122, win: 509, wscale: -1}, StateEstablished, TCPEstablished, 432000, true, true},
	}
	for _, st := range steps {
		r := tr.send(st.from, st.s)
		if r.State != st.wantCt {
			t.Fatalf("%s: ctstate %v (%v), want %v", st.name, r.State, r.Reason, st.wantCt)
		}
		tr.wantState(st.name, st.state)
		if got := tr.timeout(); got != st.timeout {
			t.Fatalf("%s: timeout %d, want %d", st.name, got, st.timeout)
		}
		tr.wantStatus(st.name, st.seenReply, st.assured)
	}
}

// TestRefusedConnection: a RST answering the SYN deletes the entry at once.
func TestRefusedConnection(t *testing.T) {
	tr := newTracker(t)
	tr.send(client, seg{flags: fS, seq: 100, win: 64240, wscale: -1})
	r := tr.send(server, seg{flags: fRA, seq: 0, ack: 101, wscale: -1})
	if r.State != StateEstablished || !r.Kill {
		t.Fatalf("got %+v, want ESTABLISHED with Kill", r)
	}
	if tr.c.State != TCPClose {
		t.Fatalf("state %v, want CLOSE", tr.c.State)
	}
}

// TestSynRetransmitNoRefresh: a retransmitted SYN in SYN_SENT does not renew
// the timer.
func TestSynRetransmitNoRefresh(t *testing.T) {
	tr := newTracker(t)
	tr.send(client, seg{flags: fS, seq: 100, win: 64240, wscale: -1})
	exp := tr.c.Expires
	tr.now += 3 * sec
	r := tr.send(client, seg{flags: fS, seq: 100, win: 64240, wscale: -1})
	if r.State != StateNew || tr.c.Expires != exp {
		t.Fatalf("got %v, expires moved by %d ns; want NEW, unchanged", r.State, tr.c.Expires-exp)
	}
}

// TestLoosePickup: an ACK as first packet picks the connection up as
// ESTABLISHED, capped at 300 s until a reply, and becomes ASSURED with the
// first packet after the reply.
func TestLoosePickup(t *testing.T) {
	tr := newTracker(t)
	r := tr.send(client, seg{flags: fA, seq: 5000, ack: 9000, win: 1000, wscale: -1})
	if r.State != StateNew {
		t.Fatalf("pickup: %v (%v), want NEW", r.State, r.Reason)
	}
	tr.wantState("pickup", TCPEstablished)
	if got := tr.timeout(); got != 300 {
		t.Fatalf("pickup timeout %d, want 300", got)
	}
	if f := tr.c.TCP.Peer[Reply].Flags; f&TCPFlagBeLiberal == 0 || f&TCPFlagSACKPerm == 0 {
		t.Fatalf("reply flags %#x, want BE_LIBERAL|SACK_PERM", f)
	}
	tr.send(server, seg{flags: fA, seq: 9000, ack: 5000, win: 1000, wscale: -1})
	tr.wantStatus("reply", true, false) // the first reply sees "not replied"
	tr.send(client, seg{flags: fA, seq: 5000, ack: 9000, win: 1000, wscale: -1})
	tr.wantStatus("next original", true, true)

	tr2 := newTracker(t)
	tr2.cfg.Loose = false
	if r := tr2.send(client, seg{flags: fA, seq: 5000, ack: 9000, win: 1000, wscale: -1}); r.State != StateInvalid || r.Reason != ReasonTCPNewNotSyn {
		t.Fatalf("loose off: %v/%v, want INVALID/%v", r.State, r.Reason, ReasonTCPNewNotSyn)
	}
}

// TestNewInvalid: SYN/ACK, FIN, RST and bad flags never create an entry.
func TestNewInvalid(t *testing.T) {
	cfg := DefaultConfig()
	tests := []struct {
		flags uint8
		want  InvalidReason
	}{
		{fSA, ReasonTCPNewState},
		{fFA, ReasonTCPNewState},
		{fR, ReasonTCPNewState},
		{fRA, ReasonTCPNewState},
		{packet.TCPSyn | packet.TCPFin, ReasonTCPFlags},
		{packet.TCPSyn | packet.TCPRst, ReasonTCPFlags},
		{packet.TCPFin, ReasonTCPFlags},
		{0, ReasonTCPFlags},
		{0xff, ReasonTCPFlags},
	}
	for _, tt := range tests {
		var c Conn
		r := New(&c, seg{flags: tt.flags, seq: 1, wscale: -1}.packet(), 0, &cfg)
		if r.State != StateInvalid || r.Reason != tt.want {
			t.Errorf("flags %#x: got %v/%v, want INVALID/%v", tt.flags, r.State, r.Reason, tt.want)
		}
	}
	var c Conn
	p := seg{flags: fS, wscale: -1}.packet()
	p.TCP.DataOff = 16
	if r := New(&c, p, 0, &cfg); r.Reason != ReasonTCPDataOffset {
		t.Errorf("data offset 16: got %v, want %v", r.Reason, ReasonTCPDataOffset)
	}
	// ECE, CWR and PSH never matter.
	if r := New(&c, seg{flags: fS | packet.TCPEce | packet.TCPCwr, wscale: -1}.packet(), 0, &cfg); r.State != StateNew {
		t.Errorf("SYN|ECE|CWR: got %v, want NEW", r.State)
	}
}

// TestExpectedIsRelated: an expected connection is RELATED until the reply.
func TestExpectedIsRelated(t *testing.T) {
	cfg := DefaultConfig()
	c := Conn{Status: StatusExpected}
	if r := New(&c, seg{flags: fS, seq: 1, win: 100, wscale: -1}.packet(), 0, &cfg); r.State != StateRelated {
		t.Fatalf("first packet: %v, want RELATED", r.State)
	}
	if r := Update(&c, seg{flags: fSA, seq: 50, ack: 2, win: 100, wscale: -1}.packet(), Reply, 0, &cfg); r.State != StateEstablished {
		t.Fatalf("reply: %v, want ESTABLISHED", r.State)
	}
	if r := Update(&c, seg{flags: fA, seq: 2, ack: 51, win: 100, wscale: -1}.packet(), Original, 0, &cfg); r.State != StateEstablished {
		t.Fatalf("after reply: %v, want ESTABLISHED", r.State)
	}
}

func udpPkt(ver uint8) *packet.Packet {
	return &packet.Packet{IPVersion: ver, Proto: packet.ProtoUDP, SrcPort: 5353, DstPort: 53, PayloadLen: 40}
}

// TestUDPDNS: 30 s unreplied; the first reply still 30 s; more traffic
// after 2 s → 120 s and ASSURED.
func TestUDPDNS(t *testing.T) {
	cfg := DefaultConfig()
	var c Conn
	now := 50 * sec
	steps := []struct {
		name    string
		dt      int64
		dir     Dir
		want    CtState
		timeout int64
		assured bool
	}{
		{"query", 0, Original, StateNew, 30, false},
		{"query again", sec / 2, Original, StateNew, 30, false},
		{"reply", sec / 10, Reply, StateEstablished, 30, false},
		{"within 2 s", sec, Original, StateEstablished, 30, false},
		{"after 2 s", sec, Original, StateEstablished, 120, true},
		{"reply later", 10 * sec, Reply, StateEstablished, 120, true},
	}
	for i, st := range steps {
		now += st.dt
		var r Result
		if i == 0 {
			r = New(&c, udpPkt(4), now, &cfg)
		} else {
			r = Update(&c, udpPkt(4), st.dir, now, &cfg)
		}
		if r.State != st.want {
			t.Fatalf("%s: %v, want %v", st.name, r.State, st.want)
		}
		if got := (c.Expires - now) / sec; got != st.timeout {
			t.Fatalf("%s: timeout %d, want %d", st.name, got, st.timeout)
		}
		if got := c.Status&StatusAssured != 0; got != st.assured {
			t.Fatalf("%s: ASSURED %v, want %v", st.name, got, st.assured)
		}
	}
}

func icmpPkt(ver, typ uint8) *packet.Packet {
	proto := packet.ProtoICMP
	if ver == 6 {
		proto = packet.ProtoICMPv6
	}
	return &packet.Packet{IPVersion: ver, Proto: proto, ICMP: packet.ICMP{Type: typ, ID: 7, Seq: 1}}
}

// TestPing: request NEW, reply ESTABLISHED, 30 s both ways, never ASSURED;
// a reply type cannot create an entry.
func TestPing(t *testing.T) {
	cfg := DefaultConfig()
	for _, v := range []struct{ ver, req, rep uint8 }{{4, 8, 0}, {6, 128, 129}} {
		var c Conn
		if r := New(&c, icmpPkt(v.ver, v.req), 0, &cfg); r.State != StateNew || c.Expires != 30*sec {
			t.Fatalf("v%d request: %v expires %d, want NEW 30 s", v.ver, r.State, c.Expires)
		}
		if r := Update(&c, icmpPkt(v.ver, v.rep), Reply, 5*sec, &cfg); r.State != StateEstablished || c.Expires != 35*sec {
			t.Fatalf("v%d reply: %v expires %d, want ESTABLISHED 35 s", v.ver, r.State, c.Expires)
		}
		if r := Update(&c, icmpPkt(v.ver, v.req), Original, 6*sec, &cfg); r.State != StateEstablished || c.Status&StatusAssured != 0 {
			t.Fatalf("v%d second request: %v assured %v", v.ver, r.State, c.Status&StatusAssured != 0)
		}
		var d Conn
		if r := New(&d, icmpPkt(v.ver, v.rep), 0, &cfg); r.State != StateInvalid || r.Reason != ReasonICMPNotRequest {
			t.Fatalf("v%d reply first: %v/%v, want INVALID", v.ver, r.State, r.Reason)
		}
	}
}

// TestGeneric: 600 s, refreshed, never ASSURED.
func TestGeneric(t *testing.T) {
	cfg := DefaultConfig()
	var c Conn
	p := &packet.Packet{IPVersion: 4, Proto: 47}
	if r := New(&c, p, 0, &cfg); r.State != StateNew || c.Expires != 600*sec {
		t.Fatalf("new: %v %d", r.State, c.Expires)
	}
	if r := Update(&c, p, Reply, 10*sec, &cfg); r.State != StateEstablished || c.Expires != 610*sec || c.Status&StatusAssured != 0 {
		t.Fatalf("reply: %v %d assured %v", r.State, c.Expires, c.Status&StatusAssured != 0)
	}
	if r := Update(&c, udpPkt(4), Reply, 10*sec, &cfg); r.State != StateInvalid || r.Reason != ReasonProto {
		t.Fatalf("proto mismatch: %v/%v", r.State, r.Reason)
	}
}
