package main

import (
	"fmt"
	"io"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/rules"
)

// printTargets writes the REJECT and LOG line of the totals, when either
// target did something: "reject answers: N (kind=n ...), not sent: limited
// L, unanswerable U, tx-full T; log lines: W written, S suppressed".
func printTargets(w io.Writer, t *bridge.TargetStats) {
	if t.RejectsSent()+t.RejectLimited+t.RejectNone+t.RejectNoTX+t.LogLines+t.LogSuppressed == 0 {
		return
	}
	fmt.Fprintf(w, "reject answers: %d (", t.RejectsSent())
	sep := ""
	for k := rules.RejectTCPReset; k < rules.NumRejectWith; k++ {
		if n := t.Rejects[k]; n > 0 {
			fmt.Fprintf(w, "%s%s=%d", sep, k, n)
			sep = " "
		}
	}
	fmt.Fprintf(w, "), not sent: limited %d, unanswerable %d, tx-full %d; log lines: %d written, %d suppressed\n",
		t.RejectLimited, t.RejectNone, t.RejectNoTX, t.LogLines, t.LogSuppressed)
}
