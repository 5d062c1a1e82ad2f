package ctsync

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
)

// TestDeferSendsFlush: with DeferSends the link's loop sends nothing: a
// queued message waits, the owner is called, and Flush sends it from the
// caller's goroutine, the peer receiving it; SendCT and Flush allocate
// nothing per message.
func TestDeferSendsFlush(t *testing.T) {
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP{127, 0, 0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	l, err := NewLink(LinkConfig{Listen: "127.0.0.1:0", Peer: sink.LocalAddr().String(), Mode: "notrack"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	kicks := make(chan struct{}, 1)
	l.DeferSends(func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	})
	l.Start(nopHandler{})
	<-kicks // the first ALIVE, queued by the loop and left to us
	if st := l.Stats(); st.DatagramsSent != 0 || st.TxQueueLen != 1 {
		t.Fatalf("before Flush: %d datagrams sent, %d queued; want 0 and the ALIVE", st.DatagramsSent, st.TxQueueLen)
	}
	c := &CT{Orig: Tuple{Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"), SrcPort: 1, DstPort: 80, Proto: 6}, TCPState: 3}
	c.Set(NTAIPv4)
	c.Set(NTAL4Proto)
	c.Set(NTAPort)
	c.Set(NTATCPState)
	if err := l.SendCT(TypeCTUpd, c); err != nil {
		t.Fatal(err)
	}
	l.Flush()
	buf := make([]byte, 2048)
	m, err := sink.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if msgs, err := Decode(buf[:m]); err != nil || len(msgs) != 2 || msgs[1].CT == nil || msgs[1].CT.Orig != c.Orig {
		t.Fatalf("the datagram Flush sent: %v, %v; want the ALIVE and the CT_UPD", msgs, err)
	}
	if st := l.Stats(); st.DataSent != 1 || st.TxQueueLen != 0 || st.DatagramsSent != 1 {
		t.Fatalf("after Flush: %d datagrams, %d data messages sent, %d queued; want 1, 1 and 0", st.DatagramsSent, st.DataSent, st.TxQueueLen)
	}
	allocs := testing.AllocsPerRun(200, func() {
		if err := l.SendCT(TypeCTUpd, c); err != nil {
			t.Fatal(err)
		}
		l.Flush()
	})
	if allocs != 0 {
		t.Errorf("SendCT + Flush: %v allocations, want 0", allocs)
	}
	if !testenv.WaitFor(5*time.Second, func() bool { return l.Stats().DataSent == 202 }) {
		t.Fatalf("%d data messages sent, want 202", l.Stats().DataSent)
	}
}

type nopHandler struct{}

func (nopHandler) CT(Type, *CT)     {}
func (nopHandler) Exp(Type, *Exp)   {}
func (nopHandler) ResyncRequested() {}
