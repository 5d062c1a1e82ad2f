package faults

import (
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/lab"
)

// TestLinkDownUp takes one interface on the path down for a second while a
// UDP stream flows left to right, then up again: a bridge port (A, the
// ingress; B, the egress) or a host's end of a veth (the left sender's, the
// right receiver's, which takes the carrier off port B: a peer that stops
// taking frames). The datapath must keep running (its workers keep
// publishing, Stats answers), forward again within seconds of the link
// coming up (ping, then a TCP transfer with a SHA-256 check), stop within
// its deadline and balance its counters.
func TestLinkDownUp(t *testing.T) {
	lab.RequireRoot(t)
	for _, tc := range []struct {
		name string
		// which interface: 0 port A, 1 port B, 2 left host, 3 right host
		which int
	}{
		{"bridge port A", 0},
		{"bridge port B", 1},
		{"left host", 2},
		{"right host (egress peer)", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil)
			l := r.Lab
			ns, ifc := [4]string{l.BridgeNS, l.BridgeNS, l.LeftNS, l.RightNS}[tc.which], [4]string{l.PortA, l.PortB, l.LeftIf, l.RightIf}[tc.which]
			if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
				t.Fatalf("no ping before the fault")
			}
			pre := r.sample(t)
			udp := startUDP(t, l, 9002, 200, 100*time.Microsecond, 0)
			time.Sleep(300 * time.Millisecond)
			before := r.DP.Stats()
			setLink(t, l, ns, ifc, false)
			time.Sleep(time.Second)
			r.alive(t)
			during := r.DP.Stats()
			setLink(t, l, ns, ifc, true)
			upAt := time.Now()
			// Forwarding resumes: datagrams reach the right host again.
			gotAtUp := udp.got.Load()
			for udp.got.Load() < gotAtUp+100 && time.Since(upAt) < 10*time.Second {
				time.Sleep(5 * time.Millisecond)
			}
			resumed := time.Since(upAt)
			udp.stopSending()
			udp.settle()
			balance(t, udp, pre, r.sample(t))
			udp.close()
			if udp.got.Load() < gotAtUp+100 {
				t.Fatalf("UDP stream did not resume within 10s of %s coming back up", ifc)
			}
			t.Logf("%s down 1 s: 100 datagrams through again %v after up", ifc, resumed.Round(time.Millisecond))
			if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
				t.Fatalf("no ping within %v after the stream resumed", d)
			}
			transferOK(t, l, 5003, 4<<20)
			a0, a1 := before.Total(bridge.PortA), during.Total(bridge.PortA)
			var kickErr0, kickErr1 uint64
			for i := range before.Queues {
				kickErr0 += before.Queues[i].Socket[bridge.PortB].KickErrors + before.Queues[i].Socket[bridge.PortB].KickAgain
				kickErr1 += during.Queues[i].Socket[bridge.PortB].KickErrors + during.Queues[i].Socket[bridge.PortB].KickAgain
			}
			t.Logf("while down: A in %d, forwarded %d, dropped %d, B TX kicks refused %d; UDP sent %d received %d overall",
				a1.RX-a0.RX, a1.Forwarded-a0.Forwarded, a1.Dropped()-a0.Dropped(), kickErr1-kickErr0, udp.sent.Load(), udp.got.Load())
			st := r.Stop(t)
			if st.Total(bridge.PortA).Forwarded == 0 {
				t.Errorf("nothing forwarded A->B")
			}
			t.Logf("port B tx_dropped (kernel, after our TX ring) %d", e2etest.IfStat(t, l, l.BridgeNS, l.PortB, "tx_dropped"))
		})
	}
}

// TestStopWithEgressDown stops the datapath while port B is down and a UDP
// stream still arrives on port A: the forwarded frames wait on B's TX ring
// (the kernel refuses the sendto with ENETDOWN and takes none). Stop must
// return within its drain deadline, and the frames it could not send must
// not vanish from the accounting: every frame counted as forwarded either
// completed or is reported as not sent.
func TestStopWithEgressDown(t *testing.T) {
	lab.RequireRoot(t)
	r := newRig(t, nil)
	l := r.Lab
	if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping")
	}
	udp := startUDP(t, l, 9005, 200, 200*time.Microsecond, 0)
	time.Sleep(200 * time.Millisecond)
	setLink(t, l, l.BridgeNS, l.PortB, false)
	time.Sleep(500 * time.Millisecond)
	udp.stopSending()
	start := time.Now()
	st := r.Stop(t) // e2etest.CheckSockets: TX submitted == completed + unsent
	t.Logf("Stop with port B down took %v; UDP sent %d received %d", time.Since(start).Round(time.Millisecond), udp.sent.Load(), udp.got.Load())
	var stuck uint64
	for _, q := range st.Queues {
		stuck += q.Socket[bridge.PortB].TX - q.Socket[bridge.PortB].Completed
	}
	t.Logf("frames forwarded A->B but left on B's TX ring at Stop: %d, counted unsent: %d", stuck, st.Unsent(bridge.PortB))
	// Port B was down for the last 500 ms of a 200 µs stream: frames must
	// have been stuck, and every one of them must be counted.
	if stuck == 0 {
		t.Errorf("no frame left on port B's TX ring: the fault did not happen")
	}
	if got := st.Unsent(bridge.PortB); got != stuck {
		t.Errorf("Unsent(B) = %d, want the %d frames left on the TX ring", got, stuck)
	}
}
