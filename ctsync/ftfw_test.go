package ctsync

import (
	"net/netip"
	"testing"
	"time"
)

// wire drives two protocol states by hand: no sockets, a fake clock, and
// a drop function deciding the fate of each datagram.
type wire struct {
	t    *testing.T
	a, b *ftfw
	now  int64
	got  map[*ftfw][]Msg
	sent map[*ftfw]int // datagrams sent by each side
}

func newTestFTFW(t *testing.T, mut func(*LinkConfig)) *ftfw {
	cfg := LinkConfig{Listen: "x", Peer: "y"}
	if mut != nil {
		mut(&cfg)
	}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	cfg.headerLen = 28
	return newFTFW(&cfg)
}

func newWire(t *testing.T, mut func(*LinkConfig)) *wire {
	return &wire{t: t, a: newTestFTFW(t, mut), b: newTestFTFW(t, mut), now: 1_700_000_000e9,
		got: map[*ftfw][]Msg{}, sent: map[*ftfw]int{}}
}

// flush sends every datagram from has queued to the other side unless
// drop says otherwise, and returns the control messages delivered.
func (w *wire) flush(from *ftfw, drop func(i int) bool) (ctl []Header) {
	to := w.a
	if from == w.a {
		to = w.b
	}
	buf := make([]byte, 0, 1500)
	for {
		d := from.nextDatagram(buf, w.now)
		if len(d) == 0 {
			return ctl
		}
		i := w.sent[from]
		w.sent[from]++
		if drop != nil && drop(i) {
			continue
		}
		msgs, _ := Decode(d)
		for _, m := range msgs {
			if m.Type == TypeCtl {
				ctl = append(ctl, m.Header)
			}
		}
		w.got[to] = to.receiveDatagram(append([]byte(nil), d...), w.now, w.got[to])
	}
}

// settle exchanges datagrams both ways until both are quiet.
func (w *wire) settle() {
	for i := 0; i < 100; i++ {
		if w.a.tx.n == 0 && w.b.tx.n == 0 {
			return
		}
		w.flush(w.a, nil)
		w.flush(w.b, nil)
	}
	w.t.Fatalf("the two sides did not settle")
}

// handshake runs the ALIVE/HELLO exchange both ways.
func (w *wire) handshake() {
	w.a.tick(w.now)
	w.flush(w.a, nil)
	w.b.tick(w.now)
	w.settle()
	w.now += int64(2 * time.Second)
	w.a.tick(w.now)
	w.b.tick(w.now)
	w.settle()
	if w.a.hello != helloDone || w.b.hello != helloDone {
		w.t.Fatalf("HELLO handshake not done: a %d b %d", w.a.hello, w.b.hello)
	}
}

func testCT(i int) *CT {
	c := &CT{Orig: Tuple{Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
		Proto: 17, SrcPort: uint16(10000 + i), DstPort: 53}, Status: IPSConfirmed}
	return c
}

func queueCT(t *testing.T, f *ftfw, typ Type, c *CT) {
	t.Helper()
	msg, err := AppendCT(nil, Header{Type: typ}, c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.queueData(ctKey(c), msg); err != nil {
		t.Fatal(err)
	}
}

func deliveredPorts(msgs []Msg) []int {
	var out []int
	for _, m := range msgs {
		if m.CT != nil {
			out = append(out, int(m.CT.Orig.SrcPort)-10000)
		}
	}
	return out
}

// TestFTFWAckWindow: the receiver ACKs every ACKWindowSize messages with
// the exact range of the window, ACKs the rest when the alive alarm fires,
// and the sender's resend queue empties as the ACKs arrive.
func TestFTFWAckWindow(t *testing.T) {
	w := newWire(t, func(c *LinkConfig) { c.ACKWindowSize = 5 })
	w.handshake()
	w.b.ackFromSet, w.b.win = false, w.b.window // the handshake's messages are ACKed by the alarm; start a clean window
	first, base := w.a.nextSeq, w.a.rs.n        // base: the handshake's ACK, still unacknowledged
	for i := 0; i < 12; i++ {
		queueCT(t, w.a, TypeCTNew, testCT(i))
	}
	w.flush(w.a, nil)
	if w.a.rs.n != base+12 {
		t.Fatalf("resend queue holds %d messages, want the 12 sent and %d", w.a.rs.n, base)
	}
	acks := w.flush(w.b, nil)
	want := [][2]uint32{{first, first + 4}, {first + 5, first + 9}}
	if len(acks) != len(want) {
		t.Fatalf("receiver sent %+v, want ACKs for %v", acks, want)
	}
	for i, h := range acks {
		if h.Flags&FlagAck == 0 || h.From != want[i][0] || h.To != want[i][1] {
			t.Errorf("control %d: flags %#x range %d-%d, want ACK %d-%d", i, h.Flags, h.From, h.To, want[i][0], want[i][1])
		}
	}
	if w.a.rs.n != base+2 {
		t.Errorf("after two ACKs the resend queue holds %d, want %d", w.a.rs.n, base+2)
	}
	// Idle for AliveInterval: the alarm ACKs the last two instead of ALIVE.
	w.now += int64(time.Second)
	w.b.tick(w.now)
	acks = w.flush(w.b, nil)
	if len(acks) != 1 || acks[0].Flags&FlagAck == 0 || acks[0].From != first+10 || acks[0].To != first+11 {
		t.Fatalf("alive alarm sent %+v, want ACK %d-%d", acks, first+10, first+11)
	}
	if w.a.rs.n != base {
		t.Errorf("resend queue holds %d after the last ACK, want %d", w.a.rs.n, base)
	}
	if got := deliveredPorts(w.got[w.b]); len(got) != 12 {
		t.Errorf("delivered %v, want 0..11", got)
	}
}

// TestFTFWNackResend: a lost datagram leaves a gap; the receiver ACKs what
// came before it and NACKs the gap; the sender resends the missing
// messages with new numbers and everything is delivered.
func TestFTFWNackResend(t *testing.T) {
	w := newWire(t, func(c *LinkConfig) { c.MTU = 28 + 60 }) // one CT message per datagram
	w.handshake()
	w.b.ackFromSet, w.b.win = false, w.b.window
	first := w.a.nextSeq
	for i := 0; i < 6; i++ {
		queueCT(t, w.a, TypeCTNew, testCT(i))
	}
	base := w.sent[w.a]
	w.flush(w.a, func(i int) bool { return i-base == 2 || i-base == 3 })
	if got := deliveredPorts(w.got[w.b]); len(got) != 4 {
		t.Fatalf("delivered %v before the resend, want 0 1 4 5", got)
	}
	if w.b.st.Lost != 2 {
		t.Errorf("receiver counted %d lost, want 2", w.b.st.Lost)
	}
	ctl := w.flush(w.b, nil)
	if len(ctl) != 2 || ctl[0].Flags&FlagAck == 0 || ctl[0].From != first || ctl[0].To != first+1 ||
		ctl[1].Flags&FlagNack == 0 || ctl[1].From != first+2 || ctl[1].To != first+3 {
		t.Fatalf("receiver sent %+v, want ACK %d-%d then NACK %d-%d", ctl, first, first+1, first+2, first+3)
	}
	if w.a.st.Resent != 2 || w.a.tx.n != 2 {
		t.Fatalf("sender resent %d, queued %d, want 2 and 2", w.a.st.Resent, w.a.tx.n)
	}
	w.flush(w.a, nil)
	got := deliveredPorts(w.got[w.b])
	if len(got) != 6 || got[4] != 2 || got[5] != 3 {
		t.Errorf("delivered %v, want 0 1 4 5 then the resent 2 3", got)
	}
	// A replayed old datagram is dropped as "before".
	old := AppendControl(nil, FlagAlive, first, 0, 0)
	w.b.receiveDatagram(old, w.now, nil)
	if w.b.st.Before != 1 {
		t.Errorf("a replayed message counted %d times as before, want 1", w.b.st.Before)
	}
}

// TestFTFWResyncAfterOverflow: when the resend queue had to drop messages
// and the peer NACKs them, the sender asks for a whole resync.
func TestFTFWResyncAfterOverflow(t *testing.T) {
	w := newWire(t, func(c *LinkConfig) { c.ResendQueueSize = 4 })
	w.handshake()
	w.a.ack(w.a.nextSeq-100, w.a.nextSeq) // the handshake's ACK: start with an empty resend queue
	for i := 0; i < 10; i++ {
		queueCT(t, w.a, TypeCTNew, testCT(i))
	}
	w.flush(w.a, func(int) bool { return true }) // all lost
	if w.a.rs.n != 4 || w.a.st.ResendQueueDrops != 6 {
		t.Fatalf("resend queue %d, drops %d, want 4 and 6", w.a.rs.n, w.a.st.ResendQueueDrops)
	}
	queueCT(t, w.a, TypeCTNew, testCT(10))
	w.flush(w.a, nil)
	w.flush(w.b, nil) // NACK
	if w.a.wantResync != 1 || w.a.st.ResyncsForLoss != 1 {
		t.Errorf("sender owes %d resyncs (%d for loss), want 1", w.a.wantResync, w.a.st.ResyncsForLoss)
	}
	// The queue held the last 3 lost messages and the delivered one.
	if w.a.st.Resent != 3 {
		t.Errorf("sender resent %d, want the 3 lost ones still queued", w.a.st.Resent)
	}
}

// TestFTFWCoalesce: a second message for a connection replaces the first
// while it waits, and moves it out of the resend queue once sent.
func TestFTFWCoalesce(t *testing.T) {
	w := newWire(t, nil)
	w.handshake()
	w.a.ack(w.a.nextSeq-100, w.a.nextSeq)
	queueCT(t, w.a, TypeCTNew, testCT(1))
	queueCT(t, w.a, TypeCTUpd, testCT(1))
	if w.a.tx.n != 1 {
		t.Fatalf("transmit queue %d, want 1", w.a.tx.n)
	}
	w.flush(w.a, nil)
	queueCT(t, w.a, TypeCTDel, testCT(1))
	if w.a.tx.n != 1 || w.a.rs.n != 0 {
		t.Fatalf("tx %d rs %d, want the connection once, in tx", w.a.tx.n, w.a.rs.n)
	}
	w.flush(w.a, nil)
	got := w.got[w.b]
	if len(got) != 2 || got[0].Type != TypeCTUpd || got[1].Type != TypeCTDel {
		t.Errorf("delivered %d messages %v, want CT_UPD then CT_DEL", len(got), got)
	}
}

// TestFTFWQueueFull: the transmit queue is bounded; the drop is counted.
func TestFTFWQueueFull(t *testing.T) {
	f := newTestFTFW(t, func(c *LinkConfig) { c.TxQueueSize = 3 })
	for i := 0; i < 3; i++ {
		queueCT(t, f, TypeCTNew, testCT(i))
	}
	msg, _ := AppendCT(nil, Header{Type: TypeCTNew}, testCT(3), Options{})
	if err := f.queueData(ctKey(testCT(3)), msg); err == nil || f.st.QueueDrops != 1 {
		t.Errorf("fourth message: err %v, drops %d; want ErrQueueFull and 1", err, f.st.QueueDrops)
	}
}

// TestFTFWMalformed: bad control ranges, unknown types, bad versions and
// truncated messages are counted and change nothing.
func TestFTFWMalformed(t *testing.T) {
	w := newWire(t, nil)
	w.handshake()
	seq := w.b.lastRecv + 1
	bad := [][]byte{
		AppendControl(nil, FlagAck, seq, 10, 5),                                                // to before from
		{Version<<4 | 7, 0, 0, 8, byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}, // unknown type
		{2<<4 | 10, FlagAlive, 0, 8, 0, 0, 0, 1},                                               // version 2
		{Version<<4 | 10, FlagAlive, 0, 9, 0},                                                  // truncated
		{0, 0, 0, 0, 0, 0, 0, 0},                                                               // length 0
	}
	for i, b := range bad {
		before := w.b.st.Malformed
		w.b.receiveDatagram(b, w.now, nil)
		if w.b.st.Malformed != before+1 {
			t.Errorf("datagram %d (% x): malformed %d, want %d", i, b, w.b.st.Malformed, before+1)
		}
	}
	if w.b.lastRecv != seq-1 {
		t.Errorf("malformed messages moved the expected sequence to %d", w.b.lastRecv+1)
	}
}
