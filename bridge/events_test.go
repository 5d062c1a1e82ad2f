package bridge

import (
	"fmt"
	"strings"
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

// drainEvents returns the waiting events as "KIND STATE flags" strings
// (STATE only when the event carries the protocol info).
func drainEvents(ev *Events) []string {
	var out []string
	buf := make([]Event, 16)
	ev.Drain(buf, func(es []Event) {
		for i := range es {
			e := &es[i]
			s := e.Kind.String()
			if e.ProtoInfo && e.Entry.Orig.Proto == packet.ProtoTCP {
				s += " " + e.Entry.Conn.State.String()
			}
			if e.Entry.Conn.Status&statemachine.StatusSeenReply == 0 {
				s += " UNREPLIED"
			}
			if e.Entry.Conn.Status&statemachine.StatusAssured != 0 {
				s += " ASSURED"
			}
			out = append(out, s)
		}
	})
	return out
}

// TestEventsTCPConnection walks one TCP connection (handshake, FIN each
// way, expiry) and a killed one through a listening pipeline and checks
// the events the kernel's ctnetlink would send.
func TestEventsTCPConnection(t *testing.T) {
	l, r := "198.18.0.1", "198.18.0.2"
	c2s := func(flags uint8, seq, ack uint32) []byte {
		return pt.TCP4(l, r, 1000, 80, pt.TCPFields{Flags: flags, Seq: seq, Ack: ack, Window: 65535})
	}
	s2c := func(flags uint8, seq, ack uint32) []byte {
		return pt.TCP4(r, l, 80, 1000, pt.TCPFields{Flags: flags, Seq: seq, Ack: ack, Window: 65535})
	}
	const (
		syn = packet.TCPSyn
		ack = packet.TCPAck
		fin = packet.TCPFin | packet.TCPAck
		rst = packet.TCPRst
	)
	type step struct {
		frame []byte
		in    Port
		want  []string
	}
	tests := []struct {
		name   string
		steps  []step
		expire []string // events of an expiry sweep 200 s later
	}{
		{"full connection", []step{
			{c2s(syn, 1, 0), PortA, []string{"NEW SYN_SENT UNREPLIED"}},
			{s2c(syn|ack, 9, 2), PortB, []string{"UPDATE SYN_RECV"}},
			{c2s(ack, 2, 10), PortA, []string{"UPDATE ESTABLISHED ASSURED"}},
			{c2s(ack, 2, 10), PortA, nil}, // no change: no event
			{c2s(fin, 2, 10), PortA, []string{"UPDATE FIN_WAIT ASSURED"}},
			{s2c(ack, 10, 3), PortB, []string{"UPDATE CLOSE_WAIT ASSURED"}},
			{s2c(fin, 10, 3), PortB, []string{"UPDATE LAST_ACK ASSURED"}},
			{c2s(ack, 3, 11), PortA, []string{"UPDATE TIME_WAIT ASSURED"}},
		}, []string{"DESTROY TIME_WAIT ASSURED"}},
		{"RST before the reply kills", []step{
			{c2s(syn, 1, 0), PortA, []string{"NEW SYN_SENT UNREPLIED"}},
			// The kernel sends this DESTROY from nf_ct_kill, before it sets
			// SEEN_REPLY: it prints [UNREPLIED]; our tracker has set the
			// bit already (a documented difference).
			{s2c(rst|ack, 0, 2), PortB, []string{"DESTROY CLOSE"}},
		}, nil},
		{"reopening SYN replaces the entry", []step{
			{c2s(syn, 1, 0), PortA, []string{"NEW SYN_SENT UNREPLIED"}},
			{s2c(syn|ack, 9, 2), PortB, []string{"UPDATE SYN_RECV"}},
			{c2s(ack, 2, 10), PortA, []string{"UPDATE ESTABLISHED ASSURED"}},
			{c2s(fin, 2, 10), PortA, []string{"UPDATE FIN_WAIT ASSURED"}},
			{s2c(fin, 10, 3), PortB, []string{"UPDATE LAST_ACK ASSURED"}},
			{c2s(ack, 3, 11), PortA, []string{"UPDATE TIME_WAIT ASSURED"}},
			{c2s(syn, 5000, 0), PortA, []string{"DESTROY TIME_WAIT ASSURED", "NEW SYN_SENT UNREPLIED"}},
		}, []string{"DESTROY SYN_SENT UNREPLIED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := newTestPipeline(t, nil, 1024)
			ev := pl.ctl.Events()
			ev.Subscribe(1)
			defer ev.Unsubscribe()
			now := sec
			for i, s := range tt.steps {
				now += sec / 100
				pl.Process(s.frame, 0, s.in, now)
				if got := drainEvents(ev); fmt.Sprint(got) != fmt.Sprint(s.want) {
					t.Errorf("packet %d: got events %q, want %q", i+1, got, s.want)
				}
			}
			now += 200 * sec
			pl.WatchEvents(now)
			pl.Shard().Expire(now, 1024)
			if got := drainEvents(ev); fmt.Sprint(got) != fmt.Sprint(tt.expire) {
				t.Errorf("expiry: got events %q, want %q", got, tt.expire)
			}
		})
	}
}

// TestEventsOnlyWhenListening: no listener, no event; a full ring drops
// and counts.
func TestEventsOnlyWhenListening(t *testing.T) {
	pl := newTestPipeline(t, nil, 1<<14)
	ev := pl.ctl.Events()
	udp := func(port int) []byte { return pt.UDP4("198.18.0.1", "198.18.0.2", uint16(port), 53, nil) }
	pl.Process(udp(1), 0, PortA, sec)
	ev.Subscribe(1)
	if got := drainEvents(ev); len(got) != 0 {
		t.Errorf("events before subscribing: got %q, want none", got)
	}
	pl.Process(udp(2), 0, PortA, sec)
	ev.Unsubscribe()
	pl.Process(udp(3), 0, PortA, sec)
	if got, want := drainEvents(ev), []string{"NEW UNREPLIED"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q (the flow created while subscribed only)", got, want)
	}

	ev.Subscribe(1)
	defer ev.Unsubscribe()
	extra := 10
	for p := range EventRingSize + extra {
		pl.Process(udp(100+p), 0, PortA, sec)
	}
	if got := ev.Lost(); got != uint64(extra) {
		t.Errorf("lost: got %d, want %d", got, extra)
	}
	if got := len(drainEvents(ev)); got != EventRingSize {
		t.Errorf("drained %d events, want %d", got, EventRingSize)
	}
}

// TestEventsZeroAlloc: writing events does not allocate.
func TestEventsZeroAlloc(t *testing.T) {
	s := DefaultSettings()
	s.VerifyChecksum = false // the test rewrites the source port in place
	pl := newTestPipeline(t, s, 1<<16)
	ev := pl.ctl.Events()
	ev.Subscribe(1)
	defer ev.Unsubscribe()
	port := 0
	frame := pt.UDP4("198.18.0.1", "198.18.0.2", 1, 53, nil)
	frames := [][]byte{frame}
	out := make([]Result, 1)
	if n := testing.AllocsPerRun(500, func() {
		port++
		frame[34], frame[35] = byte(port>>8), byte(port)
		pl.ProcessBatch(frames, PortA, sec, out)
	}); n != 0 {
		t.Errorf("%v allocations per new flow with a listener, want 0", n)
	}
	if got := ev.Lost() + uint64(len(drainEvents(ev))); got < 500 {
		t.Errorf("got %d events, want at least 500", got)
	}
}

func TestEventKindString(t *testing.T) {
	for k, want := range map[EventKind]string{EventNew: "NEW", EventUpdate: "UPDATE", EventDestroy: "DESTROY", 0: "UNKNOWN", 9: "UNKNOWN"} {
		if got := k.String(); got != want {
			t.Errorf("EventKind(%d): got %q, want %q", k, got, want)
		}
	}
	if !strings.Contains(fmt.Sprint(EventNew), "NEW") {
		t.Errorf("fmt of EventNew: got %v", EventNew)
	}
}
