package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
)

// TestPing: ICMP echo both ways through the bridge, accept-all rules.
func TestPing(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores})
		for _, tc := range []struct{ name, ns, to string }{
			{"left to right", r.Lab.LeftNS, rightIP.String()},
			{"right to left", r.Lab.RightNS, leftIP.String()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if ok, out := r.Lab.Ping(tc.ns, tc.to, 3); !ok {
					t.Errorf("ping got %q, want 3 received", out)
				}
			})
		}
	})
}

// TestIPv6: neighbour discovery, ping6 both ways and a TCP transfer over
// IPv6.
func TestIPv6(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores, IPv6: true})
		l6, r6 := lab.LeftIPv6.Addr().String(), lab.RightIPv6.Addr().String()
		for _, tc := range []struct{ ns, to string }{{r.Lab.LeftNS, r6}, {r.Lab.RightNS, l6}} {
			if ok, out := r.Lab.Ping(tc.ns, tc.to, 2); !ok {
				t.Errorf("ping %s from %s got %q, want 2 received", tc.to, tc.ns, out)
			}
		}
		var ln net.Listener
		if err := r.Lab.Do(r.Lab.RightNS, func() (err error) { ln, err = net.Listen("tcp6", net.JoinHostPort(r6, "5003")); return err }); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("hello over v6"))
				c.Close()
			}
		}()
		var c net.Conn
		if err := r.Lab.Do(r.Lab.LeftNS, func() (err error) {
			c, err = net.DialTimeout("tcp6", net.JoinHostPort(r6, "5003"), 5*time.Second)
			return err
		}); err != nil {
			t.Fatalf("dial over IPv6: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "hello over v6" {
			t.Errorf("read over IPv6 got %q, %v, want %q", got, err, "hello over v6")
		}
	})
}

// TestARP: the hosts resolve each other's MAC through the bridge (ARP is
// non-IP and forwarded by default).
func TestARP(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores})
		c := ctx(t, 10*time.Second)
		if _, err := r.Lab.Run(c, r.Lab.LeftNS, "ip", "neigh", "flush", "all"); err != nil {
			t.Fatal(err)
		}
		if ok, out := r.Lab.Ping(r.Lab.LeftNS, rightIP.String(), 1); !ok {
			t.Fatalf("ping got %q, want 1 received", out)
		}
		for _, tc := range []struct {
			ns, ip string
			mac    net.HardwareAddr
		}{
			{r.Lab.LeftNS, rightIP.String(), r.Lab.RightMAC},
			{r.Lab.RightNS, leftIP.String(), r.Lab.LeftMAC},
		} {
			out, err := r.Lab.Run(c, tc.ns, "ip", "neigh", "show", tc.ip)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tc.mac.String()) {
				t.Errorf("neighbour entry in %s for %s got %q, want lladdr %s", tc.ns, tc.ip, out, tc.mac)
			}
		}
		st := r.Stop(t)
		if n := st.Pipeline.Parse[packet.ReasonNotIP]; n < 2 {
			t.Errorf("non-IP frames through the pipeline got %d, want at least 2 (ARP request and reply)", n)
		}
	})
}

// TestTCPTransfer: 10 MB left to right, SHA-256 compared at the far end.
func TestTCPTransfer(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores})
		const size = 10 << 20
		tr := e2etest.TransferOK(t, r.Lab, r.Lab.LeftNS, r.Lab.RightNS, net.JoinHostPort(rightIP.String(), "5001"), size)
		t.Logf("10 MB in %v (%.0f Mbit/s)", tr.Took.Round(time.Millisecond), size*8/tr.Took.Seconds()/1e6)
		st := r.Stop(t)
		if e2etest.StateCount(&st.Pipeline, "ESTABLISHED") == 0 {
			t.Errorf("ESTABLISHED packets got 0, want the transfer's")
		}
	})
}

// TestUDP: datagrams left to right and their echoes back.
func TestUDP(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores})
		addr := &net.UDPAddr{IP: rightIP.AsSlice(), Port: 5002}
		udpEcho(t, r.Lab, r.Lab.RightNS, addr)
		c := dialUDP(t, r.Lab, r.Lab.LeftNS, addr)
		buf := make([]byte, 2048)
		const n = 50
		echoed := 0
		for i := range n {
			msg := fmt.Sprintf("statewire e2e udp %d", i)
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			k, err := c.Read(buf)
			if err == nil && string(buf[:k]) == msg {
				echoed++
			}
		}
		if echoed != n {
			t.Errorf("echoed datagrams got %d, want %d", echoed, n)
		}
	})
}

// statefulRules allow new connections from port A only, and replies and
// related packets both ways.
const statefulRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -m physdev --physdev-in {PortA} -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

// TestStatefulRules: with NEW allowed only from the left, a connection from
// the right is refused, one from the left works, and the ICMP port
// unreachable answering a left-initiated UDP flow reaches the left host.
func TestStatefulRules(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores, Rules: statefulRules})
		l := r.Lab

		t.Run("tcp from right refused", func(t *testing.T) {
			listenTCP(t, l, l.LeftNS, net.JoinHostPort(leftIP.String(), "6001"))
			c, err := dialTCP(l, l.RightNS, net.JoinHostPort(leftIP.String(), "6001"), time.Second)
			if err == nil {
				c.Close()
				t.Fatalf("dial from the right got a connection, want it dropped")
			}
		})
		t.Run("ping from right refused", func(t *testing.T) {
			if ok, out := r.Lab.Ping(l.RightNS, leftIP.String(), 1); ok {
				t.Errorf("ping from the right got %q, want no reply", out)
			}
		})
		t.Run("tcp from left works", func(t *testing.T) {
			e2etest.TransferOK(t, l, l.LeftNS, l.RightNS, net.JoinHostPort(rightIP.String(), "6002"), 1<<20)
		})
		t.Run("icmp port unreachable is related", func(t *testing.T) {
			c := dialUDP(t, l, l.LeftNS, &net.UDPAddr{IP: rightIP.AsSlice(), Port: 6003})
			var err error
			for range 3 {
				c.Write([]byte("anyone?"))
				c.SetReadDeadline(time.Now().Add(time.Second))
				_, err = c.Read(make([]byte, 64))
				if errors.Is(err, syscall.ECONNREFUSED) {
					break
				}
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("read after sending to a closed port got %v, want ECONNREFUSED (the ICMP error passed)", err)
			}
		})
		st := r.Stop(t)
		if n := e2etest.StateCount(&st.Pipeline, "RELATED"); n == 0 {
			t.Errorf("RELATED packets got 0, want the ICMP port unreachable")
		}
		if b := st.Total(bridge.PortB); b.Drops[bridge.DropRule] == 0 {
			t.Errorf("rule drops on port B got 0, want the right host's SYNs and echo request")
		}
	})
}

// TestLiveRuleChange: a rule set published through Control while the
// workers run applies to the next packet, including to flows whose accept
// verdict was cached under the previous rule set.
func TestLiveRuleChange(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores})
		if ok, out := r.Lab.Ping(r.Lab.LeftNS, rightIP.String(), 2); !ok {
			t.Fatalf("ping before the change got %q, want 2 received", out)
		}
		var ld rules.Loader
		const dropICMP = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p icmp -j DROP\nCOMMIT\n"
		if err := ld.Load("drop-icmp.rules", strings.NewReader(dropICMP), rules.FamilyIPv4); err != nil {
			t.Fatal(err)
		}
		rs, err := ld.Compile([2]string{r.Lab.PortA, r.Lab.PortB})
		if err != nil {
			t.Fatal(err)
		}
		s := *r.DP.Control().Load()
		s.Rules = rs
		r.DP.Control().Store(&s)
		if ok, out := r.Lab.Ping(r.Lab.LeftNS, rightIP.String(), 2); ok {
			t.Errorf("ping after publishing a DROP rule for ICMP got %q, want no reply", out)
		}
		st := r.Stop(t)
		if n := st.Total(bridge.PortA).Drops[bridge.DropRule]; n < 2 {
			t.Errorf("rule drops from port A got %d, want at least the 2 echo requests", n)
		}
	})
}

// TestFlushWhileRunning: entries deleted through Table.FlushEntries (the
// `conntrack -F` path) are deleted by the owning workers while they run.
func TestFlushWhileRunning(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores})
		for _, ns := range []string{r.Lab.LeftNS, r.Lab.RightNS} {
			to := rightIP.String()
			if ns == r.Lab.RightNS {
				to = leftIP.String()
			}
			if ok, out := r.Lab.Ping(ns, to, 1); !ok {
				t.Fatalf("ping from %s got %q, want 1 received", ns, out)
			}
		}
		c := ctx(t, 5*time.Second)
		n, err := r.DP.Table().FlushEntries(c)
		if err != nil {
			t.Fatalf("FlushEntries: %v", err)
		}
		if n != 2 {
			t.Errorf("flushed entries got %d, want 2 (one ping each way)", n)
		}
		left := 0
		if err := r.DP.Table().Snapshot(c, func(*flowtable.EntrySnapshot) { left++ }); err != nil {
			t.Fatal(err)
		}
		if left != 0 {
			t.Errorf("entries after flush got %d, want 0", left)
		}
	})
}
