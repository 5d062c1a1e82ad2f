package control

import (
	"testing"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/rules"
)

// conntrack -S shows REJECT and LOG counters on a line of their own, summed
// over workers, once either target did something.
func TestStatsTargets(t *testing.T) {
	f := newFake(t, 2)
	var a, b bridge.TargetStats
	a.Rejects[rules.RejectTCPReset] = 4
	a.Rejects[rules.Reject6PortUnreach] = 1
	b.Rejects[rules.RejectTCPReset] = 1
	a.RejectLimited, b.RejectNone, a.RejectNoTX = 7, 2, 1
	a.LogLines, b.LogLines, b.LogSuppressed = 50, 10, 940
	f.DPStats.Workers = []bridge.Stats{{Targets: a}, {Targets: b}}
	path := serve(t, f, Options{Ports: [2]string{"ethA", "ethB"}})
	lines, _, err := call(t, path, Request{Op: OpStats})
	if err != nil {
		t.Fatal(err)
	}
	want := "targets rejects=6 reject_tcp_reset=5 reject_icmp6_port_unreachable=1 reject_limited=7 reject_unanswerable=2 reject_tx_full=1 log_lines=60 log_suppressed=940"
	if len(lines) != 4 || lines[3] != want {
		t.Errorf("got %q\nwant the cpu lines, total and %q", lines, want)
	}
}
