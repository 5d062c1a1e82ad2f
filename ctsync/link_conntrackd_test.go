package ctsync_test

import (
	"context"
	"fmt"
	"math/rand"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/ctsync"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

// The loss tests impair the sync veth with `tc qdisc add dev X root netem
// loss 5% delay 5ms 2ms reorder 25%` on both ends. Some kernels have no
// netem (CONFIG_NET_SCH_NETEM off: tc says "Specified qdisc kind is
// unknown"; the CI VM's is one); there the same impairment comes from
// netemRelay, a UDP relay in the root namespace, in the path between the
// veth and the Link, that does what netem does: drop 5%, send 25% at once
// and the rest 5ms ± 2ms later (so later datagrams overtake them).

var netemArgs = []string{"loss", "5%", "delay", "5ms", "2ms", "reorder", "25%"}

func tcCmd(ns string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.Command("tc", args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns, "tc"}, args...)...)
}

// kernelNetem reports whether dev (in the root namespace) takes a netem
// qdisc, leaving none behind.
func kernelNetem(t *testing.T, dev string) bool {
	t.Helper()
	out, err := tcCmd("", append([]string{"qdisc", "add", "dev", dev, "root", "netem"}, netemArgs...)...).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "qdisc kind is unknown") {
			return false
		}
		t.Fatalf("tc qdisc add dev %s root netem: %v\n%s", dev, err, out)
	}
	_ = tcCmd("", "qdisc", "del", "dev", dev, "root").Run()
	return true
}

// impairment turns the sync path's loss on and off: netem on both veth
// ends when the kernel has it, else the relay.
type impairment struct {
	t      *testing.T
	netem  bool
	devs   [][2]string // {namespace, device}
	relay  *netemRelay
	params netemParams
}

func (im *impairment) set(on bool) {
	im.t.Helper()
	if !im.netem {
		if on {
			im.relay.set(&im.params)
		} else {
			im.relay.set(nil)
		}
		return
	}
	for _, d := range im.devs {
		if on {
			if out, err := tcCmd(d[0], append([]string{"qdisc", "add", "dev", d[1], "root", "netem"}, netemArgs...)...).CombinedOutput(); err != nil {
				im.t.Fatalf("tc netem on %s: %v\n%s", d[1], err, out)
			}
			ns, dev := d[0], d[1]
			im.t.Cleanup(func() { _ = tcCmd(ns, "qdisc", "del", "dev", dev, "root").Run() })
		} else {
			_ = tcCmd(d[0], "qdisc", "del", "dev", d[1], "root").Run()
		}
	}
}

func (im *impairment) String() string {
	if im.netem {
		return "kernel netem " + strings.Join(netemArgs, " ")
	}
	return "netemRelay (no netem in this kernel): " + im.relay.stats()
}

var defaultImpairment = netemParams{loss: 0.05, reorder: 0.25, delay: 5 * time.Millisecond, jitter: 2 * time.Millisecond}

type netemParams struct {
	loss, reorder float64
	delay, jitter time.Duration
}

// netemRelay forwards datagrams between endpoint A (through socket a) and
// endpoint B (through socket b).
type netemRelay struct {
	a, b       *net.UDPConn
	mu         sync.Mutex
	dstA, dstB *net.UDPAddr
	nm         *netemParams
	rng        *rand.Rand
	dropped    [2]int
	delayed    [2]int
	wg         sync.WaitGroup
}

func newNetemRelay(t *testing.T, aBind, bBind string) *netemRelay {
	t.Helper()
	r := &netemRelay{rng: rand.New(rand.NewSource(int64(os.Getpid())))}
	for _, s := range []struct {
		c    **net.UDPConn
		bind string
	}{{&r.a, aBind}, {&r.b, bBind}} {
		ua, err := net.ResolveUDPAddr("udp4", s.bind)
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.ListenUDP("udp4", ua)
		if err != nil {
			t.Fatalf("relay bind %s: %v", s.bind, err)
		}
		*s.c = c
	}
	t.Cleanup(func() { r.a.Close(); r.b.Close(); r.wg.Wait() })
	go r.pump(r.a, r.b, 0)
	go r.pump(r.b, r.a, 1)
	return r
}

func (r *netemRelay) setDst(a, b *net.UDPAddr) {
	r.mu.Lock()
	r.dstA, r.dstB = a, b
	r.mu.Unlock()
}

func (r *netemRelay) set(nm *netemParams) { r.mu.Lock(); r.nm = nm; r.mu.Unlock() }

func (r *netemRelay) stats() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("A->B dropped %d delayed %d, B->A dropped %d delayed %d", r.dropped[0], r.delayed[0], r.dropped[1], r.delayed[1])
}

// pump reads what arrives on in (dir 0: from A) and sends it out of out.
func (r *netemRelay) pump(in, out *net.UDPConn, dir int) {
	buf := make([]byte, 65536)
	for {
		n, _, err := in.ReadFromUDP(buf)
		if err != nil {
			return
		}
		d := append([]byte(nil), buf[:n]...)
		r.mu.Lock()
		to := r.dstB
		if dir == 1 {
			to = r.dstA
		}
		var wait time.Duration
		drop := false
		if nm := r.nm; nm != nil {
			switch {
			case r.rng.Float64() < nm.loss:
				drop = true
				r.dropped[dir]++
			case r.rng.Float64() < nm.reorder:
			default:
				wait = nm.delay + time.Duration((2*r.rng.Float64()-1)*float64(nm.jitter))
				r.delayed[dir]++
			}
		}
		r.mu.Unlock()
		if drop || to == nil {
			continue
		}
		if wait == 0 {
			_, _ = out.WriteToUDP(d, to)
			continue
		}
		r.wg.Add(1)
		time.AfterFunc(wait, func() { defer r.wg.Done(); _, _ = out.WriteToUDP(d, to) })
	}
}

// linkToConntrackd replaces the test socket of p with a Link. With relay
// set, the Link sits on 127.0.0.1 behind a netemRelay bound where the test
// socket was; otherwise it binds there itself.
func linkToConntrackd(t *testing.T, p *peer, relay bool, mut func(*ctsync.LinkConfig)) (*ctsync.Link, *recorder, *netemRelay) {
	t.Helper()
	p.conn.Close()
	here := netip.AddrPortFrom(p.Remote, uint16(p.Port)).String()
	there := netip.AddrPortFrom(p.Local, uint16(p.Port)).String()
	cfg := ctsync.LinkConfig{Listen: here, Peer: there, RcvBuf: 4 << 20, SndBuf: 4 << 20}
	var r *netemRelay
	if relay {
		r = newNetemRelay(t, here, "127.0.0.1:0")
		cfg.Listen, cfg.Peer = "127.0.0.1:0", r.b.LocalAddr().String()
	}
	if mut != nil {
		mut(&cfg)
	}
	l, err := ctsync.NewLink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if r != nil {
		r.setDst(net.UDPAddrFromAddrPort(netip.MustParseAddrPort(there)), net.UDPAddrFromAddrPort(l.LocalAddr()))
	}
	rec := &recorder{}
	l.Start(rec)
	if !testenv.WaitFor(10*time.Second, func() bool { return l.Stats().PeerHello }) {
		t.Fatalf("no HELLO handshake with conntrackd in 10s: %+v", l.Stats())
	}
	return l, rec, r
}

func (p *peer) ctd(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", p.ns, "conntrackd", "-C", p.conf}, args...)...)
}

// insertKernel inserts n ESTABLISHED TCP connections into the kernel
// table of p's namespace, source ports base, base+1, ..., one after the
// other.
func (p *peer) insertKernel(t *testing.T, src, dst netip.Addr, base, n int) {
	t.Helper()
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do conntrack -I -p tcp -s %s -d %s --sport $((%d+i)) --dport 80 --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 3000 2>/dev/null || exit 1; i=$((i+1)); done`,
		n, src, dst, base)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", p.ns, "sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("conntrack -I loop: %v\n%s", err, out)
	}
}

// externalCount counts conntrackd -e lines with the tuple src=src.
func (p *peer) externalCount(src netip.Addr) int {
	out := runQuiet("ip", "netns", "exec", p.ns, "conntrackd", "-C", p.conf, "-e")
	return strings.Count(out, "src="+src.String()+" ")
}

var ctdStats = regexp.MustCompile(`(\d+)\s+Malformed msgs\s+(\d+)\s+Lost msgs`)
var ctdRSQueue = regexp.MustCompile(`resent queue \(len=(\d+)\)`)

// conntrackdStats returns conntrackd -s's malformed and lost counts.
func (p *peer) conntrackdStats(t *testing.T) (malformed, lost int) {
	t.Helper()
	out := p.ctd(t, "-s")
	m := ctdStats.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("conntrackd -s has no message tracking line:\n%s", out)
	}
	malformed, _ = strconv.Atoi(m[1])
	lost, _ = strconv.Atoi(m[2])
	return
}

func (p *peer) rsQueueLen(t *testing.T) int {
	t.Helper()
	out := p.ctd(t, "-s", "rsqueue")
	m := ctdRSQueue.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("conntrackd -s rsqueue: no queue length in\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestLinkConntrackd: our Link against conntrackd 1.4.7 in FTFW mode.
func TestLinkConntrackd(t *testing.T) {
	p := startConntrackd(t, "FTFW")
	l, rec, _ := linkToConntrackd(t, p, false, nil)
	kdst := netip.MustParseAddr("198.19.252.9")
	const n = 40

	// (a) Connections the kernel tracks in conntrackd's namespace arrive in
	// the order they were made; we ACK; conntrackd sees no loss and its
	// resend queue drains.
	t.Run("kernel entries arrive in order", func(t *testing.T) {
		p.insertKernel(t, p.Local, kdst, 41000, n)
		if !testenv.WaitFor(10*time.Second, func() bool { return len(rec.ports()) >= n }) {
			t.Fatalf("got %d of the %d kernel connections; stats %+v", len(rec.ports()), n, l.Stats())
		}
		rec.mu.Lock()
		next := 41000
		for i, c := range rec.cts {
			if c.Orig.Src != p.Local || c.Orig.Dst != kdst || c.TCPState != 3 {
				t.Errorf("message %d: %+v, want %s -> %s ESTABLISHED", i, c.Orig, p.Local, kdst)
			}
			if int(c.Orig.SrcPort) == next {
				next++
			} else if int(c.Orig.SrcPort) > next {
				t.Errorf("message %d: port %d before %d", i, c.Orig.SrcPort, next)
			}
		}
		rec.mu.Unlock()
		// Watch a few alive periods: our ACKs empty conntrackd's resend
		// queue, nothing is resent, nothing is lost.
		st0 := l.Stats()
		var rs int
		if !testenv.WaitFor(10*time.Second, func() bool {
			rs = p.rsQueueLen(t)
			return rs <= 2 && l.Stats().MsgsRecv >= st0.MsgsRecv+3
		}) {
			t.Errorf("conntrackd's resend queue holds %d after our ACKs, want at most 2 (its last control messages)", rs)
		}
		st := l.Stats()
		malformed, lost := p.conntrackdStats(t)
		t.Logf("conntrackd: malformed %d, lost %d, resend queue %d; link: %+v", malformed, lost, rs, st)
		if malformed != 0 || lost != 0 {
			t.Errorf("conntrackd counted %d malformed and %d lost messages from us, want 0", malformed, lost)
		}
		if st.DataRecv != st0.DataRecv || st.NacksRecv != 0 || st.NacksSent != 0 || st.Lost != 0 || st.Malformed != 0 || st.AcksSent == 0 {
			t.Errorf("link: data %d -> %d (a resend?), NACKs recv %d sent %d, lost %d, malformed %d, ACKs sent %d; want no change, 0s, and ACKs",
				st0.DataRecv, st.DataRecv, st.NacksRecv, st.NacksSent, st.Lost, st.Malformed, st.AcksSent)
		}
	})

	// (b) What we send appears in conntrackd's external cache.
	src := netip.MustParseAddr("198.19.251.1")
	t.Run("our SendCT in conntrackd -e", func(t *testing.T) {
		for i := 0; i < n; i++ {
			c := ct(i)
			c.Orig.Src = src
			if err := l.SendCT(ctsync.TypeCTNew, c); err != nil {
				t.Fatal(err)
			}
		}
		var got int
		if !testenv.WaitFor(10*time.Second, func() bool { got = p.externalCount(src); return got == n }) {
			t.Fatalf("conntrackd -e lists %d of our %d connections", got, n)
		}
		ext := runQuiet("ip", "netns", "exec", p.ns, "conntrackd", "-C", p.conf, "-e")
		for _, want := range []string{"src=198.19.251.1 dst=198.18.2.2 sport=1024 dport=443", "ESTABLISHED"} {
			if !strings.Contains(ext, want) {
				t.Errorf("conntrackd -e lacks %q:\n%s", want, ext)
			}
		}
	})

	// (c) conntrackd -n asks us for a resync; our RequestResync makes
	// conntrackd send its internal cache again.
	t.Run("resync both ways", func(t *testing.T) {
		p.ctd(t, "-n")
		if !testenv.WaitFor(10*time.Second, func() bool { return rec.resyncCount() >= 1 }) {
			t.Fatalf("conntrackd -n did not reach our Handler; stats %+v", l.Stats())
		}
		before := rec.count()
		l.RequestResync()
		if !testenv.WaitFor(10*time.Second, func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			seen := map[uint16]bool{}
			for _, c := range rec.cts[before:] {
				seen[c.Orig.SrcPort] = true
			}
			return len(seen) >= n
		}) {
			t.Fatalf("after RequestResync conntrackd resent %d messages, want its %d connections", rec.count()-before, n)
		}
		st := l.Stats()
		if st.ResyncsServed != 1 || st.ResyncsRequested != 1 {
			t.Errorf("resyncs served %d requested %d, want 1 and 1", st.ResyncsServed, st.ResyncsRequested)
		}
	})
}

// TestLinkConntrackdLoss: 2000 connections each way between our Link and
// conntrackd through 5% loss, 5ms ± 2ms delay and 25% reordering; once the
// path is clean again, both sides have everything.
func TestLinkConntrackdLoss(t *testing.T) {
	p := startConntrackd(t, "FTFW")
	im := &impairment{t: t, params: defaultImpairment,
		devs: [][2]string{{"", fmt.Sprintf("swcr%d", os.Getpid())}, {p.ns, fmt.Sprintf("swcn%d", os.Getpid())}}}
	im.netem = kernelNetem(t, im.devs[0][1])
	l, rec, r := linkToConntrackd(t, p, !im.netem, nil)
	im.relay = r
	const n = 2000
	kdst := netip.MustParseAddr("198.19.252.9")
	src := netip.MustParseAddr("198.19.251.1")
	im.set(true)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			c := ct(i)
			c.Orig.Src = src
			if err := l.SendCT(ctsync.TypeCTNew, c); err != nil {
				t.Errorf("SendCT %d: %v", i, err)
				return
			}
			if i%100 == 99 {
				// Batches of 100: wait for each to leave.
				testenv.WaitFor(time.Second, func() bool { return l.Stats().TxQueueLen == 0 })
			}
		}
	}()
	p.insertKernel(t, p.Local, kdst, 20000, n)
	wg.Wait()
	// Let the lossy path carry the tail too, then clean it.
	testenv.WaitFor(2*time.Second, func() bool { return len(rec.ports()) == n })
	im.set(false)
	t.Logf("impairment: %s", im)
	var ours int
	if !testenv.WaitFor(60*time.Second, func() bool {
		ours = p.externalCount(src)
		return ours == n && len(rec.ports()) == n
	}) {
		t.Fatalf("after the loss: conntrackd -e has %d of our %d, we have %d of its %d; link %+v", ours, n, len(rec.ports()), n, l.Stats())
	}
	st := l.Stats()
	_, lost := p.conntrackdStats(t)
	t.Logf("link: %+v", st)
	t.Logf("conntrackd lost %d messages from us (it counts each gap as its size + 2)", lost)
	if st.NacksSent == 0 || st.NacksRecv == 0 || st.Resent == 0 || st.Lost == 0 || lost == 0 {
		t.Errorf("NACKs sent %d received %d, resent %d, we lost %d, conntrackd lost %d: 5%% loss should show in each", st.NacksSent, st.NacksRecv, st.Resent, st.Lost, lost)
	}
}

// vethNS makes a namespace with a veth pair to the root namespace: the
// namespace's end has nsAddr, the root's rootAddr (a /30).
func vethNS(t *testing.T) (ns string, nsAddr, rootAddr netip.Addr) {
	t.Helper()
	lab.RequireRoot(t)
	id := os.Getpid()%200 + 1
	ns = fmt.Sprintf("swftfw%d", os.Getpid())
	nsAddr = netip.MustParseAddr(fmt.Sprintf("198.19.%d.5", id))
	rootAddr = netip.MustParseAddr(fmt.Sprintf("198.19.%d.6", id))
	vr, vn := fmt.Sprintf("swfr%d", os.Getpid()), fmt.Sprintf("swfn%d", os.Getpid())
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "link", "add", vr, "type", "veth", "peer", "name", vn)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", vr).Run() })
	run(t, "ip", "link", "set", vn, "netns", ns)
	run(t, "ip", "addr", "add", rootAddr.String()+"/30", "dev", vr)
	run(t, "ip", "link", "set", vr, "up")
	run(t, "ip", "-n", ns, "addr", "add", nsAddr.String()+"/30", "dev", vn)
	run(t, "ip", "-n", ns, "link", "set", vn, "up")
	return ns, nsAddr, rootAddr
}

// TestLinkLinkLoss: two Links, one in a namespace across a veth pair, the
// other behind the lossy relay in the root namespace, each sending 2000
// connections through 5% loss, delay and reordering.
func TestLinkLinkLoss(t *testing.T) {
	ns, nsAddr, rootAddr := vethNS(t)
	const port = 3781
	im := &impairment{t: t, params: defaultImpairment,
		devs: [][2]string{{"", fmt.Sprintf("swfr%d", os.Getpid())}, {ns, fmt.Sprintf("swfn%d", os.Getpid())}}}
	im.netem = kernelNetem(t, im.devs[0][1])
	aAddr, rootEnd := netip.AddrPortFrom(nsAddr, port), netip.AddrPortFrom(rootAddr, port)
	bListen, bPeer := rootEnd.String(), aAddr.String()
	if !im.netem {
		im.relay = newNetemRelay(t, rootEnd.String(), "127.0.0.1:0")
		bListen, bPeer = "127.0.0.1:0", im.relay.b.LocalAddr().String()
	}
	var a *ctsync.Link
	if err := lab.Do(ns, func() error {
		var err error
		a, err = ctsync.NewLink(ctsync.LinkConfig{Listen: aAddr.String(), Peer: rootEnd.String(), RcvBuf: 4 << 20})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := ctsync.NewLink(ctsync.LinkConfig{Listen: bListen, Peer: bPeer, RcvBuf: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if im.relay != nil {
		im.relay.setDst(net.UDPAddrFromAddrPort(aAddr), net.UDPAddrFromAddrPort(b.LocalAddr()))
	}
	ra, rb := &recorder{}, &recorder{}
	a.Start(ra)
	b.Start(rb)
	if !testenv.WaitFor(10*time.Second, func() bool { return a.Stats().PeerHello && b.Stats().PeerHello }) {
		t.Fatalf("no HELLO handshake: A %+v B %+v", a.Stats(), b.Stats())
	}
	im.set(true)
	const n = 2000
	for i := 0; i < n; i += 100 {
		sendAll(t, a, i, i+100)
		sendAll(t, b, i, i+100)
		testenv.WaitFor(time.Second, func() bool { return a.Stats().TxQueueLen == 0 && b.Stats().TxQueueLen == 0 })
	}
	testenv.WaitFor(2*time.Second, func() bool { return len(ra.ports()) == n && len(rb.ports()) == n })
	im.set(false)
	t.Logf("impairment: %s", im)
	if !testenv.WaitFor(30*time.Second, func() bool { return len(ra.ports()) == n && len(rb.ports()) == n }) {
		t.Fatalf("A has %d, B has %d of %d; A %+v B %+v", len(ra.ports()), len(rb.ports()), n, a.Stats(), b.Stats())
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("A: %+v", sa)
	t.Logf("B: %+v", sb)
	if sa.Resent == 0 || sb.Resent == 0 || sa.NacksSent == 0 || sb.NacksSent == 0 {
		t.Errorf("resent A %d B %d, NACKs sent A %d B %d: want all > 0 under 5%% loss", sa.Resent, sb.Resent, sa.NacksSent, sb.NacksSent)
	}
}
