package control

import (
	"io"
	"net/http"
	"strings"
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

// The metrics carry the REJECT and LOG counters by kind, reason and outcome.
func TestMetricsTargets(t *testing.T) {
	f := newFake(t, 1)
	f.DPStats.Pipeline.Targets.Rejects[rules.RejectTCPReset] = 3
	f.DPStats.Pipeline.Targets.Rejects[rules.Reject6AdmProhib] = 2
	f.DPStats.Pipeline.Targets.RejectLimited = 4
	f.DPStats.Pipeline.Targets.RejectNone = 1
	f.DPStats.Pipeline.Targets.LogLines, f.DPStats.Pipeline.Targets.LogSuppressed = 50, 950
	m, err := ServeMetrics("127.0.0.1:0", f, [2]string{"ethA", "ethB"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	resp, err := http.Get("http://" + m.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`statewire_reject_answers_total{kind="tcp-reset"} 3`,
		`statewire_reject_answers_total{kind="icmp6-adm-prohibited"} 2`,
		`statewire_reject_answers_total{kind="icmp-port-unreachable"} 0`,
		`statewire_reject_unanswered_total{reason="limited"} 4`,
		`statewire_reject_unanswered_total{reason="none"} 1`,
		`statewire_reject_unanswered_total{reason="tx-full"} 0`,
		`statewire_log_lines_total{outcome="written"} 50`,
		`statewire_log_lines_total{outcome="suppressed"} 950`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
}
