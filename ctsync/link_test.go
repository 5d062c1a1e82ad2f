package ctsync_test

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/ctsync"
	"github.com/statewire/statewire/internal/testenv"
)

// recorder is a Handler that keeps what it is given.
type recorder struct {
	mu       sync.Mutex
	cts      []ctsync.CT
	types    []ctsync.Type
	exps     int
	resyncs  int
	onResync func()
}

func (r *recorder) CT(t ctsync.Type, c *ctsync.CT) {
	r.mu.Lock()
	r.cts = append(r.cts, *c)
	r.types = append(r.types, t)
	r.mu.Unlock()
}

func (r *recorder) Exp(t ctsync.Type, e *ctsync.Exp) { r.mu.Lock(); r.exps++; r.mu.Unlock() }

func (r *recorder) ResyncRequested() {
	r.mu.Lock()
	r.resyncs++
	f := r.onResync
	r.mu.Unlock()
	if f != nil {
		f()
	}
}

func (r *recorder) setOnResync(f func()) { r.mu.Lock(); r.onResync = f; r.mu.Unlock() }

func (r *recorder) resyncCount() int { r.mu.Lock(); defer r.mu.Unlock(); return r.resyncs }

func (r *recorder) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.cts) }

// ports returns the set of source ports received.
func (r *recorder) ports() map[uint16]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[uint16]bool{}
	for _, c := range r.cts {
		m[c.Orig.SrcPort] = true
	}
	return m
}

// relay stands between two links on 127.0.0.1 and loses, delays or
// duplicates datagrams as its fate function says.
type relay struct {
	toA, toB *net.UDPConn // toA faces link A (A's peer), toB faces link B
	mu       sync.Mutex
	a, b     *net.UDPAddr
	fate     func(aToB bool, n int) bool // false: drop the n-th datagram of that direction
	n        [2]int
}

func newRelay(t *testing.T) *relay {
	r := &relay{}
	for _, c := range []**net.UDPConn{&r.toA, &r.toB} {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		*c = conn
	}
	go r.pump(r.toA, r.toB, true)
	go r.pump(r.toB, r.toA, false)
	return r
}

func (r *relay) setFate(f func(aToB bool, n int) bool) { r.mu.Lock(); r.fate = f; r.mu.Unlock() }

func (r *relay) pump(in, out *net.UDPConn, aToB bool) {
	buf := make([]byte, 65536)
	for {
		n, _, err := in.ReadFromUDP(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		dir := 0
		to := r.b
		if !aToB {
			dir, to = 1, r.a
		}
		i := r.n[dir]
		r.n[dir]++
		pass := r.fate == nil || r.fate(aToB, i)
		r.mu.Unlock()
		if pass && to != nil {
			_, _ = out.WriteToUDP(buf[:n], to)
		}
	}
}

func addr(c *net.UDPConn) string { return c.LocalAddr().String() }

// linkPair makes links A and B talking through a relay.
func linkPair(t *testing.T, mut func(*ctsync.LinkConfig)) (a, b *ctsync.Link, ra, rb *recorder, r *relay) {
	t.Helper()
	r = newRelay(t)
	mk := func(peer string) *ctsync.Link {
		cfg := ctsync.LinkConfig{Listen: "127.0.0.1:0", Peer: peer, AliveInterval: 100 * time.Millisecond}
		if mut != nil {
			mut(&cfg)
		}
		l, err := ctsync.NewLink(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	a, b = mk(addr(r.toA)), mk(addr(r.toB))
	r.mu.Lock()
	r.a, r.b = net.UDPAddrFromAddrPort(a.LocalAddr()), net.UDPAddrFromAddrPort(b.LocalAddr())
	r.mu.Unlock()
	ra, rb = &recorder{}, &recorder{}
	a.Start(ra)
	b.Start(rb)
	if !testenv.WaitFor(5*time.Second, func() bool { return a.Stats().PeerHello && b.Stats().PeerHello }) {
		t.Fatalf("no HELLO handshake in 5s: A %+v B %+v", a.Stats(), b.Stats())
	}
	return a, b, ra, rb, r
}

func ct(i int) *ctsync.CT {
	c := &ctsync.CT{Orig: ctsync.Tuple{Src: netip.MustParseAddr("198.18.1.1"), Dst: netip.MustParseAddr("198.18.2.2"),
		Proto: 6, SrcPort: uint16(1024 + i), DstPort: 443}, Status: ctsync.IPSConfirmed | ctsync.IPSSeenReply | ctsync.IPSAssured,
		TCPState: 3, Timeout: 432000}
	c.Set(ctsync.NTATCPState)
	c.Set(ctsync.NTATimeout)
	return c
}

func sendAll(t *testing.T, l *ctsync.Link, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := l.SendCT(ctsync.TypeCTNew, ct(i)); err != nil {
			t.Fatalf("SendCT %d: %v", i, err)
		}
	}
}

// TestLinkOrderedDelivery: 1000 connections sent over a lossless path
// arrive once each and in the order sent, and the sender's resend queue
// drains as the receiver ACKs.
func TestLinkOrderedDelivery(t *testing.T) {
	a, b, _, rb, _ := linkPair(t, nil)
	sendAll(t, a, 0, 1000)
	if !testenv.WaitFor(5*time.Second, func() bool { return rb.count() >= 1000 }) {
		t.Fatalf("B received %d of 1000", rb.count())
	}
	rb.mu.Lock()
	for i, c := range rb.cts {
		if int(c.Orig.SrcPort) != 1024+i || rb.types[i] != ctsync.TypeCTNew || c.TCPState != 3 {
			t.Fatalf("message %d: %v port %d state %d, want CT_NEW port %d state 3", i, rb.types[i], c.Orig.SrcPort, c.TCPState, 1024+i)
		}
	}
	rb.mu.Unlock()
	if !testenv.WaitFor(5*time.Second, func() bool { return a.Stats().ResendQueueLen <= 1 }) {
		t.Errorf("A's resend queue holds %d after B got everything, want it drained by ACKs", a.Stats().ResendQueueLen)
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("A: %+v", sa)
	t.Logf("B: %+v", sb)
	if sb.AcksSent < 3 || sa.AcksRecv < 3 {
		t.Errorf("B sent %d ACKs, A received %d; want at least 1000/300", sb.AcksSent, sa.AcksRecv)
	}
	if sa.DatagramsSent >= sa.MsgsSent/4 {
		t.Errorf("A sent %d messages in %d datagrams: want several messages per datagram", sa.MsgsSent, sa.DatagramsSent)
	}
	if sb.Lost != 0 || sb.NacksSent != 0 || sa.Resent != 0 || sb.Malformed != 0 {
		t.Errorf("lossless path: lost %d, NACKs %d, resent %d, malformed %d; want 0", sb.Lost, sb.NacksSent, sa.Resent, sb.Malformed)
	}
}

// TestLinkAckWindow: with ACKWindowSize 10, 25 messages are ACKed twice by
// the window and once by the alive alarm, and A's resend queue empties.
func TestLinkAckWindow(t *testing.T) {
	a, b, _, rb, _ := linkPair(t, func(c *ctsync.LinkConfig) { c.ACKWindowSize = 10 })
	a0, b0 := a.Stats(), b.Stats()
	sendAll(t, a, 0, 25)
	if !testenv.WaitFor(5*time.Second, func() bool { return rb.count() == 25 && a.Stats().ResendQueueLen == 0 }) {
		t.Fatalf("B got %d of 25; A's resend queue %d, want 0", rb.count(), a.Stats().ResendQueueLen)
	}
	sa, sb := a.Stats(), b.Stats()
	if acks := sb.AcksSent - b0.AcksSent; acks < 3 {
		t.Errorf("B sent %d ACKs for 25 messages with a window of 10, want at least 3", acks)
	}
	if sa.AcksRecv-a0.AcksRecv < 3 {
		t.Errorf("A received %d ACKs, want at least 3", sa.AcksRecv-a0.AcksRecv)
	}
}

// TestLinkNackResend: the relay drops every 4th datagram from A; B NACKs
// each gap, A resends, and every connection arrives, each delivered
// message newer than the one before.
func TestLinkNackResend(t *testing.T) {
	a, b, _, rb, r := linkPair(t, nil)
	r.setFate(func(aToB bool, n int) bool { return !aToB || n%4 != 3 })
	for i := 0; i < 600; i += 50 {
		sendAll(t, a, i, i+50)
		testenv.WaitFor(time.Second, func() bool { return a.Stats().TxQueueLen == 0 })
	}
	if !testenv.WaitFor(10*time.Second, func() bool { return len(rb.ports()) == 600 }) {
		t.Fatalf("B has %d of 600 connections; A %+v B %+v", len(rb.ports()), a.Stats(), b.Stats())
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("A: %+v", sa)
	t.Logf("B: %+v", sb)
	if sb.NacksSent == 0 || sa.NacksRecv == 0 || sa.Resent == 0 || sb.Lost == 0 {
		t.Errorf("NACKs sent %d received %d, resent %d, lost %d: want all > 0", sb.NacksSent, sa.NacksRecv, sa.Resent, sb.Lost)
	}
	if sa.ResyncsForLoss != 0 {
		t.Errorf("A resynced %d times; the resend queue was large enough", sa.ResyncsForLoss)
	}
}

// TestLinkResyncAfterOverflow: with the path to B down, A sends more than
// its resend queue holds; when the path is back, B's NACK reaches back
// past the queue and A's Handler is asked to resend everything, which
// brings B every connection.
func TestLinkResyncAfterOverflow(t *testing.T) {
	a, _, ra, rb, r := linkPair(t, func(c *ctsync.LinkConfig) { c.ResendQueueSize = 8 })
	var sent sync.Mutex
	n := 50
	ra.setOnResync(func() {
		sent.Lock()
		defer sent.Unlock()
		for i := 0; i <= n; i++ {
			_ = a.SendCT(ctsync.TypeCTNew, ct(i))
		}
	})
	r.setFate(func(aToB bool, _ int) bool { return !aToB })
	sendAll(t, a, 0, n)
	if !testenv.WaitFor(5*time.Second, func() bool { return a.Stats().ResendQueueDrops >= uint64(n-8) }) {
		t.Fatalf("A dropped %d from its resend queue, want %d", a.Stats().ResendQueueDrops, n-8)
	}
	r.setFate(nil)
	sendAll(t, a, n, n+1)
	if !testenv.WaitFor(10*time.Second, func() bool { return len(rb.ports()) == n+1 }) {
		t.Fatalf("B has %d of %d connections; A %+v", len(rb.ports()), n+1, a.Stats())
	}
	st := a.Stats()
	if st.ResyncsForLoss == 0 || ra.resyncCount() == 0 {
		t.Errorf("A made %d loss resyncs, its handler saw %d; want at least 1", st.ResyncsForLoss, ra.resyncCount())
	}
}

// TestLinkAlive: idle links exchange ALIVE messages (the peer stays
// alive); when the path dies, PeerAlive turns false after PeerTimeout.
func TestLinkAlive(t *testing.T) {
	a, b, _, _, r := linkPair(t, nil)
	m0 := b.Stats().MsgsRecv
	if !testenv.WaitFor(5*time.Second, func() bool { return b.Stats().MsgsRecv >= m0+5 }) {
		t.Fatalf("idle B received %d messages in 5s, want ALIVEs every 100ms", b.Stats().MsgsRecv-m0)
	}
	sa, sb := a.Stats(), b.Stats()
	if !sa.PeerAlive || !sb.PeerAlive || sb.DataRecv != 0 {
		t.Errorf("A alive %v, B alive %v, B data %d: want both alive, no data", sa.PeerAlive, sb.PeerAlive, sb.DataRecv)
	}
	r.setFate(func(bool, int) bool { return false })
	if !testenv.WaitFor(5*time.Second, func() bool { return !a.Stats().PeerAlive && !b.Stats().PeerAlive }) {
		t.Errorf("with the path dead the peers still look alive: A %v B %v", a.Stats().PeerAlive, b.Stats().PeerAlive)
	}
	r.setFate(nil)
	if !testenv.WaitFor(5*time.Second, func() bool { return a.Stats().PeerAlive && b.Stats().PeerAlive }) {
		t.Errorf("path back, peers not alive again")
	}
}

// TestLinkMalformed: garbage from the peer's address is counted and
// ignored, datagrams from elsewhere are counted as foreign, and the link
// goes on delivering.
func TestLinkMalformed(t *testing.T) {
	a, b, _, rb, r := linkPair(t, nil)
	bAddr := net.UDPAddrFromAddrPort(b.LocalAddr())
	m0 := b.Stats().Malformed
	junk := [][]byte{
		{0xff},
		{0x1a, 0, 0, 4, 0, 0, 0, 0},              // length below a header
		{0x10, 0, 0, 40, 0, 0, 0, 1, 0, 8, 0, 0}, // length beyond the datagram
		{0x20, 0, 0, 8, 0, 0, 0, 1},              // version 2
		ctsync.AppendControl(nil, ctsync.FlagAck, 0, 0, 0)[:12], // ACK without its range
	}
	for _, j := range junk {
		if _, err := r.toB.WriteToUDP(j, bAddr); err != nil {
			t.Fatal(err)
		}
	}
	if !testenv.WaitFor(5*time.Second, func() bool { return b.Stats().Malformed >= m0+uint64(len(junk)) }) {
		t.Fatalf("B counted %d malformed, want %d", b.Stats().Malformed-m0, len(junk))
	}
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ok := ctsync.AppendControl(nil, ctsync.FlagAlive, 1, 0, 0)
	if _, err := other.WriteToUDP(ok, bAddr); err != nil {
		t.Fatal(err)
	}
	if !testenv.WaitFor(5*time.Second, func() bool { return b.Stats().Foreign >= 1 }) {
		t.Errorf("a datagram from a stranger was not counted as foreign")
	}
	sendAll(t, a, 0, 10)
	if !testenv.WaitFor(5*time.Second, func() bool { return rb.count() == 10 }) {
		t.Errorf("after the junk B delivered %d of 10", rb.count())
	}
}

// TestLinkStartupResync: with StartupResync each side asks the other for its cache once
// the handshake is done.
func TestLinkStartupResync(t *testing.T) {
	a, b, _, rb, _ := linkPair(t, func(c *ctsync.LinkConfig) { c.StartupResync = true })
	if !testenv.WaitFor(5*time.Second, func() bool { return rb.resyncCount() >= 1 }) {
		t.Fatalf("B's handler saw no resync request; A %+v", a.Stats())
	}
	if a.Stats().ResyncsRequested != 1 || b.Stats().ResyncsServed != 1 {
		t.Errorf("A requested %d, B served %d resyncs; want 1 and 1", a.Stats().ResyncsRequested, b.Stats().ResyncsServed)
	}
}

// TestLinkRequestResync: A's RequestResync makes B's Handler resend.
func TestLinkRequestResync(t *testing.T) {
	a, b, ra, rb, _ := linkPair(t, nil)
	rb.setOnResync(func() { sendAll(t, b, 0, 20) })
	a.RequestResync()
	if !testenv.WaitFor(5*time.Second, func() bool { return ra.count() == 20 }) {
		t.Fatalf("A got %d of the 20 B resends after RequestResync", ra.count())
	}
	if st := b.Stats(); st.ResyncsServed != 1 || a.Stats().ResyncsRequested != 1 {
		t.Errorf("B served %d resyncs, A requested %d; want 1 and 1", st.ResyncsServed, a.Stats().ResyncsRequested)
	}
}

// TestLinkRandomLoss: 5% loss, duplicates and reordering both ways while
// both sides send 2000 connections; everything arrives.
func TestLinkRandomLoss(t *testing.T) {
	a, b, ra, rb, r := linkPair(t, nil)
	rng := rand.New(rand.NewSource(1))
	r.setFate(func(bool, int) bool { return rng.Intn(100) >= 5 })
	for i := 0; i < 2000; i += 100 {
		sendAll(t, a, i, i+100)
		sendAll(t, b, i, i+100)
	}
	if !testenv.WaitFor(20*time.Second, func() bool { return len(ra.ports()) == 2000 && len(rb.ports()) == 2000 }) {
		t.Fatalf("A has %d, B has %d of 2000", len(ra.ports()), len(rb.ports()))
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("A: %+v", sa)
	t.Logf("B: %+v", sb)
	if sa.Resent == 0 || sb.Resent == 0 {
		t.Errorf("resent A %d B %d; 5%% loss should need resends", sa.Resent, sb.Resent)
	}
}

// TestNewLinkErrors: the errors tell the operator what to do.
func TestNewLinkErrors(t *testing.T) {
	l, err := ctsync.NewLink(ctsync.LinkConfig{Listen: "127.0.0.1:0", Peer: "127.0.0.1:9"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tt := range []struct {
		cfg  ctsync.LinkConfig
		want string
	}{
		{ctsync.LinkConfig{Listen: l.LocalAddr().String(), Peer: "127.0.0.1:9"}, "in use"},
		{ctsync.LinkConfig{Listen: "198.18.255.254:3780", Peer: "198.18.255.253:3780"}, "not configured on this host"},
		{ctsync.LinkConfig{Listen: "127.0.0.1:0"}, "peer address"},
		{ctsync.LinkConfig{Listen: "127.0.0.1", Peer: "127.0.0.1:9"}, "ADDR:PORT"},
		{ctsync.LinkConfig{Listen: "127.0.0.1:0", Peer: "[::1]:9"}, "different families"},
		{ctsync.LinkConfig{Listen: "127.0.0.1:0", Peer: "127.0.0.1:9", Mode: "alarm"}, "unknown"},
	} {
		_, err := ctsync.NewLink(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewLink(%+v) = %v, want an error saying %q", tt.cfg, err, tt.want)
		}
	}
	if err := l.SendCT(ctsync.TypeExpNew, ct(1)); err == nil {
		t.Errorf("SendCT with an expectation type succeeded")
	}
	l.Close()
	if err := l.SendCT(ctsync.TypeCTNew, ct(1)); err == nil {
		t.Errorf("SendCT on a closed link succeeded")
	}
}

// TestLinkQueueFull: SendCT never blocks; past TxQueueSize it fails with
// ErrQueueFull and counts the drop.
func TestLinkQueueFull(t *testing.T) {
	l, err := ctsync.NewLink(ctsync.LinkConfig{Listen: "127.0.0.1:0", Peer: "127.0.0.1:9", TxQueueSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Not started: nothing drains the queue.
	var errs []error
	for i := 0; i < 8; i++ {
		if err := l.SendCT(ctsync.TypeCTNew, ct(i)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) != 3 || !errors.Is(errs[0], ctsync.ErrQueueFull) || l.Stats().QueueDrops != 3 {
		t.Errorf("errors %v, drops %d; want 3 ErrQueueFull and 3 drops", errs, l.Stats().QueueDrops)
	}
}

// TestLinkNotrack: NOTRACK delivers and counts gaps, but neither ACKs,
// NACKs nor resends, and says no HELLO.
func TestLinkNotrack(t *testing.T) {
	a, b, _, rb, r := linkPair(t, func(c *ctsync.LinkConfig) { c.Mode = "notrack"; c.MTU = 28 + 80 })
	sendAll(t, a, 0, 10)
	if !testenv.WaitFor(5*time.Second, func() bool { return rb.count() == 10 }) {
		t.Fatalf("B got %d of 10", rb.count())
	}
	r.setFate(func(aToB bool, n int) bool { return !aToB || n%2 == 0 })
	sendAll(t, a, 10, 30)
	if !testenv.WaitFor(5*time.Second, func() bool { return b.Stats().Lost >= 5 }) {
		t.Fatalf("B counted %d lost, want the dropped half", b.Stats().Lost)
	}
	sa, sb := a.Stats(), b.Stats()
	if sb.AcksSent != 0 || sb.NacksSent != 0 || sa.Resent != 0 || sa.ResendQueueLen != 0 {
		t.Errorf("NOTRACK sent ACKs %d NACKs %d, resent %d, resend queue %d; want none", sb.AcksSent, sb.NacksSent, sa.Resent, sa.ResendQueueLen)
	}
	if rb.count() >= 30 {
		t.Errorf("B got %d messages though half were dropped", rb.count())
	}
}

// TestSendCTAllocs: queueing a connection event allocates nothing once the
// link's buffers have grown (the sync sender runs once per event).
func TestSendCTAllocs(t *testing.T) {
	l, err := ctsync.NewLink(ctsync.LinkConfig{Listen: "127.0.0.1:0", Peer: "127.0.0.1:9"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := ct(1)
	c.Master = ctsync.Tuple{Src: c.Orig.Src, Dst: c.Orig.Dst, Proto: 6, SrcPort: 1, DstPort: 21}
	if err := l.SendCT(ctsync.TypeCTNew, c); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { _ = l.SendCT(ctsync.TypeCTUpd, c) }); n != 0 {
		t.Errorf("SendCT allocates %v times per call, want 0", n)
	}
}

// TestLinkIPv6: a pair over [::1]; datagrams stay within MTU less the
// IPv6 and UDP headers.
func TestLinkIPv6(t *testing.T) {
	// Two free ports: bind, note, release; the links bind them next.
	var ports [2]int
	for i := range ports {
		c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
		if err != nil {
			testenv.Unavailable(t, "no IPv6 loopback: "+err.Error())
		}
		ports[i] = c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
	}
	mk := func(me, peer int) *ctsync.Link {
		l, err := ctsync.NewLink(ctsync.LinkConfig{Listen: fmt.Sprintf("[::1]:%d", me), Peer: fmt.Sprintf("[::1]:%d", peer), MTU: 1280})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	a, b := mk(ports[0], ports[1]), mk(ports[1], ports[0])
	ra, rb := &recorder{}, &recorder{}
	a.Start(ra)
	b.Start(rb)
	sendAll(t, a, 0, 300)
	if !testenv.WaitFor(5*time.Second, func() bool { return rb.count() == 300 }) {
		t.Fatalf("B got %d of 300 over IPv6", rb.count())
	}
	st := a.Stats()
	if per := st.BytesSent / st.DatagramsSent; per > 1280-48 || st.DatagramsSent > 300/5 {
		t.Errorf("%d datagrams averaging %d bytes: want several messages each, within 1280 - 48", st.DatagramsSent, per)
	}
}
