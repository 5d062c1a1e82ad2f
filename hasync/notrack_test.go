package hasync

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/ctsync"
	"github.com/statewire/statewire/internal/testenv"
)

// recorder is a Handler that keeps what it got.
type recorder struct {
	mu      sync.Mutex
	cts     []*ctsync.CT
	types   []ctsync.Type
	resyncs int
}

func (r *recorder) CT(t ctsync.Type, c *ctsync.CT) {
	r.mu.Lock()
	r.cts, r.types = append(r.cts, c), append(r.types, t)
	r.mu.Unlock()
}
func (r *recorder) Exp(ctsync.Type, *ctsync.Exp) {}
func (r *recorder) ResyncRequested() {
	r.mu.Lock()
	r.resyncs++
	r.mu.Unlock()
}
func (r *recorder) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cts), r.resyncs
}

// TestNotrackLink: two NOTRACK links over UDP on the loopback: a CT
// arrives decoded as sent, a resync request reaches the other side's
// handler, and datagrams from a stranger or that do not decode are
// counted as malformed and applied to nothing.
func TestNotrackLink(t *testing.T) {
	lb, err := NewNotrackLink("127.0.0.1:0", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	b := lb.(*notrackLink)
	la, err := NewNotrackLink("127.0.0.1:0", b.conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := la.(*notrackLink)
	b.peer = a.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	var ra, rb recorder
	a.Start(&ra)
	b.Start(&rb)
	defer a.Close()
	defer b.Close()

	c := &ctsync.CT{Orig: ctsync.Tuple{Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
		Proto: 6, SrcPort: 40000, DstPort: 80}, Status: ctsync.IPSAssured | ctsync.IPSSeenReply | ctsync.IPSConfirmed,
		TCPState: 3, Timeout: 432000}
	for _, at := range []int{ctsync.NTAIPv4, ctsync.NTAL4Proto, ctsync.NTAPort, ctsync.NTATCPState, ctsync.NTAStatus, ctsync.NTATimeout} {
		c.Set(at)
	}
	if err := a.SendCT(ctsync.TypeCTUpd, c); err != nil {
		t.Fatal(err)
	}
	if !testenv.WaitFor(5*time.Second, func() bool { n, _ := rb.counts(); return n == 1 }) {
		t.Fatal("the CT never arrived")
	}
	got := rb.cts[0]
	if rb.types[0] != ctsync.TypeCTUpd || got.Orig != c.Orig || got.TCPState != 3 || got.Timeout != 432000 || got.Status != c.Status {
		t.Errorf("got %v %+v, want CT_UPD %+v", rb.types[0], got, c)
	}
	b.RequestResync()
	if !testenv.WaitFor(5*time.Second, func() bool { _, r := ra.counts(); return r == 1 }) {
		t.Fatal("the resync request never arrived")
	}
	// A stranger's datagram, and garbage from the peer's own address.
	// (The peer is known by its address only: conntrackd sends from an
	// unbound socket, so its source port is not its listening port.)
	s, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IP{127, 0, 0, 2}}, b.conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := ctsync.AppendCT(nil, ctsync.Header{Type: ctsync.TypeCTNew}, c, ctsync.Options{})
	s.Write(b1)
	s.Close()
	a.conn.WriteToUDP([]byte{0x10, 0, 0, 200, 0, 0, 0, 1}, b.conn.LocalAddr().(*net.UDPAddr))
	if !testenv.WaitFor(5*time.Second, func() bool { return b.Stats().Malformed == 2 }) {
		t.Fatalf("malformed %d, want 2 (a stranger's message, a bad length)", b.Stats().Malformed)
	}
	if n, _ := rb.counts(); n != 1 {
		t.Errorf("%d CTs applied, want still 1", n)
	}
	if st := a.Stats(); st.MsgSent != 1 || st.ResyncsRecv != 1 {
		t.Errorf("a's stats %+v: want 1 message sent, 1 resync received", st)
	}
}
