package offload_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/replay"
)

// TestDifferentialCorpus runs every frame of the shared capture corpus
// through the program and the pipeline (see harness), with L4 checksum
// verification on (the default) and off (what the captures need).
func TestDifferentialCorpus(t *testing.T) {
	pcaps, err := filepath.Glob(filepath.Join(testenv.Pcaps(t), "*.pcap*"))
	if err != nil || len(pcaps) == 0 {
		t.Fatalf("no captures: %v", err)
	}
	prog := load(t, offload.Options{MaxFlows: 4096, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	for _, verify := range []bool{true, false} {
		var frames, taken, punted, full, notRun, partial int
		var punts [offload.NumPuntReasons]int
		for _, path := range pcaps {
			fs, err := replay.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s := bridge.DefaultSettings()
			s.VerifyChecksum = verify
			h := newHarness(t, prog, s)
			base := filepath.Base(path)
			for i, f := range fs {
				port := int(h.rp.Port(f.Data))
				h.step(fmt.Sprintf("%s #%d (verify=%v)", base, i+1, verify), f.Data, f.WireLen, port, true)
			}
			h.drain(base)
			frames += h.frames
			taken += h.taken
			partial += h.partial
			punted += h.punted
			full += h.fullCompares
			notRun += h.notRun
			for i, n := range h.punts {
				punts[i] += n
			}
			if h.taken > 0 {
				t.Logf("verify=%v %s: %d frames, %d taken (%d TCP, %d UDP)", verify, base, h.frames, h.taken, h.takenTCP, h.takenUDP)
			}
		}
		t.Logf("verify=%v: %d frames: %d taken by the fast path, %d punted (%d too short/long to run), %d whole-Conn comparisons after TakeBack: all agree",
			verify, frames, taken, punted, notRun, full)
		t.Logf("verify=%v: punts by reason: %s", verify, puntString(punts))
		t.Logf("verify=%v: %d taken frames had a partial checksum, completed by the program as by the pipeline", verify, partial)
		if taken == 0 {
			t.Errorf("verify=%v: the program took no frame of the corpus", verify)
		}
	}
}

func puntString(p [offload.NumPuntReasons]int) string {
	var out string
	for i, n := range p {
		if n != 0 {
			out += fmt.Sprintf(" %v=%d", offload.PuntReason(i), n)
		}
	}
	return out
}
