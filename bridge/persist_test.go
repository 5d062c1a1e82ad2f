package bridge

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/statewire/statewire/flowtable"
	"golang.org/x/sys/unix"
)

// TestClockIsMonotonic: the datapath clock is CLOCK_MONOTONIC plus
// clockBase, so two processes (two datapaths) of one boot agree on it and
// a table adopted from a state file keeps its timeouts running.
func TestClockIsMonotonic(t *testing.T) {
	a, err := NewDatapath(DatapathConfig{PortA: "a", PortB: "b", Table: flowtable.Config{MaxEntries: 64, Buckets: 64}})
	if err != nil {
		t.Fatal(err)
	}
	epoch, _ := monotonicEpoch()
	for !time.Now().After(epoch.Add(time.Millisecond)) {
	}
	b, err := NewDatapath(DatapathConfig{PortA: "a", PortB: "b", Table: flowtable.Config{MaxEntries: 64, Buckets: 64}})
	if err != nil {
		t.Fatal(err)
	}
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	na, nb := a.Now(), b.Now()
	mono := ts.Nano() + clockBase
	if d := na - nb; d < -int64(time.Millisecond) || d > int64(time.Millisecond) {
		t.Errorf("two datapaths made 1 ms apart: clocks differ by %v, want the same clock", time.Duration(d))
	}
	if d := na - mono; d < 0 || d > int64(50*time.Millisecond) {
		t.Errorf("Now - (CLOCK_MONOTONIC + 1s) = %v, want [0, 50ms)", time.Duration(d))
	}
}

// TestHelperStateInStateFile: the pipeline's helper slots are the state
// file's aux slots, so a connection's helper state comes back with it.
func TestHelperStateInStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "br.table")
	cfg := flowtable.Config{MaxEntries: 64, Buckets: 64, Shards: 1, AuxSize: helperSlotSize}
	tb, _, err := flowtable.Open(cfg, flowtable.Persist{Path: path, Now: 1e9, ClockBase: clockBase})
	if err != nil {
		t.Fatal(err)
	}
	pl := NewPipeline(tb, 0, NewControl(DefaultSettings()), nil)
	ref := flowtable.EntryRef{Index: 7, Gen: 3}
	pl.helperState.get(ref)
	tb.Close(2e9)
	tb, a, err := flowtable.Open(cfg, flowtable.Persist{Path: path, Now: 3e9, ClockBase: clockBase})
	if err != nil || !a.Adopted {
		t.Fatalf("reopen: %+v, %v", a, err)
	}
	defer tb.Close(3e9)
	pl = NewPipeline(tb, 0, NewControl(DefaultSettings()), nil)
	if got := pl.helperState[7].gen; got != 3 {
		t.Errorf("helper slot 7 after reopen: generation %d, want 3 (the slot lives in the file)", got)
	}
	// A table without aux slots (replay, tests) gets its own.
	plain, _ := flowtable.New(flowtable.Config{MaxEntries: 64, Buckets: 64, Shards: 1})
	if n := len(NewPipeline(plain, 0, NewControl(DefaultSettings()), nil).helperState); n != 64 {
		t.Errorf("helper slots of a plain table: %d, want 64", n)
	}
}
