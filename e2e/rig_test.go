package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/bridge/xdpprog"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/rules"
)

// TestMain builds the statewire binary at most once (lab.StatewireBinary)
// and removes it at the end.
func TestMain(m *testing.M) { os.Exit(lab.RunTests(m)) }

// rig is one lab with the datapath running on its bridge ports.
type rig struct {
	l  *lab.Lab
	dp *bridge.Datapath
}

// rigOptions vary a rig.
type rigOptions struct {
	cores int
	// rulesFor returns iptables-save text for the lab's port names; nil
	// accepts everything.
	rulesFor func(portA, portB string) string
	attach   xdpprog.Mode // XDP attach mode (default native)
	ipv6     bool         // give the hosts IPv6 addresses too
	cpus     []int        // pin worker i to cpus[i]
}

// coreCounts are the worker counts every scenario runs with, on 2-queue veths.
var coreCounts = []int{1, 2}

// forEachCores runs fn as a subtest per worker count.
func forEachCores(t *testing.T, fn func(t *testing.T, cores int)) {
	for _, c := range coreCounts {
		t.Run(fmt.Sprintf("cores=%d", c), func(t *testing.T) { fn(t, c) })
	}
}

// newRig builds a 2-queue lab, starts the datapath in its bridge namespace,
// and registers the end-of-test checks: frame conservation per direction,
// no XDP program left on the ports, and (lab.NewT, after the lab is gone)
// no namespace left.
func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	l := lab.NewT(t, lab.Options{Queues: 2, IPv6: o.ipv6})
	cfg := bridge.DefaultDatapathConfig()
	cfg.PortA, cfg.PortB = l.PortA, l.PortB
	cfg.Cores, cfg.Queues = o.cores, 2
	cfg.Attach = o.attach
	cfg.CPUs = o.cpus
	cfg.RXSize, cfg.TXSize, cfg.FillSize, cfg.CompletionSize, cfg.Frames = 1024, 1024, 1024, 1024, 4096
	cfg.Logf = t.Logf
	cfg.Table.Buckets = 4096
	s := bridge.DefaultSettings()
	if o.rulesFor != nil {
		rs, err := rules.FromText("e2e.rules", o.rulesFor(l.PortA, l.PortB), [2]string{l.PortA, l.PortB})
		if err != nil {
			t.Fatalf("rules: %v", err)
		}
		s.Rules = rs
	}
	cfg.Settings = s
	dp, err := bridge.NewDatapath(cfg)
	if err != nil {
		t.Fatalf("NewDatapath: %v", err)
	}
	if err := l.Do(l.BridgeNS, dp.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	r := &rig{l: l, dp: dp}
	t.Cleanup(func() { r.finish(t) })
	return r
}

// finish stops the datapath and checks the accounting and the ports.
func (r *rig) finish(t *testing.T) {
	t.Helper()
	st, err := r.dp.Stop()
	if err != nil {
		t.Errorf("Stop: %v", err)
	}
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		c := st.Total(p)
		t.Logf("%s->%s: in %d, forwarded %d, dropped %d (%v), via another core %d, kernel drops %d",
			p, p.Other(), c.RX, c.Forwarded, c.Dropped(), c.DropList(), c.HandedOff, st.KernelDrops(p))
		if c.InFlight != 0 {
			t.Errorf("%s: %d frames still in flight after Stop, want 0", p, c.InFlight)
		}
	}
	if err := st.CheckConservation(); err != nil {
		t.Errorf("frame conservation: %v", err)
	}
	if err := r.l.CheckNoXDP(); err != nil {
		t.Errorf("after Stop: %v", err)
	}
}

func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// listenTCP opens a TCP listener in ns.
func listenTCP(t *testing.T, l *lab.Lab, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := l.Do(ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialTCP connects from ns to addr within timeout.
func dialTCP(l *lab.Lab, ns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := l.Do(ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	return c, err
}

// transfer sends size random bytes from fromNS to a listener in toNS and
// returns the SHA-256 of what was sent and of what arrived.
func transfer(t *testing.T, l *lab.Lab, fromNS, toNS, addr string, size int) (sent, got [32]byte, n int64) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	tr, err := l.TransferTCP(context.Background(), fromNS, toNS, addr, data)
	if err != nil {
		t.Fatal(err)
	}
	return tr.Sent, tr.Got, tr.N
}

// udpEcho starts an echo server on addr in ns.
func udpEcho(t *testing.T, l *lab.Lab, ns string, addr *net.UDPAddr) {
	t.Helper()
	var srv *net.UDPConn
	if err := l.Do(ns, func() (err error) { srv, err = net.ListenUDP("udp4", addr); return err }); err != nil {
		t.Fatalf("udp listen: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			srv.WriteToUDP(buf[:k], from)
		}
	}()
}

// dialUDP makes a connected UDP socket in ns.
func dialUDP(t *testing.T, l *lab.Lab, ns string, to *net.UDPAddr) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := l.Do(ns, func() (err error) { c, err = net.DialUDP("udp4", nil, to); return err }); err != nil {
		t.Fatalf("udp dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readCounter reads an interface statistic inside ns.
func readCounter(t *testing.T, l *lab.Lab, ns, ifc, name string) uint64 {
	t.Helper()
	n, err := l.IfStat(ns, ifc, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var (
	leftIP  = lab.LeftIPv4.Addr()
	rightIP = lab.RightIPv4.Addr()
)
