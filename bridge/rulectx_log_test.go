package bridge

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/rules"
)

// TestPipelineCtxLogReject: one rule set that needs both the context
// (CONNMARK, -m connmark, -m limit) and the targets that act per packet
// (LOG, REJECT), through each of the pipeline's three ways into the rules:
// a new connection's first packet (create), a packet of an entry
// (verdictFor) and an ICMP error RELATED to the entry (filter). Every LOG
// line is written with the mark the walk saw, REJECT answers while the
// limit has a token, and nothing is cached.
func TestPipelineCtxLogReject(t *testing.T) {
	s := DefaultSettings()
	s.Rules = loadRules(t, `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 53 -j CONNMARK --set-mark 7
-A FORWARD -p udp -m connmark --mark 7 -j LOG --log-prefix "marked: "
-A FORWARD -p udp -m udp --sport 53 -m connmark --mark 7 -m limit --limit 1/min --limit-burst 1 -j REJECT
-A FORWARD -p icmp -m connmark --mark 7 -j LOG --log-prefix "related: "
COMMIT
`)
	pl := newTestPipeline(t, s, 64)
	h := &captureHandler{}
	pl.ctl.SetLogger(slog.New(h))
	const cli, srv = "198.18.0.1", "198.18.0.2"
	query := pt.UDP4(cli, srv, 4000, 53, []byte("q"))
	reply := pt.UDP4(srv, cli, 53, 4000, []byte("r"))
	unreach := pt.ICMP4Error(cli, srv, 3, 3, pt.Quote(reply, 28))
	now := int64(time.Hour)
	for _, w := range []struct {
		name   string
		frame  []byte
		in     Port
		reject rules.RejectWith
		prefix string
	}{
		{"query (new: CONNMARK, then LOG)", query, PortA, rules.RejectNone, "marked: "},
		{"reply (REJECT with the limit's token)", reply, PortB, rules.RejectPortUnreach, "marked: "},
		{"reply (no token left: the policy)", reply, PortB, rules.RejectNone, "marked: "},
		{"ICMP error RELATED to the marked connection", unreach, PortA, rules.RejectNone, "related: "},
		{"query again", query, PortA, rules.RejectNone, "marked: "},
	} {
		now += int64(time.Millisecond)
		n := len(h.lines)
		r := pl.Process(w.frame, 0, w.in, now)
		if w.reject != rules.RejectNone {
			if r.Verdict != Drop || r.Drop != DropReject || r.Reject != w.reject {
				t.Errorf("%s: %v %v %v, want DROP reject %v", w.name, r.Verdict, r.Drop, r.Reject, w.reject)
			}
		} else if r.Verdict != Accept {
			t.Errorf("%s: %v (%v), want ACCEPT", w.name, r.Verdict, r.Drop)
		}
		if len(h.lines) != n+1 || !strings.HasPrefix(h.lines[n], w.prefix) {
			t.Errorf("%s: LOG lines %q, want one more starting %q", w.name, h.lines[n:], w.prefix)
		}
	}
	if m, ok := connMarkOf(t, pl, query); !ok || m != 7 {
		t.Errorf("connection mark %d (entry %v), want 7", m, ok)
	}
	if hits := pl.Stats().VerdictCacheHits; hits != 0 {
		t.Errorf("%d cached verdicts: a walk through LOG, REJECT, -m connmark or -m limit must not be cached", hits)
	}
}
