package control

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// TestRulesLoadReadsIPSets: a rules load reads the --ipsets files again, so
// a changed set takes effect with a new rule generation; a bad sets file
// leaves the running rules alone.
func TestRulesLoadReadsIPSets(t *testing.T) {
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "set.rules")
	sets := filepath.Join(dir, "sets")
	os.WriteFile(rulesFile, []byte("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m set --match-set block src -j DROP\nCOMMIT\n"), 0o644)
	os.WriteFile(sets, []byte("create block hash:ip family inet\nadd block 198.18.0.1\n"), 0o644)
	f := newFake(t, 1)
	path := serve(t, f, Options{Ports: [2]string{"ethA", "ethB"}, RulesPath: rulesFile, IPSetPaths: []string{sets}})

	p := &packet.Packet{IPVersion: 4, Proto: packet.ProtoUDP, Src: netip.MustParseAddr("198.18.0.1").As16(),
		Dst: netip.MustParseAddr("198.18.1.1").As16(), SrcPort: 1, DstPort: 2}
	verdict := func(rs *rules.RuleSet) rules.Action {
		v, _ := rs.Filter(p, statemachine.StateNew, 0)
		return v.Action
	}
	if _, _, err := call(t, path, Request{Op: OpRulesLoad, Path: rulesFile}); err != nil {
		t.Fatal(err)
	}
	first := f.Control().Load().Rules
	if verdict(first) != rules.Drop {
		t.Fatalf("198.18.0.1 in set block: %v, want DROP", verdict(first))
	}
	os.WriteFile(sets, []byte("create block hash:ip family inet\nadd block 198.18.0.2\n"), 0o644)
	if _, _, err := call(t, path, Request{Op: OpRulesLoad, Path: rulesFile}); err != nil {
		t.Fatal(err)
	}
	second := f.Control().Load().Rules
	if second.Generation() == first.Generation() || verdict(second) != rules.Accept {
		t.Errorf("after the set changed: generation %d (was %d), %v; want a new generation and ACCEPT", second.Generation(), first.Generation(), verdict(second))
	}
	os.WriteFile(sets, []byte("create block hash:ip family inet\nadd block 198.18.0.999\n"), 0o644)
	_, _, err := call(t, path, Request{Op: OpRulesLoad, Path: rulesFile})
	if err == nil || !strings.Contains(err.Error(), "sets:2") {
		t.Errorf("bad sets file: %v, want an error naming sets:2", err)
	}
	if f.Control().Load().Rules != second {
		t.Errorf("a bad sets file replaced the running rules")
	}
}
