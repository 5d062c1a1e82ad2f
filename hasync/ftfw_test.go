package hasync

import (
	"net"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
)

// freeUDP returns a 127.0.0.1 port nothing listens on right now.
func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP{127, 0, 0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// TestStandbyStartedLater: over ctsync's FTFW link, a standby started
// after the active bridge learns the connections the active tracked before
// (the link asks for a resync once its handshake is done), and the
// active's next change reaches it too.
func TestStandbyStartedLater(t *testing.T) {
	addrA, addrB := freeUDP(t), freeUDP(t)
	a, b := newBox(t), newBox(t)
	la, err := NewLink(ModeFTFW, addrA, addrB, nil)
	if err != nil {
		t.Fatal(err)
	}
	sa := New(Config{Link: la, Filter: DefaultFilter, Peer: addrB, Table: a.tb, Now: func() int64 { return a.now }})
	sa.Start()
	defer sa.Close()
	a.ctl.Events().Subscribe(1)
	a.ctl.Events().AddReader(sa.HandleEvents)
	p := &pair{a: a}
	p.handshake(t, 41000, 80, 1, 100)
	p.handshake(t, 41001, 80, 1, 100)
	p.drain()
	if n := sa.Stats().Internal; n != 2 {
		t.Fatalf("active's internal cache: %d, want 2", n)
	}

	lb, err := NewLink(ModeFTFW, addrB, addrA, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb := New(Config{Link: lb, Filter: DefaultFilter, Peer: addrA, Table: b.tb, Now: func() int64 { return b.now }})
	sb.Start()
	defer sb.Close()
	if !testenv.WaitFor(10*time.Second, func() bool { return sb.Stats().External == 2 }) {
		t.Fatalf("standby's external cache: %d, want the active's 2 after its startup resync; active %+v", sb.Stats().External, sa.Stats())
	}
	p.handshake(t, 41002, 80, 1, 100)
	p.drain()
	if !testenv.WaitFor(10*time.Second, func() bool { return sb.Stats().External == 3 }) {
		t.Fatalf("standby's external cache: %d, want 3", sb.Stats().External)
	}
	if st := sa.Stats(); st.ResyncsServed != 1 {
		t.Errorf("active served %d resyncs, want 1", st.ResyncsServed)
	}
}
