package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/control"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/packet"
)

// explain returns what a failing step needs to be understood, read from
// wire w right after the step failed: for a `statewire run` wire its
// `conntrack -S` (the drops by reason, reject_* and tx-full counts, the
// hand-offs, the fast path's flows, punts and redirect errors) and its
// `conntrack -L` entries for frame's addresses and protocol (OFFLOAD: the
// fast path holds the flow); for every wire the kernel's counters of the
// bridge's ports and of both hosts' interfaces (`ip -s link`: a frame a
// veth could not deliver is a TX drop at the sender, one the receiving
// CPU's backlog had no room for an RX drop at the host, see
// softnetDropped) and, where the driver has them, the ports' `ethtool -S`
// (veth's XDP counters: redirects, XDP drops, xmit errors). Each read has
// its own deadline; a read that fails says so in the text instead of
// failing the test a second time. Called from the test goroutine only.
func (w *spoofWire) explain(frame []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s, read at %s\n", w.name, time.Now().UTC().Format("15:04:05.000"))
	if w.ctl != "" {
		var p packet.Packet
		packet.Parse(frame, 0, packet.Options{}, &p)
		f := control.Filter{Proto: p.Proto}
		if p.IPVersion != 0 {
			f.Src, f.Dst = addrOf(p.Src, p.IPVersion), addrOf(p.Dst, p.IPVersion)
		}
		for _, r := range []struct {
			what string
			req  control.Request
		}{
			{"statewire conntrack -S", control.Request{Op: control.OpStats}},
			{fmt.Sprintf("statewire conntrack -L -p %d -s %s -d %s", f.Proto, f.Src, f.Dst), control.Request{Op: control.OpList, Filter: f}},
		} {
			fmt.Fprintf(&b, "$ %s\n", r.what)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			n, err := control.Do(ctx, w.ctl, r.req, func(l string) { b.WriteString(l + "\n") })
			cancel()
			if err != nil {
				fmt.Fprintf(&b, "(failed: %v)\n", err)
			} else if r.req.Op == control.OpList {
				fmt.Fprintf(&b, "(%d entries)\n", n)
			}
		}
	}
	l := w.lab
	for _, c := range []struct {
		ns   string
		args []string
	}{
		{l.BridgeNS, []string{"ip", "-s", "link", "show", "dev", l.PortA}},
		{l.BridgeNS, []string{"ip", "-s", "link", "show", "dev", l.PortB}},
		{l.LeftNS, []string{"ip", "-s", "link", "show", "dev", l.LeftIf}},
		{l.RightNS, []string{"ip", "-s", "link", "show", "dev", l.RightIf}},
		{l.BridgeNS, []string{"ethtool", "-S", l.PortA}},
		{l.BridgeNS, []string{"ethtool", "-S", l.PortB}},
	} {
		fmt.Fprintf(&b, "$ %s (%s)\n", strings.Join(c.args, " "), c.ns)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := l.Run(ctx, c.ns, c.args[0], c.args[1:]...)
		cancel()
		b.WriteString(out)
		if err != nil {
			fmt.Fprintf(&b, "(failed: %v)\n", err)
		}
	}
	return b.String()
}

// softnetDropped returns, per CPU, the frames the kernel dropped because
// the CPU's backlog was full (/proc/net/softnet_stat, second column): a
// frame a veth hands to its peer outside NAPI (netif_rx) waits there, and
// with netdev_max_backlog frames queued by anything on the machine (another
// test's flood) it is dropped, counted here and in the receiving veth's
// rx_dropped. nil when the file cannot be read.
func softnetDropped() []uint64 {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return nil
	}
	var out []uint64
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			return nil
		}
		n, err := strconv.ParseUint(f[1], 16, 64)
		if err != nil {
			return nil
		}
		out = append(out, n)
	}
	return out
}

// pingAccounted pings to from ns of l count times (lab.Ping) and, when an
// echo went missing while the machine's receive backlogs overflowed
// (another package's flood running at the same time: the backlog is per
// CPU and shared by every namespace), logs it and pings once more: that
// loss was the kernel's on the way into a host, not the wire's.
func pingAccounted(t *testing.T, l *lab.Lab, ns, to string, count int) (ok bool, out string) {
	t.Helper()
	before := softnetDropped()
	if ok, out = l.Ping(ns, to, count); ok {
		return ok, out
	}
	if n := backlogTotal(before); n > 0 {
		t.Logf("ping from %s lost an echo during %d backlog drops on this machine; pinging again:\n%s", ns, n, out)
		return l.Ping(ns, to, count)
	}
	return ok, out
}

// backlogTotal returns the backlog drops on all CPUs since before
// (softnetDropped); 0 when unknown.
func backlogTotal(before []uint64) uint64 {
	now := softnetDropped()
	if before == nil || len(now) != len(before) {
		return 0
	}
	var total uint64
	for i := range now {
		total += now[i] - before[i]
	}
	return total
}

// backlogDrops describes the backlog drops since before (softnetDropped):
// a frame or answer missing in a step with such drops may have been lost
// in the kernel on its way into a host, not in the wire under test.
func backlogDrops(before []uint64) string {
	now := softnetDropped()
	if before == nil || len(now) != len(before) {
		return "backlog drops during the step: unknown (/proc/net/softnet_stat unreadable)\n"
	}
	var d []string
	var total uint64
	for i := range now {
		d = append(d, strconv.FormatUint(now[i]-before[i], 10))
		total += now[i] - before[i]
	}
	return fmt.Sprintf("backlog drops on this machine during the step (netdev_max_backlog full, /proc/net/softnet_stat): %d (per CPU %s)\n",
		total, strings.Join(d, " "))
}
