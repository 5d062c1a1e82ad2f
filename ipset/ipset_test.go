package ipset

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/statewire/statewire/packet"
)

func addr(s string) packet.Addr { return netip.MustParseAddr(s).As16() }

func pkt(proto uint8, src, dst string, sport, dport uint16) *packet.Packet {
	v := uint8(4)
	if !netip.MustParseAddr(src).Is4() {
		v = 6
	}
	return &packet.Packet{IPVersion: v, Proto: proto, Src: addr(src), Dst: addr(dst), SrcPort: sport, DstPort: dport}
}

func tcp(src, dst string, sport, dport uint16) *packet.Packet {
	return pkt(packet.ProtoTCP, src, dst, sport, dport)
}

func mustParse(t testing.TB, text string) *Sets {
	t.Helper()
	ss, err := Parse("test.ipset", strings.NewReader(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return ss
}

var (
	src    = Dir{Src: 1, Dims: 1}
	dst    = Dir{Src: 0, Dims: 1}
	srcDst = Dir{Src: 1, Dims: 2}
	dstSrc = Dir{Src: 2, Dims: 2}
	srcSrc = Dir{Src: 3, Dims: 2}
	dstDst = Dir{Src: 0, Dims: 2}
)

// saved is what `ipset save` printed for sets made with ipset 7.17 on this
// machine's kernel (timeouts, counters and comments included).
const saved = `create a hash:ip family inet hashsize 1024 maxelem 65536 timeout 0 counters comment bucketsize 12 initval 0x2f9d08b5
add a 198.18.0.2 timeout 0 packets 0 bytes 0
add a 198.18.0.1 timeout 99 packets 3 bytes 4 comment "hi there"
create n hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xec1b9914
add n 198.19.1.1
add n 198.18.0.0/16
add n 198.18.5.0/24 nomatch
add n 198.18.5.128/25
create p hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xb6aa5346
add p 198.18.0.1,tcp:8080
add p 198.18.0.1,gre:0
add p 198.18.0.1,icmp:echo-request
add p 198.18.0.1,udp:53
add p 198.18.0.1,tcp:80
add p 198.18.0.1,sctp:5
create np hash:net,port family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0xe673eb57
add np 2001:db8::/32,tcp:443
add np 2001:db8:1::/48,tcp:443 nomatch
add np 2001:db8::/32,ipv6-icmp:echo-request
create bp bitmap:port range 1000-2000
add bp 1000
add bp 1001-1003
add bp 1500
create b hash:ip family inet hashsize 1024 maxelem 65536 netmask 24 bucketsize 12 initval 0x09516baf
add b 198.18.7.0
create r hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xdd7f8ce1
add r 198.18.1.0/30
create v6 hash:ip family inet6 hashsize 1024 maxelem 65536
add v6 2001:db8::1
create l list:set size 8
add l a
add l n
`

func TestLookups(t *testing.T) {
	ss := mustParse(t, saved)
	get := func(name string) *Set {
		s := ss.Get(name)
		if s == nil {
			t.Fatalf("set %q not loaded", name)
		}
		return s
	}
	icmpEcho := pkt(packet.ProtoICMP, "198.18.0.1", "198.18.9.9", 0, 0)
	icmpEcho.ICMP = packet.ICMP{Type: 8}
	icmp6Echo := pkt(packet.ProtoICMPv6, "2001:db8::5", "2001:db8:9::1", 0, 0)
	icmp6Echo.ICMP = packet.ICMP{Type: 128}
	fragUDP := pkt(packet.ProtoUDP, "198.18.0.1", "198.18.9.9", 0, 0)
	fragUDP.Fragment, fragUDP.FragOffset = true, 8
	fragGRE := pkt(47, "198.18.0.1", "198.18.9.9", 0, 0)
	fragGRE.Fragment, fragGRE.FragOffset = true, 8
	tests := []struct {
		name, set string
		p         *packet.Packet
		d         Dir
		retNM     bool
		want      bool
	}{
		{"hash:ip src hit", "a", tcp("198.18.0.1", "198.18.9.9", 1, 2), src, false, true},
		{"hash:ip dst miss", "a", tcp("198.18.0.1", "198.18.9.9", 1, 2), dst, false, false},
		{"hash:ip dst hit", "a", tcp("198.18.9.9", "198.18.0.2", 1, 2), dst, false, true},
		{"hash:ip extra flags ignored", "a", tcp("198.18.0.1", "198.18.9.9", 1, 2), srcDst, false, true},
		{"hash:ip return-nomatch has no effect", "a", tcp("198.18.0.1", "198.18.9.9", 1, 2), src, true, true},
		{"hash:ip IPv6 packet", "a", tcp("2001:db8::1", "2001:db8::2", 1, 2), src, false, false},
		{"hash:ip range expanded", "r", tcp("198.18.1.3", "198.18.9.9", 1, 2), src, false, true},
		{"hash:ip range end", "r", tcp("198.18.1.4", "198.18.9.9", 1, 2), src, false, false},
		{"hash:ip netmask 24", "b", tcp("198.18.7.200", "198.18.9.9", 1, 2), src, false, true},
		{"hash:ip netmask 24 other net", "b", tcp("198.18.8.1", "198.18.9.9", 1, 2), src, false, false},
		{"hash:ip inet6", "v6", tcp("2001:db8::1", "2001:db8::2", 1, 2), src, false, true},
		{"hash:net /16", "n", tcp("198.18.200.1", "198.18.9.9", 1, 2), src, false, true},
		{"hash:net host entry", "n", tcp("198.19.1.1", "1.1.1.1", 1, 2), src, false, true},
		{"hash:net host entry neighbour", "n", tcp("198.19.1.2", "1.1.1.1", 1, 2), src, false, false},
		{"hash:net nomatch /24 beats /16", "n", tcp("198.18.5.1", "1.1.1.1", 1, 2), src, false, false},
		{"hash:net /25 beats nomatch /24", "n", tcp("198.18.5.200", "1.1.1.1", 1, 2), src, false, true},
		{"hash:net return-nomatch on nomatch", "n", tcp("198.18.5.1", "1.1.1.1", 1, 2), src, true, true},
		{"hash:net return-nomatch on match", "n", tcp("198.18.200.1", "1.1.1.1", 1, 2), src, true, false},
		{"hash:net return-nomatch on miss", "n", tcp("10.0.0.1", "1.1.1.1", 1, 2), src, true, false},
		{"hash:ip,port src,dst", "p", tcp("198.18.0.1", "198.18.9.9", 5555, 80), srcDst, false, true},
		{"hash:ip,port src,src", "p", tcp("198.18.0.1", "198.18.9.9", 80, 5555), srcSrc, false, true},
		{"hash:ip,port src,src wrong", "p", tcp("198.18.0.1", "198.18.9.9", 5555, 80), srcSrc, false, false},
		{"hash:ip,port dst,src", "p", tcp("198.18.9.9", "198.18.0.1", 8080, 1), dstSrc, false, true},
		{"hash:ip,port dst,dst", "p", tcp("198.18.9.9", "198.18.0.1", 1, 8080), dstDst, false, true},
		{"hash:ip,port one flag never", "p", tcp("198.18.0.1", "198.18.9.9", 5555, 80), src, false, false},
		{"hash:ip,port udp 53", "p", pkt(packet.ProtoUDP, "198.18.0.1", "8.8.8.8", 5, 53), srcDst, false, true},
		{"hash:ip,port udp 80 not tcp 80", "p", pkt(packet.ProtoUDP, "198.18.0.1", "8.8.8.8", 5, 80), srcDst, false, false},
		{"hash:ip,port sctp", "p", pkt(132, "198.18.0.1", "8.8.8.8", 9, 5), srcDst, false, true},
		{"hash:ip,port gre:0", "p", pkt(47, "198.18.0.1", "8.8.8.8", 0, 0), srcDst, false, true},
		{"hash:ip,port icmp type", "p", icmpEcho, srcDst, false, true},
		{"hash:ip,port non-first UDP fragment", "p", fragUDP, srcDst, false, false},
		{"hash:ip,port non-first GRE fragment", "p", fragGRE, srcDst, false, true},
		{"hash:net,port", "np", tcp("2001:db8:5::1", "2001:db8::9", 4, 443), srcDst, false, true},
		{"hash:net,port nomatch /48", "np", tcp("2001:db8:1::1", "2001:db8::9", 4, 443), srcDst, false, false},
		{"hash:net,port nomatch /48 return-nomatch", "np", tcp("2001:db8:1::1", "2001:db8::9", 4, 443), srcDst, true, true},
		{"hash:net,port wrong port", "np", tcp("2001:db8:5::1", "2001:db8::9", 4, 444), srcDst, false, false},
		{"hash:net,port icmpv6", "np", icmp6Echo, srcDst, false, true},
		{"hash:net,port IPv4 packet", "np", tcp("198.18.0.1", "1.1.1.1", 4, 443), srcDst, false, false},
		{"bitmap:port dst", "bp", tcp("1.1.1.1", "2.2.2.2", 5, 1002), dst, false, true},
		{"bitmap:port src", "bp", tcp("1.1.1.1", "2.2.2.2", 1500, 5), src, false, true},
		{"bitmap:port out of range", "bp", tcp("1.1.1.1", "2.2.2.2", 5, 999), dst, false, false},
		{"bitmap:port not member", "bp", tcp("1.1.1.1", "2.2.2.2", 5, 1004), dst, false, false},
		{"bitmap:port IPv6", "bp", tcp("2001:db8::1", "2001:db8::2", 5, 1500), dst, false, true},
		{"bitmap:port sctp has no port here", "bp", pkt(132, "1.1.1.1", "2.2.2.2", 5, 1500), dst, false, false},
		{"list:set first member", "l", tcp("198.18.0.1", "1.1.1.1", 1, 2), src, false, true},
		{"list:set second member", "l", tcp("198.18.200.1", "1.1.1.1", 1, 2), src, false, true},
		{"list:set nomatch member", "l", tcp("198.18.5.1", "1.1.1.1", 1, 2), src, false, false},
		{"list:set member return-nomatch", "l", tcp("198.18.5.1", "1.1.1.1", 1, 2), src, true, true},
		{"list:set miss", "l", tcp("10.0.0.1", "1.1.1.1", 1, 2), src, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := get(tt.set).Test(tt.p, tt.d, tt.retNM); got != tt.want {
				t.Errorf("Test(%s) = %v, want %v", tt.set, got, tt.want)
			}
		})
	}
}

func TestCounts(t *testing.T) {
	ss := mustParse(t, saved)
	want := map[string]int{"a": 2, "n": 4, "p": 6, "np": 3, "bp": 5, "b": 1, "r": 4, "v6": 1, "l": 2}
	for name, n := range want {
		if got := ss.Get(name).Len(); got != n {
			t.Errorf("set %s has %d elements, want %d", name, got, n)
		}
	}
	if got := strings.Join(ss.Names(), " "); got != "a n p np bp b r v6 l" {
		t.Errorf("Names() = %q", got)
	}
}

// TestSaveRoundTrip: Save's output parses back to sets that Save writes
// identically, and that answer every lookup of TestLookups the same.
func TestSaveRoundTrip(t *testing.T) {
	ss := mustParse(t, saved)
	var a strings.Builder
	if err := ss.Save(&a); err != nil {
		t.Fatal(err)
	}
	ss2 := mustParse(t, a.String())
	var b strings.Builder
	if err := ss2.Save(&b); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Fatalf("save is not stable:\n%s\n---\n%s", a.String(), b.String())
	}
	for _, want := range []string{
		"create n hash:net family inet hashsize 1024 maxelem 65536\n",
		"add n 198.18.5.0/24 nomatch\n",
		"add p 198.18.0.1,icmp:8/0\n",
		"add p 198.18.0.1,47:0\n",
		"create bp bitmap:port range 1000-2000\nadd bp 1000\nadd bp 1001\n",
		"add b 198.18.7.0\n",
		"add r 198.18.1.3\n",
		"create l list:set size 8\nadd l a\nadd l n\n",
		"add np 2001:db8:1::/48,tcp:443 nomatch\n",
	} {
		if !strings.Contains(a.String(), want) {
			t.Errorf("saved text lacks %q:\n%s", want, a.String())
		}
	}
	if !strings.HasSuffix(a.String(), "add l n\n") {
		t.Errorf("list:set is not saved last:\n%s", a.String())
	}
	for _, name := range ss.Names() {
		if ss.Get(name).Len() != ss2.Get(name).Len() {
			t.Errorf("set %s: %d elements after the round trip, want %d", name, ss2.Get(name).Len(), ss.Get(name).Len())
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		text string
		err  error
		msg  string // the error text contains it (file:line: and the word)
	}{
		{"create x hash:mac\n", ErrUnsupported, `test.ipset:1: set type "hash:mac" is not supported`},
		{"create x hash:ip,port,ip\n", ErrUnsupported, `"hash:ip,port,ip"`},
		{"create x hash:ip\ncreate x hash:net\n", ErrExists, `test.ipset:2: set "x" created twice`},
		{"add x 1.2.3.4\n", ErrNoSet, `test.ipset:1: set "x" does not exist`},
		{"create x hash:ip\nadd x 1.2.3.400\n", ErrSyntax, `test.ipset:2: bad address "1.2.3.400"`},
		{"create x hash:ip\nadd x 2001:db8::1\n", ErrSyntax, `not of the family`},
		{"create x hash:net\nadd x 0.0.0.0/0\n", ErrSyntax, `/0 network`},
		{"create x hash:net\nadd x 10.0.0.0/33\n", ErrSyntax, `bad prefix length`},
		{"create x hash:ip\nadd x 10.0.0.1 nomatch\n", ErrSyntax, `"nomatch" is only for`},
		{"create x hash:ip maxelem 2\nadd x 10.0.0.0/30\n", ErrFull, `maxelem 2`},
		{"create x hash:ip markmask 5\n", ErrUnsupported, `create option "markmask"`},
		{"create x hash:ip,port\nadd x 10.0.0.1,gre:5\n", ErrSyntax, `has no ports`},
		{"create x hash:ip,port\nadd x 10.0.0.1,icmp:bogus\n", ErrSyntax, `bad ICMP type "bogus"`},
		{"create x hash:ip,port\nadd x 10.0.0.1,ipv6-icmp:echo-request\n", ErrSyntax, `not of the family`},
		{"create x hash:ip,port\nadd x 10.0.0.1\n", ErrSyntax, `needs ADDRESS,[PROTO:]PORT`},
		{"create x bitmap:port\n", ErrSyntax, `needs range`},
		{"create x bitmap:port range 10-20\nadd x 21\n", ErrSyntax, `outside the set's range`},
		{"create l list:set\ncreate m list:set\nadd l m\n", ErrSyntax, `cannot be a member`},
		{"create l list:set\nadd l nope\n", ErrNoSet, `"nope" does not exist`},
		{"flush\n", ErrUnsupported, `command "flush"`},
		{"bogus x\n", ErrSyntax, `unknown command "bogus"`},
		{`create x hash:ip comment` + "\n" + `add x 1.2.3.4 comment "open` + "\n", ErrSyntax, `unterminated quote`},
		{"create x hash:ip\nadd x 10.0.0.0/8\n", ErrSyntax, `expands to more than`},
	}
	for _, tt := range tests {
		_, err := Parse("test.ipset", strings.NewReader(tt.text))
		if err == nil {
			t.Errorf("%q: no error, want %v", tt.text, tt.err)
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) || !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%q: error %q, want %v containing %q", tt.text, err, tt.err, tt.msg)
		}
	}
}

func TestRangeToPrefixes(t *testing.T) {
	got := rangeToPrefixes(netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.0.0.5"))
	if len(got) != 2 || got[0].String() != "10.0.0.0/30" || got[1].String() != "10.0.0.4/31" {
		t.Errorf("10.0.0.0-10.0.0.5 = %v, want [10.0.0.0/30 10.0.0.4/31] (as ipset adds it)", got)
	}
	got = rangeToPrefixes(netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255"))
	if len(got) != 1 || got[0].String() != "0.0.0.0/0" {
		t.Errorf("whole range = %v", got)
	}
}

// TestTestAllocs: a lookup allocates nothing, for every type.
func TestTestAllocs(t *testing.T) {
	ss := mustParse(t, saved)
	p := tcp("198.18.5.200", "198.18.0.1", 80, 1500)
	var sets []*Set
	for _, name := range ss.Names() {
		sets = append(sets, ss.Get(name))
	}
	n := testing.AllocsPerRun(200, func() {
		for _, s := range sets {
			s.Test(p, srcDst, false)
			s.Test(p, dstSrc, true)
		}
	})
	if n != 0 {
		t.Errorf("Test allocates %.1f times per run, want 0", n)
	}
}

// TestLoadFiles: several files make one collection (a list:set may name a
// set of an earlier file); a set created in two files is an error naming
// the second file and line.
func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.save", "create a hash:ip\nadd a 198.18.0.1\n")
	b := write("b.save", "create b hash:net\nadd b 198.18.0.0/15\ncreate l list:set\nadd l a\nadd l b\n")
	dup := write("dup.save", "# again\ncreate a hash:net\n")
	ss, err := Load(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ss.Names(), " "); got != "a b l" {
		t.Errorf("Names() = %q, want \"a b l\"", got)
	}
	if !ss.Get("l").Test(tcp("198.19.1.1", "1.1.1.1", 1, 2), src, false) {
		t.Errorf("list:set across files: 198.19.1.1 not found in member b")
	}
	_, err = Load(a, dup)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "dup.save:2: set \"a\" created twice") {
		t.Errorf("duplicate set: %v, want ErrExists naming dup.save:2", err)
	}
	if _, err := Load(dir + "/missing.save"); err == nil || !strings.Contains(err.Error(), "missing.save") {
		t.Errorf("missing file: %v, want an error naming it", err)
	}
	if ss, err := Load(); err != nil || ss.Len() != 0 {
		t.Errorf("Load() = %d sets, %v; want none, nil", ss.Len(), err)
	}
}
