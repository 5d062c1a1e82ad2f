package rules

import (
	"errors"
	"strings"
	"testing"

	"github.com/statewire/statewire/ipset"
	"github.com/statewire/statewire/packet"
)

const testSets = `create allow hash:ip family inet
add allow 198.18.0.1
add allow 198.18.0.2
create nets hash:net family inet
add nets 198.18.0.0/16
add nets 198.18.5.0/24 nomatch
create svc hash:ip,port family inet
add svc 198.18.1.1,tcp:80
add svc 198.18.1.1,udp:53
create v6 hash:net family inet6
add v6 2001:db8::/32
create ports bitmap:port range 1-1024
add ports 22
`

func loadSets(t testing.TB, rulesText string, fam Family, setsText string) (*RuleSet, error) {
	t.Helper()
	ss, err := ipset.Parse("t.ipset", strings.NewReader(setsText))
	if err != nil {
		t.Fatalf("ipset.Parse: %v", err)
	}
	var l Loader
	if err := l.Load("t.rules", strings.NewReader(rulesText), fam); err != nil {
		return nil, err
	}
	l.SetIPSets(ss)
	return l.Compile(testPorts)
}

func mustLoadSets(t testing.TB, rulesText string, fam Family) *RuleSet {
	t.Helper()
	rs, err := loadSets(t, rulesText, fam, testSets)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return rs
}

// TestSetParseSave: every form of -m set loads and saves as iptables-save
// printed it (the lines are iptables-legacy-save 1.8.9's output).
func TestSetParseSave(t *testing.T) {
	for _, line := range []string{
		"-A FORWARD -m set --match-set allow src -j ACCEPT",
		"-A FORWARD -m set ! --match-set allow src,dst -j DROP",
		"-A FORWARD -m set --match-set nets dst --return-nomatch -j DROP",
		"-A FORWARD -m set --match-set nets dst ! --update-counters ! --update-subcounters -j DROP",
		"-A FORWARD -m set --match-set svc src,dst,src -j DROP",
		"-A FORWARD -m set --match-set allow src -m set --match-set nets dst -j DROP",
		"-A FORWARD -p tcp -m set --match-set ports dst -m comment --comment \"x\" -j ACCEPT",
	} {
		rs := mustLoadSets(t, wrap("filter", line), FamilyIPv4)
		if got := strings.TrimPrefix(rs.RuleText(0), "t.rules:6: "); got != line {
			t.Errorf("saved as\n  %s\nwant\n  %s", got, line)
		}
	}
}

func TestSetParseErrors(t *testing.T) {
	tests := []struct {
		line string
		fam  Family
		err  error
		msg  string
	}{
		{"-A FORWARD -m set --match-set nope src -j DROP", FamilyIPv4, ErrNoSet, `t.rules:6: set "nope" does not exist`},
		{"-A FORWARD -m set --match-set v6 src -j DROP", FamilyIPv4, ErrNoSet, `the family of set "v6" is IPv6`},
		{"-A FORWARD -m set --match-set allow src -j DROP", FamilyIPv6, ErrNoSet, `the family of set "allow" is IPv4`},
		{"-A FORWARD -m set --match-set allow src --packets-gt 5 -j DROP", FamilyIPv4, ErrUnsupported, `set option "--packets-gt" is not supported`},
		{"-A FORWARD -m set --match-set allow sideways -j DROP", FamilyIPv4, ErrSyntax, `bad direction "sideways"`},
		{"-A FORWARD -m set --match-set allow src,dst,src,dst,src,dst,src -j DROP", FamilyIPv4, ErrSyntax, `too many direction flags`},
		{"-A FORWARD -m set -j DROP", FamilyIPv4, ErrSyntax, `-m set needs --match-set`},
		{"-A FORWARD --match-set allow src -j DROP", FamilyIPv4, ErrSyntax, `needs -m set`},
		{"-A FORWARD -m set --match-set allow src --match-set nets dst -j DROP", FamilyIPv4, ErrSyntax, `given twice`},
		{"-A FORWARD -m set --match-set allow src ! --return-nomatch -j DROP", FamilyIPv4, ErrSyntax, `cannot be negated`},
	}
	for _, tt := range tests {
		_, err := loadSets(t, wrap("filter", tt.line), tt.fam, testSets)
		if err == nil || !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: error %v, want %v containing %q", tt.line, err, tt.err, tt.msg)
		}
	}
}

func TestSetEval(t *testing.T) {
	rulesText := `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m set --match-set nets src --return-nomatch -j DROP
-A FORWARD -m set --match-set allow src -j ACCEPT
-A FORWARD -m set --match-set svc dst,dst -j ACCEPT
-A FORWARD -m set ! --match-set nets src -m set --match-set ports dst -j ACCEPT
-A FORWARD -m set --match-set v6 src -j ACCEPT
-A FORWARD -m set ! --match-set allow dst -j DROP
COMMIT
`
	rs := mustLoadSets(t, rulesText, FamilyBoth)
	tests := []struct {
		name string
		p    *packet.Packet
		want Action
		line int // line of the deciding rule, 0 for the policy
	}{
		{"nomatch entry with --return-nomatch", tcpPkt("198.18.5.9", "10.0.0.1", 1, 2, 0), Drop, 5},
		{"allowed source", tcpPkt("198.18.0.1", "10.0.0.1", 1, 2, 0), Accept, 6},
		{"service dst,dst tcp", tcpPkt("10.9.9.9", "198.18.1.1", 1, 80, 0), Accept, 7},
		{"service dst,dst udp", udpPkt("10.9.9.9", "198.18.1.1", 1, 53), Accept, 7},
		{"service wrong proto", udpPkt("10.9.9.9", "198.18.1.1", 1, 80), Drop, 10},
		{"negated net and port", tcpPkt("10.9.9.9", "10.0.0.1", 1, 22, 0), Accept, 8},
		{"source in nets: negation fails", tcpPkt("198.18.7.7", "10.0.0.1", 1, 22, 0), Drop, 10},
		{"to an allowed address: ! allow dst fails, policy", tcpPkt("10.9.9.9", "198.18.0.2", 1, 9, 0), Drop, 0},
		{"IPv6 in v6 set", tcpPkt("2001:db8::1", "2001:db9::1", 1, 9, 0), Accept, 9},
		// ip6tables would refuse the IPv4-set rules: in the IPv6 table they
		// are absent, even the negated one, so this packet meets the policy.
		{"IPv6 not in v6 set", tcpPkt("2001:db9::1", "2001:db9::2", 1, 22, 0), Drop, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, cacheable := rs.Filter(tt.p, stNew, portA)
			if got := line(rs, v.Rule); v.Action != tt.want || got != tt.line {
				t.Errorf("got %v by line %d, want %v by line %d", v.Action, got, tt.want, tt.line)
			}
			if !cacheable {
				t.Errorf("a verdict from -m set is not cacheable; it reads only flow-fixed fields")
			}
		})
	}
	p := tcpPkt("10.9.9.9", "10.0.0.1", 1, 22, 0)
	if n := testing.AllocsPerRun(1000, func() { rs.Filter(p, stNew, portA) }); n != 0 {
		t.Errorf("Filter with -m set allocates %.1f times, want 0", n)
	}
}

// TestSetReloadNewGeneration: the same rules compiled with changed sets are
// a new rule set with a new generation (cached verdicts miss) and new
// answers.
func TestSetReloadNewGeneration(t *testing.T) {
	rulesText := wrap("filter", "-A FORWARD -m set --match-set allow src -j DROP")
	before := mustLoadSets(t, rulesText, FamilyIPv4)
	after, err := loadSets(t, rulesText, FamilyIPv4, strings.Replace(testSets, "add allow 198.18.0.1\n", "", 1))
	if err != nil {
		t.Fatal(err)
	}
	if before.Generation() == after.Generation() {
		t.Fatalf("same generation %d after the sets changed", after.Generation())
	}
	p := tcpPkt("198.18.0.1", "10.0.0.1", 1, 2, 0)
	if v, _ := before.Filter(p, stNew, portA); v.Action != Drop {
		t.Errorf("before: %v, want DROP", v.Action)
	}
	if v, _ := after.Filter(p, stNew, portA); v.Action != Accept {
		t.Errorf("after the address left the set: %v, want ACCEPT", v.Action)
	}
}

// randomSets are the sets the random rule sets of cache_test.go and the
// fuzz target name, over the addresses and ports of randomPacket.
var randomSets = func() *ipset.Sets {
	ss, err := ipset.Parse("random.ipset", strings.NewReader(`create r-ip hash:ip family inet
add r-ip 10.0.0.1
create r-net hash:net family inet
add r-net 10.0.0.0/24
add r-net 10.0.0.0/31 nomatch
create r-svc hash:ip,port family inet
add r-svc 10.0.1.2,udp:53
add r-svc 10.0.1.2,tcp:80
add r-svc 10.0.0.2,icmp:8/0
create r-ports bitmap:port range 0-2000
add r-ports 53
add r-ports 1500
create r-v6 hash:net family inet6
add r-v6 2001:db8::/32
create r-list list:set
add r-list r-ip
add r-list r-svc
`))
	if err != nil {
		panic(err)
	}
	return ss
}()

// randomSetArgs are the --match-set arguments randomMatches picks from.
var randomSetArgs = []string{"r-ip src", "r-ip dst", "r-net dst", "r-net src --return-nomatch",
	"r-svc dst,dst", "r-svc src,src", "r-svc dst", "r-ports dst", "r-ports src", "r-list src,dst"}
