package replay

import (
	"path/filepath"
	"testing"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/internal/testenv"
)

// TestBatchEqualsSingle runs every capture of the corpus through two
// pipelines, one frame at a time and in batches of bridge.MaxBatch, and
// requires identical results: batching is an optimisation, never a change
// of behaviour.
func TestBatchEqualsSingle(t *testing.T) {
	pcaps, err := filepath.Glob(filepath.Join(testenv.Pcaps(t), "*.pcap*"))
	if err != nil || len(pcaps) == 0 {
		t.Fatalf("no captures: %v", err)
	}
	compared := 0
	for _, path := range pcaps {
		frames, err := ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		single, err := New(Options{NoTimestamps: true})
		if err != nil {
			t.Fatal(err)
		}
		batched, err := New(Options{NoTimestamps: true})
		if err != nil {
			t.Fatal(err)
		}
		const now = epoch
		var out [bridge.MaxBatch]bridge.Result
		for start := 0; start < len(frames); start += bridge.MaxBatch {
			end := min(start+bridge.MaxBatch, len(frames))
			// One ingress port per batch, as a datapath RX ring delivers.
			// Each pipeline gets its own copy: an accepted frame with a
			// partial checksum is completed in place.
			var data [][]byte
			for _, f := range frames[start:end] {
				data = append(data, append([]byte(nil), f.Data...))
			}
			batched.Pipeline.ProcessBatch(data, bridge.PortA, now, out[:])
			for i, f := range frames[start:end] {
				want := single.Pipeline.Process(f.Data, 0, bridge.PortA, now)
				if out[i] != want {
					t.Fatalf("%s #%d: batch %+v, single %+v", filepath.Base(path), start+i+1, out[i], want)
				}
				compared++
			}
		}
	}
	t.Logf("%d frames identical", compared)
}
