package control

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

// TestMain builds the statewire binary at most once (lab.StatewireBinary)
// and removes it at the end.
func TestMain(m *testing.M) { os.Exit(lab.RunTests(m)) }

// echoPeer starts a TCP echo server on the right host at :8080 (closed in
// t.Cleanup) and returns a dial from the left host to it and an echo check
// of one connection: "ping" out and back within 2 s.
func echoPeer(t *testing.T, l *lab.Lab) (dial func() (net.Conn, error), echo func(net.Conn) error) {
	t.Helper()
	echoServer(t, l)
	right := lab.RightIPv4.Addr().String()
	dial = func() (net.Conn, error) {
		var c net.Conn
		err := l.Do(l.LeftNS, func() (err error) {
			c, err = net.DialTimeout("tcp", right+":8080", 2*time.Second)
			return
		})
		return c, err
	}
	echo = func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		var b [4]byte
		_, err := io.ReadFull(c, b[:])
		return err
	}
	return dial, echo
}

// startRun runs `statewire run` with its control socket at sock (and the
// extra flags) in the lab's bridge namespace, waits up to 5 s for the
// socket to appear, and stops it with SIGTERM in t.Cleanup, failing t
// unless it exits 0. It returns the process and its stderr.
func startRun(t *testing.T, l *lab.Lab, bin, sock string, extra ...string) (*exec.Cmd, *lab.SyncBuffer) {
	t.Helper()
	stderr := &lab.SyncBuffer{}
	args := append([]string{"run", "--port-a", l.PortA, "--port-b", l.PortB, "--ring-size", "512",
		"--control-socket", sock}, extra...)
	run := l.Command(l.BridgeNS, bin, args...)
	run.Stderr = stderr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		run.Process.Signal(syscall.SIGTERM)
		if err := run.Wait(); err != nil {
			t.Errorf("statewire run: %v\n%s", err, stderr.String())
		}
	})
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("no control socket after 5s\n%s", stderr.String())
		}
	}
	return run, stderr
}

// TestLabControl runs a real datapath in a lab with the control server and
// the metrics endpoint, opens a TCP connection through it and exercises the
// operator commands against the live table. Needs root.
func TestLabControl(t *testing.T) {
	l := lab.NewT(t, lab.Options{})
	c := bridge.DefaultDatapathConfig()
	c.PortA, c.PortB = l.PortA, l.PortB
	c.RXSize, c.TXSize, c.FillSize, c.CompletionSize, c.Frames = 512, 512, 512, 512, 2048
	c.Table.Buckets = 1024
	dp, err := bridge.NewDatapath(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Do(l.BridgeNS, dp.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer dp.Stop()
	f := &Flags{Socket: filepath.Join(t.TempDir(), "sw.sock")}
	stop, err := f.Start(dp, Options{Ports: [2]string{l.PortA, l.PortB}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	path := f.Path([2]string{})

	right := lab.RightIPv4.Addr().String()
	dial, echo := echoPeer(t, l)
	conn, err := dial()
	if err != nil {
		t.Fatalf("TCP through the bridge: %v", err)
	}
	defer conn.Close()
	if err := echo(conn); err != nil {
		t.Fatalf("echo: %v", err)
	}

	t.Run("list", func(t *testing.T) {
		lines, n, err := call(t, path, Request{Op: OpList, Filter: Filter{Proto: 6, DPort: 8080}})
		if err != nil || n != 1 {
			t.Fatalf("got %d entries %q, %v; want 1", n, lines, err)
		}
		want := "ESTABLISHED src=" + lab.LeftIPv4.Addr().String() + " dst=" + right
		if !strings.Contains(lines[0], want) || !strings.Contains(lines[0], "[ASSURED]") {
			t.Errorf("got %q, want it to contain %q and [ASSURED]", lines[0], want)
		}
		if _, c, err := call(t, path, Request{Op: OpCount, Filter: Filter{Status: "ASSURED"}}); err != nil || c != 1 {
			t.Errorf("count ASSURED: got %d, %v; want 1", c, err)
		}
	})
	t.Run("sysctl", func(t *testing.T) {
		lines, _, err := call(t, path, Request{Op: OpSysctlSet, Name: "net.netfilter.nf_conntrack_tcp_timeout_established", Value: "3600"})
		if err != nil || len(lines) != 1 || !strings.HasSuffix(lines[0], "= 3600") {
			t.Fatalf("got %q, %v", lines, err)
		}
		if err := echo(conn); err != nil {
			t.Fatalf("echo: %v", err)
		}
		// The next packet re-arms the timer with the new timeout (once the
		// last ACK is through: unacknowledged data keeps 300 s).
		for end := time.Now().Add(2 * time.Second); ; {
			lines, _, err = call(t, path, Request{Op: OpList, Filter: Filter{DPort: 8080}})
			if err == nil && len(lines) == 1 && (strings.Contains(lines[0], " 3599 ") || strings.Contains(lines[0], " 3600 ")) {
				break
			}
			if time.Now().After(end) {
				t.Errorf("got %q, %v; want a timeout of 3599 or 3600", lines, err)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("rules", func(t *testing.T) {
		dir := t.TempDir()
		bad := filepath.Join(dir, "bad.rules")
		os.WriteFile(bad, []byte("*filter\n:FORWARD DROP [0:0]\n-A FORWARD -p tcp --nonsense -j ACCEPT\nCOMMIT\n"), 0o644)
		if _, _, err := call(t, path, Request{Op: OpRulesLoad, Path: bad}); err == nil || !strings.Contains(err.Error(), "bad.rules:3") {
			t.Errorf("bad file: got %v, want an error naming bad.rules:3", err)
		}
		if err := echo(conn); err != nil {
			t.Errorf("traffic after a bad load: %v", err)
		}
		// Established flows stay; new ones to 8080 are dropped.
		good := filepath.Join(dir, "good.rules")
		os.WriteFile(good, []byte("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n-A FORWARD -p tcp --dport 8080 -j DROP\nCOMMIT\n"), 0o644)
		if _, _, err := call(t, path, Request{Op: OpRulesLoad, Path: good}); err != nil {
			t.Fatalf("good file: %v", err)
		}
		if err := echo(conn); err != nil {
			t.Errorf("established flow after the reload: %v", err)
		}
		if c, err := dial(); err == nil {
			c.Close()
			t.Errorf("new connection to 8080 after the reload: got through, want dropped")
		}
		os.WriteFile(good, []byte("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"), 0o644)
		if _, _, err := call(t, path, Request{Op: OpRulesLoad, Path: good}); err != nil {
			t.Fatalf("accept-all file: %v", err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		n, err := Do(ctx, path, Request{Op: OpDelete, Filter: Filter{DPort: 8080}}, func(string) {})
		if err != nil {
			t.Fatalf("delete: %v (the worker loop must call w.shard.ServeRequests)", err)
		}
		if n != 1 {
			t.Errorf("deleted got %d, want 1", n)
		}
		if _, c, _ := call(t, path, Request{Op: OpCount, Filter: Filter{DPort: 8080}}); c != 0 {
			t.Errorf("count after delete got %d, want 0", c)
		}
		// The next packet of the flow creates a new entry (loose pickup).
		if err := echo(conn); err != nil {
			t.Fatalf("echo after delete: %v", err)
		}
		lines, _, err := call(t, path, Request{Op: OpList, Filter: Filter{DPort: 8080}})
		if err != nil || len(lines) != 1 {
			t.Errorf("after the next packet: got %q, %v; want one entry again", lines, err)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		lines, _, err := call(t, path, Request{Op: OpStats})
		if err != nil || len(lines) < 2 || !strings.Contains(lines[0], "cpu=0") || !strings.Contains(lines[1], "expect_create=") {
			t.Errorf("stats: got %q, %v; want a cpu=0 line and a total line", lines, err)
		}
		m, err := ServeMetrics("127.0.0.1:0", dp, [2]string{"A", "B"})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		// The workers publish their counters about every 50 ms: wait until
		// the published ones cover the connection's frames (8 each way at
		// least) and dp.Stats(), the stats line and the scrape say the
		// same, then report what differs.
		scrape := func() string {
			resp, err := http.Get("http://" + m.Addr() + "/metrics")
			if err != nil {
				return "scrape: " + err.Error()
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return string(body)
		}
		var st bridge.DatapathStats
		var diffs []string
		testenv.WaitFor(5*time.Second, func() bool {
			st = dp.Stats()
			lines, _, err := call(t, path, Request{Op: OpStats})
			diffs = statsMismatches(st, [2]string{l.PortA, l.PortB}, lines, err, scrape())
			return len(diffs) == 0 && st.Total(bridge.PortA).Forwarded >= 8 && st.Total(bridge.PortB).Forwarded >= 8
		})
		for _, d := range diffs {
			t.Error(d)
		}
		for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
			tot := st.Total(p)
			if tot.Forwarded < 8 {
				t.Errorf("port %v forwarded %d frames, want at least 8 (handshakes and echoes)", p, tot.Forwarded)
			}
		}
	})
}

// statsMismatches compares one reading of the datapath's counters with the
// stats lines (OpStats: lines, err; the server's port names ports) and the
// metrics scrape (body) taken just after it, and returns each difference
// as a "got, want" message.
func statsMismatches(st bridge.DatapathStats, ports [2]string, lines []string, err error, body string) []string {
	var out []string
	if len(st.Workers) != 1 {
		out = append(out, fmt.Sprintf("DatapathStats.Workers: got %d, want 1", len(st.Workers)))
	} else if err != nil || len(lines) < 2 {
		out = append(out, fmt.Sprintf("stats: got %q, %v; want a cpu=0 line and a total line", lines, err))
	} else {
		// Then, once a frame was dropped (the rules drop the
		// connection's packets after its deletion), one drops line per
		// port with the datapath's counts.
		var wantDrops []string
		ta, tb := st.Total(bridge.PortA), st.Total(bridge.PortB)
		if ta.Dropped()+tb.Dropped()+st.KernelDrops(bridge.PortA)+st.KernelDrops(bridge.PortB) > 0 {
			for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
				tot := st.Total(p)
				w := fmt.Sprintf("drops port=%s", ports[p])
				for r := bridge.DropReason(1); r < bridge.NumDropReasons; r++ {
					w += fmt.Sprintf(" %s=%d", strings.ReplaceAll(r.String(), "-", "_"), tot.Drops[r])
				}
				var full, other uint64
				for i := range st.Queues {
					full += st.Queues[i].Socket[p].RxRingFull
					other += st.Queues[i].Socket[p].RxDropped
				}
				wantDrops = append(wantDrops, w+fmt.Sprintf(" handoff_full=%d kernel_rx_ring_full=%d kernel_rx_dropped=%d", tot.HandoffFull, full, other))
			}
		}
		if fmt.Sprint(lines[2:]) != fmt.Sprint(wantDrops) {
			out = append(out, fmt.Sprintf("stats after the total line: got %q, want %q", lines[2:], wantDrops))
		}
		// The per-worker line carries the worker's pipeline counters.
		w0 := st.Workers[0]
		want := fmt.Sprintf("invalid=%d ignore=%d ", w0.Invalid, w0.Ignore)
		if !strings.Contains(lines[0], want) || !strings.Contains(lines[0], fmt.Sprintf("icmp_error=%d ", w0.ICMPError)) {
			out = append(out, fmt.Sprintf("cpu=0 line: got %q, want %q and icmp_error=%d", lines[0], want, w0.ICMPError))
		}
	}
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		tot := st.Total(p)
		for _, kv := range []struct {
			name string
			v    uint64
		}{{"rx_packets_total", tot.RX}, {"forwarded_packets_total", tot.Forwarded}, {"rx_bytes_total", tot.RXBytes}} {
			want := fmt.Sprintf("statewire_%s{port=%q,queue=\"0\"} %d\n", kv.name, p.String(), kv.v)
			if !strings.Contains(body, want) {
				out = append(out, fmt.Sprintf("scrape lacks %q", want))
			}
		}
	}
	return out
}
