package bridge

import (
	"os"
	"sync/atomic"
	"testing"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/offload"
	pt "github.com/statewire/statewire/packet/packettest"
)

// TestActivateHeldBackForOtherWorker: an owner whose offer is ready waits
// for the other worker to send the frames of the flow it judged for it
// (worker.activate); when that worker is still behind after holdMax, the
// activation is given up, not made: the flow stays pending (the program
// takes none of its frames, which would overtake the ones still at the
// other worker), the owner serves hand-offs again, and the next marked
// frame activates it once the other worker has caught up. Activating at
// holdMax instead reordered a flow across two workers
// (TestDatapathReorderUDPTwoWorkers: 142 datagrams in one episode).
func TestActivateHeldBackForOtherWorker(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "loading XDP programs needs root")
	}
	prog, err := offload.Load(offload.Options{MaxFlows: 64, PassOnMiss: true})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	pl := newTestPipeline(t, nil, 64)
	wire := &bpfWire{t: t, prog: prog, pl: pl}
	q := pt.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("q"))
	r := pt.UDP4("198.19.0.1", "198.18.0.1", 53, 4000, []byte("r"))
	for range 2 {
		wire.send(q, PortA)
		wire.send(r, PortB)
	}
	wire.drain(-1)
	pl.SetFastPath(prog)
	pl.fast.delay = 0
	pl.DeferActivation(true) // as in the datapath: the worker activates

	// Worker 0 owns the flow and has judged 5 frames for worker 1, which
	// has sent none of them yet.
	dp := &Datapath{frags: NewFragCache(16, 1)}
	owner := &worker{id: 0, dp: dp, pl: pl, repSent: []uint64{0, 5}, repSentOut: make([]atomic.Uint64, 2)}
	other := &worker{id: 1, dp: dp, pl: newTestPipeline(t, nil, 64), repSent: []uint64{0, 0}, repSentOut: make([]atomic.Uint64, 2)}
	dp.workers = []*worker{owner, other}

	wire.send(q, PortA)
	wire.drain(-1) // offered, pending
	fs := &pl.Stats().Fast
	wire.send(q, PortA)
	wire.send(r, PortB)
	wire.drain(-1) // marked frames of both directions: ready
	now := prog.Now()
	if fs.Offered != 1 || !pl.ActivationDue(now) {
		t.Fatalf("stats %+v, due %v: want one offer ready to activate", *fs, pl.ActivationDue(now))
	}

	owner.activate(now)
	if owner.holdSince != now || fs.Activated != 0 {
		t.Fatalf("other worker behind: holdSince %d, stats %+v; want holding, not activated", owner.holdSince, *fs)
	}
	owner.activate(now + holdMax)
	if fs.Activated != 0 {
		t.Fatalf("activated within holdMax while the other worker is behind: %+v", *fs)
	}
	owner.activate(now + holdMax + 1)
	if fs.Activated != 0 || fs.HeldBack != 1 || owner.holdSince != 0 || pl.ActivationDue(now+holdMax+1) {
		t.Fatalf("after holdMax: stats %+v, holdSince %d, due %v; want given up (held back), not activated",
			*fs, owner.holdSince, pl.ActivationDue(now+holdMax+1))
	}
	// What the operator reads (conntrack -S held_back=, the metric
	// statewire_fastpath_offers_held_back_total): the datapath's
	// published counters, summed and per worker.
	owner.publish(now + holdMax + 1)
	other.publish(now + holdMax + 1)
	if ds := dp.Stats(); ds.Pipeline.Fast.HeldBack != 1 || ds.Workers[0].Fast.HeldBack != 1 || ds.Workers[1].Fast.HeldBack != 0 {
		t.Fatalf("Datapath.Stats: held back %d (workers %d, %d), want 1 (1, 0)",
			ds.Pipeline.Fast.HeldBack, ds.Workers[0].Fast.HeldBack, ds.Workers[1].Fast.HeldBack)
	}
	wire.send(q, PortA)
	if wire.taken != 0 || len(wire.queue) != 1 {
		t.Fatalf("held back: the program took %d frames; want the flow still pending (punted, marked)", wire.taken)
	}

	// The other worker has sent them; the next marked frame activates.
	other.repSentOut[0].Store(5)
	wire.drain(-1)
	now = prog.Now()
	owner.activate(now)
	if fs.Activated != 1 || owner.holdSince != 0 {
		t.Fatalf("other worker caught up: stats %+v, holdSince %d; want activated", *fs, owner.holdSince)
	}
	wire.send(q, PortA)
	wire.send(r, PortB)
	if wire.taken != 2 || fs.TakenBack != [NumTakeBackReasons]uint64{} {
		t.Fatalf("after activation: %d taken, stats %+v; want both taken, no take-back", wire.taken, *fs)
	}
}
