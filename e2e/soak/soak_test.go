//go:build soak

package soak

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

var (
	leftIP  = lab.LeftIPv4.Addr()
	rightIP = lab.RightIPv4.Addr()
)

// Short conntrack timeouts, so that entries churn during the run and the
// table empties quickly once the traffic stops. The longest is
// TCPEstablished; after the traffic stops, the only established entries
// left are of connections that closed without a FIN or RST (none expected).
func timeouts() statemachine.Timeouts {
	s := 5 * time.Second
	return statemachine.Timeouts{
		TCPSynSent: s, TCPSynRecv: s, TCPEstablished: 20 * time.Second,
		TCPFinWait: s, TCPCloseWait: s, TCPLastAck: s, TCPTimeWait: s, TCPClose: 2 * time.Second,
		TCPSynSent2: s, TCPMaxRetrans: 10 * time.Second, TCPUnacknowledged: 10 * time.Second,
		UDP: s, UDPStream: 10 * time.Second, ICMP: s, ICMPv6: s, Generic: 10 * time.Second,
	}
}

// The two rule sets swapped during the run. Both accept the soak's traffic;
// each drops something the other lets through (UDP or TCP to port 9), and a
// probe sends UDP to port 9 every second, so a swap shows in the counters.
const (
	rulesOne = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p udp -m udp --dport 9 -j DROP\nCOMMIT\n"
	rulesTwo = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp -m tcp --dport 9 -j DROP\n-A FORWARD -p icmp -j ACCEPT\nCOMMIT\n"
)

const (
	churnPort    = 7000 // short TCP connections
	longPort     = 7001 // the long transfer
	udpPort      = 7002 // UDP echo
	udpFlows     = 32   // UDP sockets alive at a time
	udpRotate    = 8 * time.Second
	reloadEvery  = 5 * time.Second
	dumpEvery    = 3 * time.Second
	longRate     = 2 << 20 // bytes/s of the long transfer
	heapSlackMiB = 4
)

// counters are what the traffic goroutines report.
type counters struct {
	tcpOK, tcpFail     atomic.Uint64
	udpSent, udpEchoed atomic.Uint64
	longBytes          atomic.Uint64
	reloads, dumps     atomic.Uint64
	dumpFail           atomic.Uint64
	lastDump           atomic.Int64 // entries in the last Snapshot
	pings, pingFail    atomic.Uint64
}

type sample struct {
	at                         time.Duration
	heap, heapSys              uint64
	goroutines                 int
	entries                    int
	rxA, fwdA, dropA           uint64
	rxB, fwdB, dropB           uint64
	tcpOK, tcpFail, udp, udpOK uint64
	longBytes, reloads, dumps  uint64
	lastDump                   int64
}

func (s *sample) row() string {
	return strings.Join([]string{
		strconv.FormatFloat(s.at.Seconds(), 'f', 0, 64),
		strconv.FormatUint(s.heap, 10), strconv.FormatUint(s.heapSys, 10), strconv.Itoa(s.goroutines), strconv.Itoa(s.entries),
		strconv.FormatUint(s.rxA, 10), strconv.FormatUint(s.fwdA, 10), strconv.FormatUint(s.dropA, 10),
		strconv.FormatUint(s.rxB, 10), strconv.FormatUint(s.fwdB, 10), strconv.FormatUint(s.dropB, 10),
		strconv.FormatUint(s.tcpOK, 10), strconv.FormatUint(s.tcpFail, 10), strconv.FormatUint(s.udp, 10), strconv.FormatUint(s.udpOK, 10),
		strconv.FormatUint(s.longBytes, 10), strconv.FormatUint(s.reloads, 10), strconv.FormatUint(s.dumps, 10),
		strconv.FormatInt(s.lastDump, 10),
	}, "\t")
}

const tsvHeader = "t_s\theap_inuse\theap_sys\tgoroutines\tentries\trx_a\tfwd_a\tdrop_a\trx_b\tfwd_b\tdrop_b\ttcp_ok\ttcp_fail\tudp_sent\tudp_echoed\tlong_bytes\treloads\tdumps\tdump_entries"

// TestSoak runs the datapath for SOAK_DURATION under mixed traffic and
// churn and checks it for leaks, stability, conservation and expiry.
func TestSoak(t *testing.T) {
	durS := os.Getenv("SOAK_DURATION")
	if durS == "" {
		t.Fatalf("SOAK_DURATION is not set: the soak test runs only on request, e.g. SOAK_DURATION=30m (make soak)")
	}
	dur, err := time.ParseDuration(durS)
	if err != nil || dur < time.Minute {
		t.Fatalf("SOAK_DURATION %q: want a duration of at least 1m", durS)
	}
	interval := 10 * time.Second
	out := os.Getenv("SOAK_OUT")
	if out == "" {
		out = "soak.tsv"
	}
	settings := bridge.DefaultSettings()
	settings.Conntrack.Timeouts = timeouts()
	r := e2etest.Start(t, e2etest.Options{Cores: 2, Settings: settings, Rules: rulesOne})
	l, dp := r.Lab, r.DP
	rs1 := dp.Control().Load().Rules
	rs2 := e2etest.CompileRules(t, l, rulesTwo)

	var c counters
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	servers := startServers(t, l)
	defer servers.close()
	gos := []func(context.Context){
		func(ctx context.Context) { churnTCP(ctx, l, &c) },
		func(ctx context.Context) { flowsUDP(ctx, l, &c) },
		func(ctx context.Context) { probePort9(ctx, l) },
		func(ctx context.Context) { pinger(ctx, l, &c) },
	}
	for _, g := range gos {
		wg.Add(1)
		go func() { defer wg.Done(); g(ctx) }()
	}
	long := startLong(t, l, servers, &c)
	// Rule swaps and table dumps, from the test's side of the datapath.
	wg.Add(2)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(reloadEvery)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			s := *dp.Control().Load()
			s.Rules = [2]*rules.RuleSet{rs2, rs1}[i%2]
			dp.Control().Store(&s)
			c.reloads.Add(1)
		}
	}()
	go func() {
		defer wg.Done()
		tk := time.NewTicker(dumpEvery)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
			n := 0
			err := dp.Table().Snapshot(dctx, func(*flowtable.EntrySnapshot) { n++ })
			dcancel()
			if err != nil {
				if ctx.Err() == nil {
					c.dumpFail.Add(1)
				}
				continue
			}
			c.dumps.Add(1)
			c.lastDump.Store(int64(n))
		}
	}()

	f, err := os.Create(out)
	if err != nil {
		t.Fatalf("SOAK_OUT: %v", err)
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, tsvHeader)
	start := time.Now()
	var samples []sample
	var conservation []string
	take := func() sample {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		st := dp.Stats()
		if err := st.CheckConservation(); err != nil {
			conservation = append(conservation, fmt.Sprintf("at %v: %v", time.Since(start).Round(time.Second), err))
		}
		a, b := st.Total(bridge.PortA), st.Total(bridge.PortB)
		return sample{
			at: time.Since(start), heap: ms.HeapInuse, heapSys: ms.HeapSys, goroutines: runtime.NumGoroutine(),
			entries: dp.Table().Len(),
			rxA:     a.RX, fwdA: a.Forwarded, dropA: a.Dropped(), rxB: b.RX, fwdB: b.Forwarded, dropB: b.Dropped(),
			tcpOK: c.tcpOK.Load(), tcpFail: c.tcpFail.Load(), udp: c.udpSent.Load(), udpOK: c.udpEchoed.Load(),
			longBytes: c.longBytes.Load(), reloads: c.reloads.Load(), dumps: c.dumps.Load(), lastDump: c.lastDump.Load(),
		}
	}
	tk := time.NewTicker(interval)
	for time.Since(start) < dur {
		<-tk.C
		s := take()
		samples = append(samples, s)
		fmt.Fprintln(w, s.row())
		w.Flush()
		t.Logf("%4.0fs heap %5.1f MiB goroutines %3d entries %5d | A in %d fwd %d drop %d | B in %d fwd %d drop %d | tcp %d (fail %d) udp %d/%d long %.0f MiB reloads %d dumps %d",
			s.at.Seconds(), float64(s.heap)/(1<<20), s.goroutines, s.entries, s.rxA, s.fwdA, s.dropA, s.rxB, s.fwdB, s.dropB,
			s.tcpOK, s.tcpFail, s.udpOK, s.udp, float64(s.longBytes)/(1<<20), s.reloads, s.dumps)
	}
	tk.Stop()

	// Stop the traffic, then watch the table empty.
	cancel()
	wg.Wait()
	longErr := long.finish()
	servers.close()
	stopAt := time.Now()
	maxTimeout := 20 * time.Second // TCPEstablished, the longest
	var expiry []string
	var emptyAfter time.Duration
	earlyCount := -1
	for {
		n := dp.Table().Len()
		since := time.Since(stopAt)
		expiry = append(expiry, fmt.Sprintf("%.1fs:%d", since.Seconds(), n))
		if since >= 3*time.Second && earlyCount < 0 {
			earlyCount = n // before the shortest (5 s) timeout of the last packets
		}
		if n == 0 && earlyCount >= 0 {
			emptyAfter = since
			break
		}
		if since > maxTimeout+15*time.Second {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Stop checks its error, conservation, nothing in flight, the UMEM
	// accounting and the XDP programs gone.
	st := r.Stop(t)

	// The verdicts.
	sum := summarize(samples, &st, &c, dur, emptyAfter, earlyCount, expiry)
	t.Log("\n" + sum)
	os.WriteFile(out+".summary.txt", []byte(sum), 0o644)
	if longErr != nil {
		t.Errorf("long transfer: %v", longErr)
	}
	if len(conservation) > 0 {
		t.Errorf("frame conservation failed in %d of %d samples, first: %s", len(conservation), len(samples), conservation[0])
	}
	q := max(len(samples)/4, 1)
	first, last := samples[:q], samples[len(samples)-q:]
	h1, h2 := meanHeap(first), meanHeap(last)
	if limit := h1*1.2 + heapSlackMiB*(1<<20); h2 > limit {
		t.Errorf("heap grew: last quarter mean %.1f MiB, first quarter %.1f MiB: want <= first*1.2 + %d MiB = %.1f MiB",
			h2/(1<<20), h1/(1<<20), heapSlackMiB, limit/(1<<20))
	}
	g1, g2 := maxGoroutines(first), maxGoroutines(last)
	if g2 > g1+10 {
		t.Errorf("goroutines grew: last quarter max %d, first quarter max %d: want at most +10", g2, g1)
	}
	if earlyCount <= 0 {
		t.Errorf("table empty %d s after the traffic stopped, before any timeout: entries expired early", 3)
	}
	if emptyAfter == 0 {
		t.Errorf("table not empty %v after the traffic stopped (longest timeout %v): %s", maxTimeout+15*time.Second, maxTimeout, strings.Join(expiry, " "))
	} else if emptyAfter > maxTimeout+5*time.Second {
		t.Errorf("table empty only %v after the traffic stopped, want within the longest timeout %v + 5 s", emptyAfter, maxTimeout)
	}
	ok, fail := c.tcpOK.Load(), c.tcpFail.Load()
	if ok == 0 || fail*100 > ok {
		t.Errorf("short TCP connections: %d ok, %d failed: want some, and under 1%% failed", ok, fail)
	}
	if c.dumpFail.Load() > 0 {
		t.Errorf("%d table dumps failed (5 s deadline)", c.dumpFail.Load())
	}
	if c.udpEchoed.Load()*100 < c.udpSent.Load()*99 {
		t.Errorf("UDP: %d of %d datagrams echoed, want at least 99%%", c.udpEchoed.Load(), c.udpSent.Load())
	}
}

func meanHeap(s []sample) float64 {
	var sum float64
	for _, x := range s {
		sum += float64(x.heap)
	}
	return sum / float64(len(s))
}

func maxGoroutines(s []sample) int {
	m := 0
	for _, x := range s {
		m = max(m, x.goroutines)
	}
	return m
}

func summarize(samples []sample, st *bridge.DatapathStats, c *counters, dur, emptyAfter time.Duration, early int, expiry []string) string {
	var b strings.Builder
	q := max(len(samples)/4, 1)
	first, last := samples[:q], samples[len(samples)-q:]
	fmt.Fprintf(&b, "soak %v, %d samples every 10 s\n", dur, len(samples))
	fmt.Fprintf(&b, "heap in use after GC: first quarter mean %.2f MiB, last quarter mean %.2f MiB (min %.2f, max %.2f)\n",
		meanHeap(first)/(1<<20), meanHeap(last)/(1<<20), minMax(samples, true)/(1<<20), minMax(samples, false)/(1<<20))
	fmt.Fprintf(&b, "goroutines: first quarter max %d, last quarter max %d\n", maxGoroutines(first), maxGoroutines(last))
	em := 0
	for _, s := range samples {
		em = max(em, s.entries)
	}
	fmt.Fprintf(&b, "table entries: max %d during the run; %d at 3 s after the traffic stopped; empty after %v\n", em, early, emptyAfter.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "expiry curve (time since stop:entries): %s\n", strings.Join(expiry, " "))
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		t := st.Total(p)
		var drops []string
		for i, n := range t.Drops {
			if n > 0 {
				drops = append(drops, fmt.Sprintf("%s=%d", bridge.DropReason(i), n))
			}
		}
		fmt.Fprintf(&b, "%s->%s: in %d, forwarded %d, dropped %d (%s), handed off %d, kernel drops %d\n", p, p.Other(),
			t.RX, t.Forwarded, t.Dropped(), strings.Join(drops, " "), t.HandedOff, st.KernelDrops(p))
	}
	fmt.Fprintf(&b, "conservation at Stop: %v\n", errOr(st.CheckConservation()))
	fmt.Fprintf(&b, "short TCP connections %d ok, %d failed; UDP %d sent, %d echoed; long transfer %.1f MiB; pings %d (%d failed)\n",
		c.tcpOK.Load(), c.tcpFail.Load(), c.udpSent.Load(), c.udpEchoed.Load(), float64(c.longBytes.Load())/(1<<20), c.pings.Load(), c.pingFail.Load())
	fmt.Fprintf(&b, "rule swaps %d, table dumps %d (%d failed)\n", c.reloads.Load(), c.dumps.Load(), c.dumpFail.Load())
	return b.String()
}

func errOr(err error) string {
	if err == nil {
		return "balanced"
	}
	return err.Error()
}

func minMax(s []sample, min bool) float64 {
	v := float64(s[0].heap)
	for _, x := range s {
		h := float64(x.heap)
		if (min && h < v) || (!min && h > v) {
			v = h
		}
	}
	return v
}

// servers are the right host's listeners: a TCP sink that answers each
// short connection with what it read, and a UDP echo.
type servers struct {
	churn, long net.Listener
	udp         *net.UDPConn
	once        sync.Once
	wg          sync.WaitGroup
}

func startServers(t *testing.T, l *lab.Lab) *servers {
	t.Helper()
	s := &servers{}
	err := l.Do(l.RightNS, func() (err error) {
		if s.churn, err = net.Listen("tcp4", hostPort(churnPort)); err != nil {
			return err
		}
		if s.long, err = net.Listen("tcp4", hostPort(longPort)); err != nil {
			return err
		}
		s.udp, err = net.ListenUDP("udp4", &net.UDPAddr{IP: rightIP.AsSlice(), Port: udpPort})
		return err
	})
	if err != nil {
		t.Fatalf("servers: %v", err)
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.churn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 4096)
				var n int64
				for {
					k, err := c.Read(buf)
					n += int64(k)
					if err != nil {
						break
					}
				}
				fmt.Fprintf(c, "%d\n", n)
			}()
		}
	}()
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 2048)
		for {
			k, from, err := s.udp.ReadFromUDP(buf)
			if err != nil {
				return
			}
			s.udp.WriteToUDP(buf[:k], from)
		}
	}()
	return s
}

func (s *servers) close() {
	s.once.Do(func() {
		s.churn.Close()
		s.long.Close()
		s.udp.Close()
		s.wg.Wait()
	})
}

func hostPort(p int) string { return net.JoinHostPort(rightIP.String(), strconv.Itoa(p)) }

// churnTCP opens short connections from the left host one after another:
// each sends 1-16 KiB, half-closes, and reads the byte count back.
// The loop runs inside lab.Do, on one thread in the left namespace, so
// every dial makes its socket there.
func churnTCP(ctx context.Context, l *lab.Lab, c *counters) {
	l.Do(l.LeftNS, func() error { churnLoop(ctx, c); return nil })
}

func churnLoop(ctx context.Context, c *counters) {
	var d net.Dialer
	d.Timeout = 5 * time.Second
	for ctx.Err() == nil {
		conn, err := d.DialContext(ctx, "tcp4", hostPort(churnPort))
		if err != nil {
			if ctx.Err() == nil {
				c.tcpFail.Add(1)
			}
			continue
		}
		n := 1024 + rand.IntN(15*1024)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = conn.Write(make([]byte, n))
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		var line string
		if err == nil {
			line, err = bufio.NewReader(conn).ReadString('\n')
		}
		conn.Close()
		if err == nil && line == strconv.Itoa(n)+"\n" {
			c.tcpOK.Add(1)
		} else if ctx.Err() == nil {
			c.tcpFail.Add(1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// flowsUDP keeps udpFlows UDP sockets talking to the echo server, one
// datagram each every 100 ms, and replaces all of them every udpRotate (new
// source ports: new entries; the old ones expire).
func flowsUDP(ctx context.Context, l *lab.Lab, c *counters) {
	to := &net.UDPAddr{IP: rightIP.AsSlice(), Port: udpPort}
	for ctx.Err() == nil {
		socks := make([]*net.UDPConn, 0, udpFlows)
		var rwg sync.WaitGroup
		for range udpFlows {
			var s *net.UDPConn
			if err := l.Do(l.LeftNS, func() (err error) { s, err = net.DialUDP("udp4", nil, to); return err }); err != nil {
				continue
			}
			socks = append(socks, s)
			rwg.Add(1)
			go func() {
				defer rwg.Done()
				buf := make([]byte, 2048)
				for {
					if _, err := s.Read(buf); err != nil {
						return
					}
					c.udpEchoed.Add(1)
				}
			}()
		}
		until := time.Now().Add(udpRotate)
		for time.Now().Before(until) && ctx.Err() == nil {
			for _, s := range socks {
				if _, err := s.Write([]byte("soak udp datagram")); err == nil {
					c.udpSent.Add(1)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Let the last echoes come back before closing.
		time.Sleep(200 * time.Millisecond)
		for _, s := range socks {
			s.Close()
		}
		rwg.Wait()
	}
}

// probePort9 sends one UDP datagram to port 9 every second: dropped by
// rulesOne, accepted by rulesTwo.
func probePort9(ctx context.Context, l *lab.Lab) {
	var s *net.UDPConn
	if err := l.Do(l.LeftNS, func() (err error) {
		s, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: rightIP.AsSlice(), Port: 9})
		return err
	}); err != nil {
		return
	}
	defer s.Close()
	for ctx.Err() == nil {
		s.Write([]byte("probe"))
		time.Sleep(time.Second)
	}
}

// pinger pings the right host every 2 s.
func pinger(ctx context.Context, l *lab.Lab, c *counters) {
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		out, err := l.Run(pctx, l.LeftNS, "ping", "-c", "1", "-W", "1", rightIP.String())
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.pings.Add(1)
		if err != nil || !strings.Contains(out, "1 received") {
			c.pingFail.Add(1)
		}
		time.Sleep(2 * time.Second)
	}
}

// longTransfer is one TCP connection open for the whole run, carrying a
// deterministic byte stream at longRate; both ends hash what they saw.
type longTransfer struct {
	stop     chan struct{}
	sendDone chan error
	recvDone chan [32]byte
	sent     hash.Hash
}

func startLong(t *testing.T, l *lab.Lab, s *servers, c *counters) *longTransfer {
	t.Helper()
	lt := &longTransfer{stop: make(chan struct{}), sendDone: make(chan error, 1), recvDone: make(chan [32]byte, 1), sent: sha256.New()}
	go func() {
		conn, err := s.long.Accept()
		if err != nil {
			lt.recvDone <- [32]byte{}
			return
		}
		defer conn.Close()
		h := sha256.New()
		io.Copy(h, conn)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		lt.recvDone <- sum
	}()
	var conn net.Conn
	if err := l.Do(l.LeftNS, func() (err error) { conn, err = net.DialTimeout("tcp4", hostPort(longPort), 5*time.Second); return err }); err != nil {
		t.Fatalf("long transfer dial: %v", err)
	}
	go func() {
		defer conn.Close()
		rng := rand.New(rand.NewPCG(1, 2))
		chunk := make([]byte, 32<<10)
		tick := time.Duration(float64(time.Second) * float64(len(chunk)) / longRate)
		for {
			select {
			case <-lt.stop:
				lt.sendDone <- conn.(*net.TCPConn).CloseWrite()
				return
			default:
			}
			for i := range chunk {
				chunk[i] = byte(rng.Uint32())
			}
			conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := conn.Write(chunk); err != nil {
				lt.sendDone <- err
				return
			}
			lt.sent.Write(chunk)
			c.longBytes.Add(uint64(len(chunk)))
			time.Sleep(tick)
		}
	}()
	return lt
}

// finish closes the sending side and compares the hashes.
func (lt *longTransfer) finish() error {
	close(lt.stop)
	if err := <-lt.sendDone; err != nil {
		return fmt.Errorf("send: %w", err)
	}
	select {
	case got := <-lt.recvDone:
		var want [32]byte
		copy(want[:], lt.sent.Sum(nil))
		if got != want {
			return errors.New("received stream's sha256 differs from the sent one")
		}
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("receiver did not see the end within 30 s")
	}
}
