package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/control"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/packet"
)

// TestOffloadTCPListDeleteAndBack: with the fast path on and the control
// socket served, a TCP connection moves into the fast path (its frames
// are counted there; `conntrack -L` shows it [OFFLOAD] with the live
// timeout the fast path keeps, /proc format without a timeout; -S and
// the metrics count it); `conntrack -D` of that one entry takes it out
// (the listing no longer shows it, its [DESTROY] event is [OFFLOAD]); the
// connection's next packets create what the kernel creates with loose
// pickup, as `conntrack -E` shows them: a [NEW] ESTABLISHED [UNREPLIED]
// entry that the answer and the next ACK make ASSURED; and the flow comes
// back into the fast path.
func TestOffloadTCPListDeleteAndBack(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores, Offload: "on", StaticNeighbours: true})
		if on, why := r.DP.Offload(); !on {
			t.Fatalf("fast path off: %s", why)
		}
		ports := [2]string{r.Lab.PortA, r.Lab.PortB}
		f := &control.Flags{Socket: filepath.Join(t.TempDir(), "sw.sock")}
		stop, err := f.Start(r.DP, control.Options{Ports: ports, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop) // before the rig's Stop: -L and -D need the workers
		sock := f.Path(ports)
		call := func(req control.Request) ([]string, int, error) {
			c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var lines []string
			n, err := control.Do(c, sock, req, func(l string) { lines = append(lines, l) })
			return lines, n, err
		}

		const port = 8090
		ln := listenTCP(t, r.Lab, r.Lab.RightNS, fmt.Sprintf("%s:%d", rightIP, port))
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(c, c); c.Close() }()
			}
		}()
		conn, err := dialTCP(r.Lab, r.Lab.LeftNS, fmt.Sprintf("%s:%d", rightIP, port), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		seq := 0
		echo := func() {
			t.Helper()
			seq++
			msg := fmt.Sprintf("statewire offload tcp %d", seq)
			conn.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, len(msg))
			if _, err := conn.Write([]byte(msg)); err != nil {
				t.Fatalf("echo %d: %v", seq, err)
			}
			if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != msg {
				t.Fatalf("echo %d: got %q, %v", seq, buf, err)
			}
		}
		flow := control.Filter{Proto: 6, DPort: port}
		list := func(format string) []string {
			lines, _, err := call(control.Request{Op: control.OpList, Format: format, Filter: flow})
			if err != nil {
				t.Fatalf("conntrack -L: %v", err)
			}
			return lines
		}
		fastFrames := func(st *bridge.DatapathStats) uint64 {
			return st.Fast.Packets(bridge.PortA) + st.Fast.Packets(bridge.PortB)
		}

		// 1. Into the fast path: its frames are counted there, and the
		// listing says [OFFLOAD] (not [ASSURED]).
		var lines []string
		var st bridge.DatapathStats
		if !testenv.WaitFor(10*time.Second, func() bool {
			echo()
			st = r.DP.Stats()
			lines = list("")
			return fastFrames(&st) > 0 && len(lines) == 1 && strings.Contains(lines[0], "[OFFLOAD]")
		}) {
			t.Fatalf("not in the fast path after %d echoes: %d fast-path frames, listing %q", seq, fastFrames(&st), lines)
		}
		if strings.Contains(lines[0], "[ASSURED]") || !strings.Contains(lines[0], " ESTABLISHED src="+leftIP.String()) {
			t.Errorf("conntrack -L of the offloaded flow: got %q, want ESTABLISHED with [OFFLOAD] alone", lines[0])
		}
		// The timeout is the fast path's: after 2 s of fast-path traffic
		// (no packet up the slow path, no new offer) it is still the full
		// established timeout once the last ACK is through, where the
		// table's copy, of the last slow-path packet, would be 2 s short.
		// A window in which the flow moved out and in again (a stale frame
		// on the other queue, a forced activation) proves nothing: it is
		// tried again, three windows at most.
		est := timeoutSysctl(t, call, "nf_conntrack_tcp_timeout_established")
		var timeout int64
		proved := false
		for try := 0; try < 3 && !proved; try++ {
			var offered uint64
			testenv.WaitFor(5*time.Second, func() bool { // published every 50 ms
				offered = r.DP.Stats().Pipeline.Fast.Offered
				return offered > 0
			})
			inAt := time.Now()
			if !testenv.WaitFor(10*time.Second, func() bool {
				if time.Since(inAt) < 2*time.Second {
					echo()
					return false
				}
				lines = list("")
				timeout = listedTimeout(lines)
				return timeout >= est-1
			}) {
				t.Errorf("offloaded flow's timeout after 2 s of fast-path traffic: got %d (%q), want %d or %d (the fast path's live one)", timeout, lines, est-1, est)
				break
			}
			p := r.DP.Stats().Pipeline.Fast
			proved = p.Offered == offered
			if !proved {
				t.Logf("window %d: the flow was offered again meanwhile (offered %d, then %d; taken back %v); trying another", try+1, offered, p.Offered, p.TakenBack)
			}
		}
		if !proved {
			t.Errorf("in three 2 s windows the flow never stayed in the fast path: the timeout check proves nothing")
		}
		// /proc/net/nf_conntrack prints no timeout for an offloaded entry.
		if proc := list(control.FormatProc); len(proc) != 1 || !strings.HasPrefix(proc[0], "ipv4     2 tcp      6 ESTABLISHED src=") || !strings.Contains(proc[0], " [OFFLOAD] mark=0 zone=0 ") {
			t.Errorf("proc format of the offloaded flow: got %q, want no timeout and [OFFLOAD]", proc)
		}
		if _, off, err := call(control.Request{Op: control.OpCount, Filter: control.Filter{Status: "OFFLOAD"}}); err != nil || off != 1 {
			t.Errorf("conntrack -C --status OFFLOAD: got %d, %v; want 1", off, err)
		}
		var stats []string
		if !testenv.WaitFor(5*time.Second, func() bool { // published every 50 ms
			stats, _, _ = call(control.Request{Op: control.OpStats})
			return strings.Contains(strings.Join(stats, "\n"), "fastpath flows=1 ")
		}) {
			t.Errorf("conntrack -S: got %q, want a fastpath line with flows=1", stats)
		}

		// 2. conntrack -E from here on: subscribed once an event of a
		// UDP probe whose flow the TCP flow's worker owns arrives (each
		// worker notices the listener on its own).
		var evMu sync.Mutex
		var events []string
		evCtx, evCancel := context.WithCancel(context.Background())
		evDone := make(chan struct{})
		go func() {
			defer close(evDone)
			control.Do(evCtx, sock, control.Request{Op: control.OpEvents}, func(l string) {
				evMu.Lock()
				events = append(events, l)
				evMu.Unlock()
			})
		}()
		t.Cleanup(func() { evCancel(); <-evDone })
		eventsOf := func(dport int) []string {
			evMu.Lock()
			defer evMu.Unlock()
			var out []string
			for _, l := range events {
				if strings.Contains(l, fmt.Sprintf(" dport=%d ", dport)) || strings.HasSuffix(l, fmt.Sprintf(" dport=%d", dport)) {
					out = append(out, l)
				}
			}
			return out
		}
		const probePort = 5009
		probeAddr := &net.UDPAddr{IP: rightIP.AsSlice(), Port: probePort}
		udpEcho(t, r.Lab, r.Lab.RightNS, probeAddr)
		tab := r.DP.Table()
		local := conn.LocalAddr().(*net.TCPAddr)
		shard := shardOf(tab, packet.ProtoTCP, leftIP, rightIP, uint16(local.Port), port)
		sport := 20000
		for shardOf(tab, packet.ProtoUDP, leftIP, rightIP, uint16(sport), probePort) != shard {
			sport++
		}
		var probe *net.UDPConn
		if err := r.Lab.Do(r.Lab.LeftNS, func() (err error) {
			probe, err = net.DialUDP("udp4", &net.UDPAddr{IP: leftIP.AsSlice(), Port: sport}, probeAddr)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer probe.Close()
		if !testenv.WaitFor(5*time.Second, func() bool {
			probe.Write([]byte("probe"))
			return len(eventsOf(probePort)) > 0
		}) {
			t.Fatalf("conntrack -E: no event of the UDP probe")
		}

		// 3. conntrack -D of that one entry: out of the table and of the
		// fast path, at once.
		before := r.DP.Stats()
		var deleted []string
		n, err := control.Do(context.Background(), sock, control.Request{Op: control.OpDelete, Filter: flow}, func(l string) { deleted = append(deleted, l) })
		if err != nil || n != 1 || len(deleted) != 1 || !strings.Contains(deleted[0], "[OFFLOAD]") {
			t.Fatalf("conntrack -D: deleted %d, %v, lines %q; want the one offloaded entry", n, err, deleted)
		}
		if lines = list(""); len(lines) != 0 {
			t.Errorf("conntrack -L after -D: got %q, want nothing", lines)
		}
		var fast bridge.FastPathStats
		if !testenv.WaitFor(5*time.Second, func() bool {
			fast = r.DP.Stats().Pipeline.Fast
			return fast.TakenBack[bridge.TakeBackRemove] > before.Pipeline.Fast.TakenBack[bridge.TakeBackRemove]
		}) {
			t.Errorf("conntrack -D took nothing back from the fast path: %+v", fast)
		}

		// 4. The next packets: loose pickup creates an ESTABLISHED entry,
		// [UNREPLIED] until the answer; the ACK after it makes it ASSURED.
		echo()
		var flowEvents []string
		if !testenv.WaitFor(5*time.Second, func() bool {
			flowEvents = eventsOf(port)
			for _, l := range flowEvents {
				if strings.HasPrefix(strings.TrimSpace(l), "[UPDATE]") && strings.Contains(l, "[ASSURED]") {
					return true
				}
			}
			return false
		}) {
			t.Errorf("events after the -D: got %q, want the entry to become ASSURED", flowEvents)
		}
		for _, l := range flowEvents {
			t.Logf("conntrack -E: %s", l)
		}
		if len(flowEvents) < 2 || !strings.HasPrefix(flowEvents[0], "[DESTROY]") || !strings.Contains(flowEvents[0], "[OFFLOAD]") {
			t.Errorf("first event of the flow: got %q, want its [DESTROY] with [OFFLOAD]", flowEvents)
		} else if nw := flowEvents[1]; !strings.HasPrefix(strings.TrimSpace(nw), "[NEW]") || !strings.Contains(nw, " ESTABLISHED src="+leftIP.String()) || !strings.Contains(nw, "[UNREPLIED]") {
			t.Errorf("event after the [DESTROY]: got %q, want [NEW] ESTABLISHED [UNREPLIED] from the client (loose pickup)", nw)
		}
		for _, l := range flowEvents {
			if m := tcpStateRe.FindString(l); m != "" && m != "ESTABLISHED" {
				t.Errorf("event %q: state %s, want ESTABLISHED throughout", l, m)
			}
		}

		// 5. Back into the fast path.
		if !testenv.WaitFor(10*time.Second, func() bool {
			echo()
			st = r.DP.Stats()
			lines = list("")
			return st.Pipeline.Fast.Offered > before.Pipeline.Fast.Offered && fastFrames(&st) > fastFrames(&before) &&
				len(lines) == 1 && strings.Contains(lines[0], "[OFFLOAD]")
		}) {
			t.Errorf("not back in the fast path: offered %d (was %d), fast-path frames %d (were %d), listing %q",
				st.Pipeline.Fast.Offered, before.Pipeline.Fast.Offered, fastFrames(&st), fastFrames(&before), lines)
		}
		t.Logf("fast path: %d frames; offered %d, taken back %v %v", fastFrames(&st), st.Pipeline.Fast.Offered, bridge.TakeBackNames, st.Pipeline.Fast.TakenBack)
	})
}

var (
	tcpStateRe    = regexp.MustCompile(`\b(SYN_SENT2?|SYN_RECV|ESTABLISHED|FIN_WAIT|CLOSE_WAIT|LAST_ACK|TIME_WAIT|CLOSE)\b`)
	listTimeoutRe = regexp.MustCompile(`^tcp +6 (\d+) `)
	sysctlValueRe = regexp.MustCompile(`= (\d+)$`)
)

// shardOf returns the shard (= worker) that owns the flow of the tuple.
func shardOf(tab *flowtable.Table, proto uint8, src, dst netip.Addr, sport, dport uint16) int {
	tu := flowtable.Tuple{Src: packet.AddrFromNetip(src), Dst: packet.AddrFromNetip(dst), SrcPort: sport, DstPort: dport, Proto: proto, L3: 4}
	k := tu.Key()
	return tab.ShardFor(tab.HashKey(&k))
}

// listedTimeout returns the timeout of the one `conntrack -L` line in
// lines, or -1.
func listedTimeout(lines []string) int64 {
	if len(lines) != 1 {
		return -1
	}
	m := listTimeoutRe.FindStringSubmatch(lines[0])
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	return v
}

// timeoutSysctl reads a numeric sysctl through the control socket.
func timeoutSysctl(t *testing.T, call func(control.Request) ([]string, int, error), name string) int64 {
	t.Helper()
	lines, _, err := call(control.Request{Op: control.OpSysctlGet, Name: name})
	if err != nil || len(lines) != 1 {
		t.Fatalf("sysctl %s: got %q, %v", name, lines, err)
	}
	m := sysctlValueRe.FindStringSubmatch(lines[0])
	if m == nil {
		t.Fatalf("sysctl %s: got %q", name, lines[0])
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	return v
}
