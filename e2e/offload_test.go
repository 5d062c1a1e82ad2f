package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/rules"
)

// TestOffloadUDPEchoAndRuleReload: with the fast path on, a UDP flow's
// echoes go by the fast path once the flow is offered (the first
// datagram NEW and the first echo ESTABLISHED up the slow path); a rule
// reload that drops UDP reaches the offered flow at once, though none of
// its packets comes up the slow path: the next datagrams are judged by
// the new rules (dropped, counted) and none arrives. Frames stay conserved
// (Rig.Stop), the fast-path frames counted beside the sockets'.
func TestOffloadUDPEchoAndRuleReload(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores, Offload: "on", StaticNeighbours: true})
		if on, why := r.DP.Offload(); !on {
			t.Fatalf("fast path off: %s", why)
		}
		addr := &net.UDPAddr{IP: rightIP.AsSlice(), Port: 5003}
		udpEcho(t, r.Lab, r.Lab.RightNS, addr)
		c := dialUDP(t, r.Lab, r.Lab.LeftNS, addr)
		buf := make([]byte, 2048)
		echo := func(n int, tag string) int {
			got := 0
			for i := range n {
				msg := fmt.Sprintf("statewire offload %s %d", tag, i)
				if _, err := c.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				k, err := c.Read(buf)
				if err == nil && string(buf[:k]) == msg {
					got++
				}
			}
			return got
		}
		// The flow is offered once eligible for 10 ms and activated once
		// the worker judged its frames punted while the offer was
		// pending: the first echoes go by the slow path. Once the flow is
		// in the fast path, the next echoes all go by it.
		const n = 200
		if got := echo(n, "before"); got != n {
			t.Errorf("echoed datagrams got %d, want %d", got, n)
		}
		if !testenv.WaitFor(2*time.Second, func() bool { st := r.DP.Stats(); return st.Pipeline.Fast.InFastPath() > 0 }) {
			t.Fatalf("the flow is not in the fast path after %d echoes: %+v", n, r.DP.Stats().Pipeline.Fast)
		}
		mid := r.DP.Stats()
		if got := echo(n, "in the fast path"); got != n {
			t.Errorf("echoed datagrams got %d, want %d", got, n)
		}
		before := r.DP.Stats()
		fastOf := func(s bridge.DatapathStats) uint64 {
			return s.Fast.Packets(bridge.PortA) + s.Fast.Packets(bridge.PortB)
		}
		if fast := fastOf(before) - fastOf(mid); fast < 2*n*9/10 {
			t.Errorf("fast-path frames of %d echoes with the flow in the fast path got %d, want at least 90%% of the %d frames", n, fast, 2*n)
		}

		var ld rules.Loader
		const dropUDP = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p udp -j DROP\nCOMMIT\n"
		if err := ld.Load("drop-udp.rules", strings.NewReader(dropUDP), rules.FamilyIPv4); err != nil {
			t.Fatal(err)
		}
		rs, err := ld.Compile([2]string{r.Lab.PortA, r.Lab.PortB})
		if err != nil {
			t.Fatal(err)
		}
		s := *r.DP.Control().Load()
		s.Rules = rs
		r.DP.Control().Store(&s)
		// The workers take the offered flow back at their next loop; the
		// published counters say when (every 50 ms).
		if !testenv.WaitFor(2*time.Second, func() bool {
			return r.DP.Stats().Pipeline.Fast.TakenBack[bridge.TakeBackSettings] > before.Pipeline.Fast.TakenBack[bridge.TakeBackSettings]
		}) {
			t.Fatalf("the rule reload took no flow back within 2 s")
		}
		const m = 10
		if got := echo(m, "after"); got != 0 {
			t.Errorf("echoes after a rule reload dropping UDP got %d, want 0", got)
		}
		st := r.Stop(t)
		if d := st.Total(bridge.PortA).Drops[bridge.DropRule]; d < m {
			t.Errorf("rule drops from port A got %d, want the %d datagrams after the reload", d, m)
		}
		if fa := st.Fast.Packets(bridge.PortA); fa != before.Fast.Packets(bridge.PortA) {
			t.Errorf("fast path forwarded %d frames from port A after the reload, want 0", fa-before.Fast.Packets(bridge.PortA))
		}
		f := st.Pipeline.Fast
		if f.Offered == 0 {
			t.Errorf("no flow offered")
		}
		if f.TakenBack[bridge.TakeBackSettings] == 0 {
			t.Errorf("the reload took no flow back: %+v", f)
		}
		t.Logf("fast path: %d frames A->B, %d B->A; offered %d, taken back %v %v",
			st.Fast.Packets(bridge.PortA), st.Fast.Packets(bridge.PortB), f.Offered, bridge.TakeBackNames, f.TakenBack)
	})
}

// TestOffloadAutoWithoutNAPI: in the lab as built (GRO off on the hosts'
// veths) auto leaves the fast path off, names the reason, and the bridge
// works as without it.
func TestOffloadAutoWithoutNAPI(t *testing.T) {
	r := e2etest.Start(t, e2etest.Options{Tweak: func(c *bridge.DatapathConfig) { c.Offload = bridge.OffloadAuto }, Offload: "off"})
	if on, why := r.DP.Offload(); on || why == "" {
		t.Errorf("auto with GRO off on the veth peers: on=%v why=%q, want off with a reason", on, why)
	}
	if ok, out := r.Lab.Ping(r.Lab.LeftNS, rightIP.String(), 2); !ok {
		t.Errorf("ping with the fast path off got %q", out)
	}
}
