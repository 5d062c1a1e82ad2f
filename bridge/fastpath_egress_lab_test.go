package bridge

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

// TestFastPathEgressDown: a frame the fast path redirects into a port that
// cannot take it is dropped by the kernel after the program counted it
// forwarded; offload.PortStats.RedirectErrors counts it. A UDP stream
// left to right goes by the fast path; then port B is set down (the
// redirect fails: ENETDOWN), and, once it is up again, the right host's
// end of the veth (port B stays up without a carrier; the veth refuses
// the frames at the flush). In both, every frame the fast path took
// meanwhile is counted as a redirect error, and none before.
func TestFastPathEgressDown(t *testing.T) {
	l := lab.NewT(t, lab.Options{})
	hostGRO(t, l, "on")
	dp := startOffloadDatapath(t, l, OffloadAuto)
	if on, why := dp.Offload(); !on {
		t.Fatalf("fast path off: %s", why)
	}
	if !dp.fast.Tracing() {
		t.Fatalf("the redirect-error tracers did not load (kernel BTF?): nothing to test")
	}
	if _, ok := l.PingWithin(l.LeftNS, "198.18.0.2", 5*time.Second); !ok {
		t.Fatalf("no ping")
	}
	var conn *net.UDPConn
	if err := l.Do(l.LeftNS, func() (err error) {
		conn, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(198, 18, 0, 2), Port: 9})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := make([]byte, 32)
	// send n datagrams, paced, and return the fast path's counters of
	// port A before and after.
	counters := func() (fast, errs uint64) {
		ps := dp.Stats().Fast.Ports[PortA]
		return ps.FastPackets, ps.RedirectErrors
	}
	send := func(n int) {
		for i := range n {
			conn.Write(msg)
			if i%20 == 19 {
				time.Sleep(time.Millisecond)
			}
		}
	}
	// Into the fast path: the flow is offered after 10 ms and activated.
	if !testenv.WaitFor(10*time.Second, func() bool {
		send(100)
		f, _ := counters()
		return f > 100
	}) {
		t.Fatalf("the stream never went by the fast path")
	}
	if _, e := counters(); e != 0 {
		t.Fatalf("%d redirect errors with both ports up", e)
	}
	for _, c := range []struct {
		name, ns, ifc string
	}{
		{"port B down", l.BridgeNS, l.PortB},
		{"right host's veth down (port B without carrier)", l.RightNS, l.RightIf},
	} {
		setLinkState(t, l, c.ns, c.ifc, "down")
		f0, e0 := counters()
		send(2000)
		// The last redirects are flushed at the end of their NAPI poll.
		var f1, e1 uint64
		testenv.WaitFor(2*time.Second, func() bool {
			f1, e1 = counters()
			return f1-f0 == e1-e0 && f1 > f0
		})
		t.Logf("%s: the fast path took %d frames, %d counted as redirect errors", c.name, f1-f0, e1-e0)
		if f1 == f0 || f1-f0 != e1-e0 {
			t.Errorf("%s: the fast path took %d frames and %d redirect errors were counted: want all of them", c.name, f1-f0, e1-e0)
		}
		setLinkState(t, l, c.ns, c.ifc, "up")
		if c.ifc == l.RightIf {
			hostGRO(t, l, "on")
		}
		if _, ok := l.PingWithin(l.LeftNS, "198.18.0.2", 5*time.Second); !ok {
			t.Fatalf("%s: no ping after up", c.name)
		}
	}
	// Up again: frames go through and no error is counted.
	_, e0 := counters()
	send(500)
	time.Sleep(50 * time.Millisecond)
	if _, e1 := counters(); e1 != e0 {
		t.Errorf("%d redirect errors with both ports up again", e1-e0)
	}
	stopLabDatapath(t, l, dp)
}

// setLinkState sets ifc in ns up or down.
func setLinkState(t *testing.T, l *lab.Lab, ns, ifc, state string) {
	t.Helper()
	if out, err := l.Run(context.Background(), ns, "ip", "link", "set", ifc, state); err != nil {
		t.Fatalf("ip link set %s %s: %v %s", ifc, state, err, out)
	}
}
