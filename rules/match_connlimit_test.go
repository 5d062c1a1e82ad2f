package rules

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/statewire/statewire/packet"
)

// TestConnlimitSaveForm: inputs and what iptables-legacy-save 1.8.9
// printed for them (iptables-legacy -A in a namespace; e2e
// TestConnlimitAgainstKernel compares a set of them live).
func TestConnlimitSaveForm(t *testing.T) {
	tests := []struct {
		fam      Family
		in, want string
	}{
		{FamilyIPv4, "-m connlimit --connlimit-above 2", "-m connlimit --connlimit-above 2 --connlimit-mask 32 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit --connlimit-upto 2", "-m connlimit --connlimit-upto 2 --connlimit-mask 32 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit ! --connlimit-above 2", "-m connlimit --connlimit-upto 2 --connlimit-mask 32 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit ! --connlimit-upto 2", "-m connlimit --connlimit-above 2 --connlimit-mask 32 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-mask 24 --connlimit-daddr", "-m connlimit --connlimit-above 2 --connlimit-mask 24 --connlimit-daddr"},
		{FamilyIPv4, "-m connlimit --connlimit-above 0x10 --connlimit-saddr", "-m connlimit --connlimit-above 16 --connlimit-mask 32 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit --connlimit-above 4294967295", "-m connlimit --connlimit-above 4294967295 --connlimit-mask 32 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit --connlimit-above +2", "-m connlimit --connlimit-above 2 --connlimit-mask 32 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit --connlimit-above 010", "-m connlimit --connlimit-above 8 --connlimit-mask 32 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-mask 0", "-m connlimit --connlimit-above 2 --connlimit-mask 0 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-mask 0x18", "-m connlimit --connlimit-above 2 --connlimit-mask 24 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-mask 010", "-m connlimit --connlimit-above 2 --connlimit-mask 8 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-mask 255.255.255.0", "-m connlimit --connlimit-above 2 --connlimit-mask 24 --connlimit-saddr"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-mask 0.0.0.0", "-m connlimit --connlimit-above 2 --connlimit-mask 0 --connlimit-saddr"},
		{FamilyIPv6, "-m connlimit --connlimit-upto 3", "-m connlimit --connlimit-upto 3 --connlimit-mask 128 --connlimit-saddr"},
		{FamilyIPv6, "-m connlimit --connlimit-above 2 --connlimit-mask 64", "-m connlimit --connlimit-above 2 --connlimit-mask 64 --connlimit-saddr"},
		{FamilyIPv6, "-m connlimit --connlimit-above 2 --connlimit-mask ffff:ffff::", "-m connlimit --connlimit-above 2 --connlimit-mask 32 --connlimit-saddr"},
		{FamilyIPv6, "-m connlimit --connlimit-above 2 --connlimit-mask 033", "-m connlimit --connlimit-above 2 --connlimit-mask 27 --connlimit-saddr"},
		// -p tcp --syn before it, as iptables-save orders them.
		{FamilyIPv4, "-p tcp --syn -m connlimit --connlimit-above 3", "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m connlimit --connlimit-above 3 --connlimit-mask 32 --connlimit-saddr"},
	}
	for _, tc := range tests {
		rs := mustLoad(t, wrap("filter", "-A FORWARD "+tc.in+" -j DROP"), tc.fam)
		if got := saveString(t, rs, tc.fam); !strings.Contains(got, "-A FORWARD "+tc.want+" -j DROP\n") {
			t.Errorf("%v %q saved as\n%s\nwant %q", tc.fam, tc.in, got, tc.want)
		}
	}
}

// TestConnlimitRefusals: what iptables-legacy 1.8.9 refused on the same
// text (by hand), and the masks with holes, which statewire refuses.
func TestConnlimitRefusals(t *testing.T) {
	for _, tc := range []struct {
		fam  Family
		rule string
		want error
		msg  string
	}{
		{FamilyIPv4, "-m connlimit --connlimit-above 4294967296", ErrSyntax, "bad value"},
		{FamilyIPv4, "-m connlimit --connlimit-above -1", ErrSyntax, "bad value"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2x", ErrSyntax, "bad value"},
		{FamilyIPv4, "-m connlimit --connlimit-mask 24", ErrSyntax, "--connlimit-above\" or \"--connlimit-upto"},
		{FamilyIPv4, "-m connlimit", ErrSyntax, "you must specify"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-above 3", ErrSyntax, "only be used once"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-upto 3", ErrSyntax, "cannot be used together"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-saddr --connlimit-daddr", ErrSyntax, "cannot be used together"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-daddr --connlimit-daddr", ErrSyntax, "only be used once"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 ! --connlimit-mask 24", ErrSyntax, "cannot be inverted"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 ! --connlimit-daddr", ErrSyntax, "cannot be inverted"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-mask 24 --connlimit-mask 16", ErrSyntax, "only be used once"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-mask 24/24", ErrSyntax, "bad --connlimit-mask"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-mask 08", ErrSyntax, "bad --connlimit-mask"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-mask -1", ErrSyntax, "bad --connlimit-mask"},
		{FamilyIPv6, "-m connlimit --connlimit-above 2 --connlimit-mask 129", ErrSyntax, "bad --connlimit-mask"},
		{FamilyIPv4, "--connlimit-above 2", ErrSyntax, "needs -m connlimit"},
		{FamilyIPv4, "-m connlimit --connlimit-above 2 -m limit", ErrUnsupported, "one -m limit, -m recent or -m connlimit per rule"},
		// iptables takes these and prints them as another mask.
		{FamilyIPv4, "-m connlimit --connlimit-above 2 --connlimit-mask 255.0.255.0", ErrUnsupported, "holes"},
		{FamilyIPv6, "-m connlimit --connlimit-above 2 --connlimit-mask ffff:0:ffff::", ErrUnsupported, "holes"},
	} {
		_, err := load(t, wrap("filter", "-A FORWARD "+tc.rule), tc.fam)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != 6 || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: got %v, want %v on line 6 containing %q", tc.rule, err, tc.want, tc.msg)
		}
	}
	if _, err := load(t, wrap("raw", "-A PREROUTING -m connlimit --connlimit-above 2"), FamilyIPv4); !errors.Is(err, ErrUnsupported) {
		t.Errorf("connlimit in the raw table: got %v, want ErrUnsupported", err)
	}
}

// clConn is a test connection with its counts.
type clConn struct {
	p      *packet.Packet
	conn   Conn
	counts ConnCounts
}

func newClConn(src, dst string, sport, dport uint16) *clConn {
	p := tcpPkt(src, dst, sport, dport, syn)
	return &clConn{p: p, conn: Conn{Proto: 6, Src: p.Src, Dst: p.Dst, SrcPort: sport, DstPort: dport}}
}

// judge runs c's packet through rs as the pipeline does.
func (c *clConn) judge(t *testing.T, rs *RuleSet) Action {
	t.Helper()
	x := Ctx{State: stNew, Conn: &c.conn, Counts: &c.counts}
	v, cacheable := rs.FilterCtx(c.p, &x)
	if cacheable {
		t.Fatalf("a verdict through -m connlimit was cacheable")
	}
	return v.Action
}

// TestConnlimitCounts walks the count's rules at the rule-set level: the
// packet's own connection counts, a connection counts once however many
// packets reach the rule, a released (closed, gone) one leaves, the mask
// groups addresses, daddr keys by destination, upto inverts, a packet with
// no connection or a closed one counts for itself only, and a new rule set
// starts at 0.
func TestConnlimitCounts(t *testing.T) {
	const text = `-A FORWARD -p tcp -m tcp --dport 80 -m connlimit --connlimit-above 2 --connlimit-mask 24 -j DROP
-A FORWARD -p tcp -m tcp --dport 81 -m connlimit --connlimit-above 1 --connlimit-daddr -j DROP
-A FORWARD -p tcp -m tcp --dport 82 -m connlimit --connlimit-upto 1 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 82 -j DROP
-A FORWARD -p tcp -m tcp --dport 83 -m connlimit --connlimit-above 1 --connlimit-mask 64 -j DROP
-A FORWARD -s 10.1.0.0/16 -m connlimit --connlimit-upto 100 -j ACCEPT`
	rs := mustLoad(t, wrap("filter", text), FamilyBoth)
	a, b, c := newClConn("10.0.0.1", "10.9.0.1", 1000, 80), newClConn("10.0.0.2", "10.9.0.1", 1001, 80), newClConn("10.0.0.3", "10.9.0.1", 1002, 80)
	for i, w := range []struct {
		c    *clConn
		want Action
	}{{a, Accept}, {a, Accept}, {b, Accept}, {a, Accept}, {c, Drop}, {c, Drop}} {
		if got := w.c.judge(t, rs); got != w.want {
			t.Fatalf("step %d: %v, want %v", i, got, w.want)
		}
	}
	if !c.counts.Empty() {
		// The pipeline releases a refused connection's counts; here it
		// stays in and is counted (two plus itself is still over).
		rs.ReleaseConn(&c.counts)
	}
	if other := newClConn("10.0.1.3", "10.9.0.1", 1003, 80); other.judge(t, rs) != Accept {
		t.Error("another /24 was refused")
	}
	// No connection (INVALID): counted for itself, not kept.
	inv := Ctx{State: stInvalid}
	if v, _ := rs.FilterCtx(tcpPkt("10.0.0.9", "10.9.0.1", 1, 80, syn), &inv); v.Action != Drop {
		t.Errorf("an INVALID packet with two counted: %v, want DROP (3 > 2)", v.Action)
	}
	// A non-first fragment with no connection has no tuple: hotdrop.
	hd := Ctx{State: stInvalid}
	last := func(v Verdict) bool { return strings.Contains(rs.RuleText(v.Rule), "-s 10.1.0.0/16") }
	if v, _ := rs.FilterCtx(frag(tcpPkt("10.1.0.9", "10.9.0.1", 1, 9, syn), 8), &hd); v.Action != Drop || !last(v) {
		t.Errorf("a later fragment without a connection: %v by %q, want DROP by the last rule", v.Action, rs.RuleText(v.Rule))
	}
	if v, _ := rs.FilterCtx(tcpPkt("10.1.0.9", "10.9.0.1", 1, 9, syn), &hd); v.Action != Accept || !last(v) {
		t.Errorf("a first packet without a connection: %v by %q, want ACCEPT by the last rule", v.Action, rs.RuleText(v.Rule))
	}
	// Closing b frees a slot; a closed connection counts itself only.
	rs.ReleaseConn(&b.counts)
	b.conn.Closed = true
	if c.judge(t, rs) != Accept {
		t.Error("after b closed, c was refused")
	}
	if b.judge(t, rs) != Drop || !b.counts.Empty() {
		t.Error("a closed connection's packet: want it counted for itself (a, c and it: 3 > 2) and not remembered")
	}
	if d := newClConn("10.0.0.4", "10.9.0.1", 1004, 80); d.judge(t, rs) != Drop {
		t.Error("a third open connection passed")
	}

	// daddr: per server.
	if newClConn("10.0.0.1", "10.9.0.2", 2000, 81).judge(t, rs) != Accept ||
		newClConn("10.0.5.1", "10.9.0.2", 2001, 81).judge(t, rs) != Drop ||
		newClConn("10.0.5.1", "10.9.0.3", 2002, 81).judge(t, rs) != Accept {
		t.Error("daddr: want one connection per server")
	}
	// upto, and the reply direction counting under the server's address.
	u := newClConn("10.0.6.1", "10.9.0.4", 3000, 82)
	if u.judge(t, rs) != Accept {
		t.Error("upto: the first connection was refused")
	}
	if newClConn("10.0.6.1", "10.9.0.4", 3001, 82).judge(t, rs) != Drop {
		t.Error("upto: a second connection from the client passed")
	}
	// IPv6 with --connlimit-mask 64.
	if newClConn("2001:db8::1", "2001:db8:9::1", 4000, 83).judge(t, rs) != Accept ||
		newClConn("2001:db8::2", "2001:db8:9::1", 4001, 83).judge(t, rs) != Drop ||
		newClConn("2001:db8:0:1::2", "2001:db8:9::1", 4002, 83).judge(t, rs) != Accept {
		t.Error("IPv6 /64: want one connection per /64")
	}

	// A new rule set counts from 0: a's counts belong to the old one.
	rs2 := mustLoad(t, wrap("filter", text), FamilyBoth)
	e, f, g := newClConn("10.0.0.5", "10.9.0.1", 1005, 80), newClConn("10.0.0.6", "10.9.0.1", 1006, 80), newClConn("10.0.0.7", "10.9.0.1", 1007, 80)
	if e.judge(t, rs2) != Accept || f.judge(t, rs2) != Accept || g.judge(t, rs2) != Drop {
		t.Error("a new rule set: want two connections, not three")
	}
	rs2.ReleaseConn(&g.counts) // refused: the pipeline releases it
	old := a.counts
	if a.judge(t, rs2) != Drop || a.counts.Gen != rs2.Generation() {
		t.Errorf("a connection of the old rule set judged under the new one: want it counted anew (gen %d, rule set %d)", a.counts.Gen, rs2.Generation())
	}
	rs2.ReleaseConn(&a.counts)
	rs2.ReleaseConn(&old) // counts of the old generation: forgotten, not taken from rs2
	if g.judge(t, rs2) != Drop {
		t.Error("releasing old-generation counts freed a slot of the new rule set")
	}

	// No allocation.
	h := newClConn("10.0.0.8", "10.9.0.1", 1008, 80)
	if n := testing.AllocsPerRun(200, func() { h.judge(t, rs2); rs2.ReleaseConn(&h.counts) }); n != 0 {
		t.Errorf("FilterCtx through -m connlimit: %v allocs per run, want 0", n)
	}
}

// TestConnlimitFull: with every bucket of the counts in use, a packet that
// needs a new address is dropped (the kernel's hotdrop when it cannot
// allocate) and counted; one whose address has a count is still judged;
// releasing frees the buckets.
func TestConnlimitFull(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -m connlimit --connlimit-above 5 -j DROP"), FamilyIPv4)
	var conns []*clConn
	drops := 0
	for i := range climStripes*climPerStripe + 2000 {
		c := newClConn(fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff), "10.200.0.1", 1000, 80)
		if c.judge(t, rs) == Drop {
			drops++
		}
		conns = append(conns, c)
	}
	if drops < 2000 || uint64(drops) != rs.ConnlimitFull() {
		t.Errorf("%d drops, ConnlimitFull %d, want at least 2000 and equal", drops, rs.ConnlimitFull())
	}
	if conns[0].judge(t, rs) != Accept {
		t.Error("an address with a count was refused in a full table")
	}
	for _, c := range conns {
		rs.ReleaseConn(&c.counts)
	}
	for i := range rs.clim.stripes {
		if s := &rs.clim.stripes[i]; s.used != 0 {
			t.Fatalf("stripe %d: %d buckets in use after every release", i, s.used)
		}
	}
	if conns[len(conns)-1].judge(t, rs) != Accept {
		t.Error("after the releases, a new address was refused")
	}
}

// TestConnlimitConcurrent: workers counting and releasing their own
// connections on shared addresses (run with -race); every count taken is
// given back, and no count ever exceeds the connections open at once.
func TestConnlimitConcurrent(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -m connlimit --connlimit-above 1000 --connlimit-mask 24 -j DROP"), FamilyIPv4)
	const workers, rounds = 4, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs := make([]*clConn, 8)
			for i := range cs {
				cs[i] = newClConn(fmt.Sprintf("10.0.%d.%d", i%2, w*8+i), "10.9.0.1", uint16(1000+w), 80)
			}
			for r := range rounds {
				c := cs[r%len(cs)]
				if c.judge(t, rs) != Accept {
					t.Errorf("worker %d: refused with at most %d connections open", w, workers*len(cs))
					return
				}
				if r%3 == 0 {
					rs.ReleaseConn(&c.counts)
				}
			}
			for _, c := range cs {
				rs.ReleaseConn(&c.counts)
			}
		}()
	}
	wg.Wait()
	for i := range rs.clim.stripes {
		if s := &rs.clim.stripes[i]; s.used != 0 {
			t.Fatalf("stripe %d: %d buckets in use after every release", i, s.used)
		}
	}
}

// BenchmarkConnlimit: a SYN counted by -m connlimit (one stripe lock) and
// its connection released, as a pipeline does for a connection that opens
// and closes; and a packet of a connection already counted.
func BenchmarkConnlimit(b *testing.B) {
	rs := mustLoad(b, wrap("filter", "-A FORWARD -p tcp -m tcp --dport 80 --syn -m connlimit --connlimit-above 100 --connlimit-mask 24 -j DROP"), FamilyIPv4)
	c := newClConn("10.0.0.1", "10.9.0.1", 1000, 80)
	b.Run("count-release", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			x := Ctx{State: stNew, Conn: &c.conn, Counts: &c.counts}
			rs.FilterCtx(c.p, &x)
			rs.ReleaseConn(&c.counts)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
	})
	b.Run("counted", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			x := Ctx{State: stNew, Conn: &c.conn, Counts: &c.counts}
			rs.FilterCtx(c.p, &x)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
	})
}
