package bridge

import (
	"testing"
	"time"

	pt "github.com/statewire/statewire/packet/packettest"
)

// Through the pipeline: -m hashlimit keys per source, every frame judged
// afresh (never a cached verdict), and the frame of a new key that finds
// the table full dropped with its own reason, whatever the rule's target.
func TestPipelineHashlimit(t *testing.T) {
	s := DefaultSettings()
	s.Rules = loadRules(t, `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p udp --dport 53 -m hashlimit --hashlimit-above 1/hour --hashlimit-burst 2 --hashlimit-mode srcip --hashlimit-name dns --hashlimit-htable-size 1 --hashlimit-htable-max 2 -j DROP
COMMIT
`)
	pl := newTestPipeline(t, s, 1024)
	now := int64(time.Hour)
	q := func(src string) Result {
		now += int64(time.Millisecond)
		return pl.Process(pt.UDP4(src, "198.18.0.2", 5353, 53, []byte("q")), 0, PortA, now)
	}
	for i, want := range []Verdict{Accept, Accept, Drop, Drop} {
		if r := q("198.18.0.1"); r.Verdict != want || (want == Drop && r.Drop != DropRule) {
			t.Fatalf("source 1, query %d: got %v %v, want %v (rule)", i+1, r.Verdict, r.Drop, want)
		}
	}
	if r := q("198.18.0.3"); r.Verdict != Accept {
		t.Fatalf("source 3: got %v %v, want ACCEPT (its own bucket)", r.Verdict, r.Drop)
	}
	for range 2 {
		if r := q("198.18.0.4"); r.Verdict != Drop || r.Drop != DropHashlimit || DropHashlimit.String() != "hashlimit-full" {
			t.Fatalf("source 4, the table full: got %v %v, want DROP hashlimit-full", r.Verdict, r.Drop)
		}
	}
	if hits := pl.stats.VerdictCacheHits; hits != 0 {
		t.Errorf("%d verdicts came from the cache, want every one judged afresh", hits)
	}
}
