package rulegen

import (
	"bytes"
	"strings"
	"testing"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
)

var testOpts = Options{
	HostMAC: [2][6]byte{{0x02, 0x73, 0x70, 0, 0, 0x01}, {0x02, 0x73, 0x70, 0, 0, 0x02}},
	DstMAC:  [6]byte{0x02, 0x73, 0x70, 0, 0, 0x99},
}

// compile loads a case's files as statewire run would.
func compile(t *testing.T, c Case) *rules.RuleSet {
	t.Helper()
	ports := strings.NewReplacer("{PortA}", "swa0", "{PortB}", "swb0")
	var l rules.Loader
	if err := l.Load("rules4", strings.NewReader(ports.Replace(c.Rules4)), rules.FamilyIPv4); err != nil {
		t.Fatalf("%v\n%s", err, c.Rules4)
	}
	if err := l.Load("rules6", strings.NewReader(ports.Replace(c.Rules6)), rules.FamilyIPv6); err != nil {
		t.Fatalf("%v\n%s", err, c.Rules6)
	}
	rs, err := l.Compile([2]string{"swa0", "swb0"})
	if err != nil {
		t.Fatalf("compile: %v\n%s\n%s", err, c.Rules4, c.Rules6)
	}
	return rs
}

// TestGeneratedFilesLoad: every seed's files are read by package rules,
// and every frame parses.
func TestGeneratedFilesLoad(t *testing.T) {
	for seed := range uint64(300) {
		o := testOpts
		o.Seed = seed
		c := Generate(o)
		compile(t, c)
		for i, f := range c.Frames {
			var p packet.Packet
			if r := packet.Parse(f.Bytes, 0, packet.Options{VerifyChecksum: true}, &p); r != packet.ReasonOK {
				t.Fatalf("seed %d frame %d %s: parse: %v", seed, i, f.What, r)
			}
		}
	}
}

// TestGenerateDeterministic: a seed gives the same case twice, and
// another seed another case.
func TestGenerateDeterministic(t *testing.T) {
	o := testOpts
	o.Seed = 7
	a, b := Generate(o), Generate(o)
	if a.Rules4 != b.Rules4 || a.Rules6 != b.Rules6 || len(a.Frames) != len(b.Frames) {
		t.Fatalf("seed 7 twice: different cases")
	}
	for i := range a.Frames {
		if !bytes.Equal(a.Frames[i].Bytes, b.Frames[i].Bytes) {
			t.Fatalf("seed 7 twice: frame %d differs", i)
		}
	}
	o.Seed = 8
	if c := Generate(o); c.Rules4 == a.Rules4 {
		t.Fatalf("seeds 7 and 8 gave the same IPv4 file")
	}
}

// TestFramesUnique: the far side tells frames apart by their bytes.
func TestFramesUnique(t *testing.T) {
	o := testOpts
	o.Seed = 3
	o.Frames = 2000
	seen := map[string]int{}
	for i, f := range Generate(o).Frames {
		if j, ok := seen[string(f.Bytes)]; ok {
			t.Fatalf("frames %d and %d are the same bytes: %s", j, i, f.What)
		}
		seen[string(f.Bytes)] = i
	}
}

// TestCoverage: over a few seeds, every match and target the generator
// knows appears, negated too, and every conversation kind.
func TestCoverage(t *testing.T) {
	var all strings.Builder
	var what strings.Builder
	for seed := range uint64(20) {
		o := testOpts
		o.Seed = seed
		c := Generate(o)
		all.WriteString(c.Rules4 + c.Rules6)
		for _, f := range c.Frames {
			what.WriteString(f.What + "\n")
		}
	}
	for _, w := range []string{"-p tcp", "! -p", "-m tcp", "--syn", "--tcp-flags", "-m udp", "! --dport", "-m icmp ",
		"-m icmp6", "-m multiport", "-p udplite", "-m state", "--ctstate", "--ctstatus", "--ctdir", "--ctproto",
		"--ctorigsrc", "--ctexpire", "--ctorigdstport", "-m iprange", "-m mac", "-m length", "-m pkttype", "-m tos",
		"-m dscp", "--dscp-class", "-m ttl", "-m hl", "-m limit", "-m recent --set", "--rcheck", "--update", "--remove",
		"--hitcount", "--rttl", "-m mark", "-m connmark", "-m addrtype", "--physdev-in", "--physdev-is-bridged",
		"-m comment", "! -s", "-d ", "-j ACCEPT", "-j DROP", "-j REJECT", "tcp-reset", "icmp6-adm-prohibited",
		"-j LOG", "-j MARK", "-j CONNMARK", "--restore-mark", "--save-mark", "-j RETURN", "-g RD", "-j RD",
		":FORWARD DROP", "NOTRACK", "*raw"} {
		if !strings.Contains(all.String(), w) {
			t.Errorf("no rule with %q in 20 seeds", w)
		}
	}
	for _, w := range []string{"likely NEW", "likely ESTABLISHED", "likely RELATED", "likely INVALID", "udplite",
		"[SYN,FIN]", "from B", "dmac ffffffffffff", "quoting"} {
		if !strings.Contains(what.String(), w) {
			t.Errorf("no frame with %q in 20 seeds", w)
		}
	}
}
