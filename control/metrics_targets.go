package control

import (
	"fmt"
	"strings"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/rules"
)

// targetMetricDefs are the counters of the REJECT and LOG targets.
var targetMetricDefs = []metricDef{
	{"reject_answers_total", "REJECT answers sent back out of the rejected frame's ingress port, by kind (--reject-with name).", []string{"kind"}},
	{"reject_unanswered_total", "Rejected frames that got no answer, by reason: limited (ICMP rate limit: icmp_ratelimit, icmp_msgs_per_sec), none (the kernel answers no RST, ICMP error, broadcast, later fragment or bad checksum), tx-full (no room on the ingress port's TX ring).", []string{"reason"}},
	{"log_lines_total", "LOG target lines, by outcome: written, or suppressed by the per-worker rate limit.", []string{"outcome"}},
}

func init() { metricDefs = append(metricDefs, targetMetricDefs...) }

// collectTargets reports the REJECT and LOG counters.
func collectTargets(counter func(string, uint64, ...string), t *bridge.TargetStats) {
	for k := rules.RejectTCPReset; k < rules.NumRejectWith; k++ {
		counter("reject_answers_total", t.Rejects[k], k.String())
	}
	counter("reject_unanswered_total", t.RejectLimited, "limited")
	counter("reject_unanswered_total", t.RejectNone, "none")
	counter("reject_unanswered_total", t.RejectNoTX, "tx-full")
	counter("log_lines_total", t.LogLines, "written")
	counter("log_lines_total", t.LogSuppressed, "suppressed")
}

// targetStatsLine is `conntrack -S`'s line for REJECT and LOG (statewire's
// own; the kernel has no such counters): answers sent by kind, those not
// sent by reason, log lines written and suppressed.
func targetStatsLine(t *bridge.TargetStats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "targets rejects=%d", t.RejectsSent())
	for k := rules.RejectTCPReset; k < rules.NumRejectWith; k++ {
		if n := t.Rejects[k]; n > 0 {
			fmt.Fprintf(&b, " reject_%s=%d", statName(k.String()), n)
		}
	}
	fmt.Fprintf(&b, " reject_limited=%d reject_unanswerable=%d reject_tx_full=%d log_lines=%d log_suppressed=%d",
		t.RejectLimited, t.RejectNone, t.RejectNoTX, t.LogLines, t.LogSuppressed)
	return b.String()
}
