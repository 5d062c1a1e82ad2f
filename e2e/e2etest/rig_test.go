package e2etest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/statewire/statewire/bridge"
)

// balanced is one queue whose counters agree: port A took 10 frames from
// its RX ring and forwarded them on B's TX ring, 8 completed, 2 unsent.
func balanced() bridge.QueueStats {
	var q bridge.QueueStats
	q.Port[bridge.PortA].RX = 10
	q.Port[bridge.PortA].Forwarded = 10
	q.Socket[bridge.PortA].RX = 10
	q.Socket[bridge.PortB].TX = 10
	q.Socket[bridge.PortB].TXBuffers = 10
	q.Socket[bridge.PortB].Completed = 8
	q.Unsent[bridge.PortB] = 2
	return q
}

func TestCheckSockets(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(q *bridge.QueueStats)
		want  string // "" for no error, else a part of the message
	}{
		{"balanced", func(*bridge.QueueStats) {}, ""},
		{"RX counted but not taken", func(q *bridge.QueueStats) { q.Port[bridge.PortA].RX++ }, "counted 11 frames in, RX ring gave 10"},
		{"TX not completed nor unsent", func(q *bridge.QueueStats) { q.Unsent[bridge.PortB] = 0 }, "2 buffers not accounted for"},
		{"invalid TX descriptor", func(q *bridge.QueueStats) { q.Socket[bridge.PortB].TxInvalidDescs = 1 }, "1 invalid TX"},
		{"invalid fill descriptor", func(q *bridge.QueueStats) { q.Socket[bridge.PortA].RxInvalidDescs = 3 }, "3 invalid fill"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := balanced()
			tc.spoil(&q)
			st := bridge.DatapathStats{Queues: []bridge.QueueStats{balanced(), q}}
			err := CheckSockets(&st)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// recorder is a testing.TB that keeps what Errorf reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestNoDrops(t *testing.T) {
	var st bridge.DatapathStats
	st.Queues = []bridge.QueueStats{balanced()}
	r := &recorder{TB: t}
	NoDrops(r, &st)
	if len(r.errs) != 0 {
		t.Errorf("no drops: got errors %q, want none", r.errs)
	}
	st.Queues[0].Port[bridge.PortB].Drops[bridge.DropRule] = 4
	NoDrops(r, &st)
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "B->A: 4 frames dropped (rule=4)") {
		t.Errorf("4 rule drops B->A: got errors %q, want one naming B->A, 4 frames and rule=4", r.errs)
	}
}

func TestStates(t *testing.T) {
	var p bridge.Stats
	for i, n := range bridge.StateNames {
		if n == "NEW" {
			p.States[i] = 3
		}
		if n == "ESTABLISHED" {
			p.States[i] = 40
		}
	}
	if got, want := States(&p), "NEW=3 ESTABLISHED=40"; got != want {
		t.Errorf("States got %q, want %q", got, want)
	}
	if got := StateCount(&p, "ESTABLISHED"); got != 40 {
		t.Errorf("StateCount(ESTABLISHED) got %d, want 40", got)
	}
	if got := StateCount(&p, "RELATED"); got != 0 {
		t.Errorf("StateCount(RELATED) got %d, want 0", got)
	}
}
