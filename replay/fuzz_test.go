package replay

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/statemachine"
)

// seedCaptureLimit keeps the big captures out of the seed corpus: the
// fuzzer mutates small files faster and the big ones add no new format.
const seedCaptureLimit = 64 << 10

// FuzzReplay feeds arbitrary bytes to the capture reader and every frame it
// returns through a replay, as `statewire replay` does. The reader either
// fails with an error or returns frames; every frame gets exactly one
// result, a drop always has a reason and an accept never does, and the
// table never holds more than its maximum.
func FuzzReplay(f *testing.F) {
	paths, _ := filepath.Glob("../../shared/pcaps/*.pcap*")
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.Size() <= seedCaptureLimit {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		frames, err := Read(bytes.NewReader(data))
		if err != nil {
			return
		}
		const maxEntries = 64
		r, err := New(Options{Table: flowtable.Config{Buckets: 16, MaxEntries: maxEntries}})
		if err != nil {
			t.Fatal(err)
		}
		verdicts := 0
		for _, fr := range frames {
			p := r.Step(fr)
			verdicts++
			res := p.Result
			switch res.Verdict {
			case bridge.Drop:
				if res.Drop == bridge.DropNone || res.Drop >= bridge.NumDropReasons {
					t.Fatalf("frame %d dropped with reason %v", p.Num, res.Drop)
				}
			default:
				if res.Drop != bridge.DropNone {
					t.Fatalf("frame %d: verdict %v with drop reason %v", p.Num, res.Verdict, res.Drop)
				}
			}
			if res.State != 0 && res.State&(res.State-1) != 0 {
				t.Fatalf("frame %d: state %#x is not one state", p.Num, res.State)
			}
		}
		if verdicts != len(frames) {
			t.Fatalf("%d results for %d frames", verdicts, len(frames))
		}
		ents := r.Entries()
		if len(ents) > maxEntries {
			t.Fatalf("table holds %d entries, maximum %d", len(ents), maxEntries)
		}
		for _, e := range ents {
			if e.Conn.Proto == 6 && e.Conn.State >= statemachine.NumTCPStates {
				t.Fatalf("entry in TCP state %d", e.Conn.State)
			}
		}
	})
}
