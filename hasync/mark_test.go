package hasync

import (
	"context"
	"strings"
	"testing"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/rules"
)

// markRules marks a connection from the left with 0x2a on its first
// packet (CONNMARK), as a policy-routing or QoS rule set does.
const markRules = `*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate NEW -m physdev --physdev-in pa -j CONNMARK --set-mark 0x2a
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -m physdev --physdev-in pa -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

// remarkRules sets mark 7 on every packet of an established connection.
const remarkRules = `*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate ESTABLISHED -j CONNMARK --set-mark 7
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
`

func (b *box) load(t *testing.T, text string) {
	t.Helper()
	s := bridge.DefaultSettings()
	var err error
	if s.Rules, err = rules.FromText("fw", text, [2]string{"pa", "pb"}); err != nil {
		t.Fatal(err)
	}
	b.ctl.Store(s)
}

// markOf returns the connection mark of box b's entry for orig, or
// false. The test goroutine owns box b's shard.
func (b *box) markOf(sport uint16) (uint32, bool) {
	var m uint32
	found := false
	b.tb.Shard(0).Range(func(e *flowtable.Entry) bool {
		if t := e.Tuple(); t.SrcPort == sport {
			m, found = b.tb.Shard(0).ConnMark(e), true
		}
		return true
	})
	return m, found
}

// TestMarkSyncedAndCommitted: the connection mark (NTA_MARK) goes with the
// connection: the one its first packet's CONNMARK set, then a later change
// on an established connection (an UPDATE event of its own, the kernel's
// IPCT_MARK); the peer's external cache lists it (mark=N) and a commit sets
// it on the committed entry.
func TestMarkSyncedAndCommitted(t *testing.T) {
	p := newPair(t)
	p.a.load(t, markRules)
	p.handshake(t, 40020, 80, 1000, 5000)
	p.drain()
	var ext []string
	p.sb.External(func(l string) { ext = append(ext, l) })
	if len(ext) != 1 || !strings.Contains(ext[0], " mark=42 ") {
		t.Fatalf("box b's external cache:\n%s\nwant the connection with mark=42", strings.Join(ext, "\n"))
	}
	p.a.load(t, remarkRules)
	sent := len(p.la.types())
	if r := p.a.send(seg{fromLeft: true, sport: 40020, dport: 80, seq: 1001, ack: 5001, ack_: true, win: 502, payload: "GET /", wscale: -1}); r.Verdict != bridge.Accept {
		t.Fatalf("data segment: %v %v", r.Verdict, r.Drop)
	}
	p.drain()
	if got := len(p.la.types()) - sent; got != 1 {
		t.Errorf("a mark change alone sent %d messages, want 1 (CT_UPD)", got)
	}
	ext = nil
	p.sb.External(func(l string) { ext = append(ext, l) })
	if len(ext) != 1 || !strings.Contains(ext[0], " mark=7 ") {
		t.Fatalf("box b's external cache after the mark change:\n%s\nwant mark=7", strings.Join(ext, "\n"))
	}
	var res flowtable.CommitResult
	p.b.serve(func() { res, _ = p.sb.Commit(context.Background()) })
	if res.Inserted != 1 {
		t.Fatalf("commit %+v", res)
	}
	if m, ok := p.b.markOf(40020); !ok || m != 7 {
		t.Errorf("committed entry's mark: %d (found %v), want 7", m, ok)
	}
}
