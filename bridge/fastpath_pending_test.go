package bridge

import (
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/offload"
	pt "github.com/statewire/statewire/packet/packettest"
)

// bpfWire runs frames through the compiled fast path (BPF_PROG_RUN) and
// queues the punted ones, with the Mark the program wrote in front of
// them, for the pipeline: an XSK RX ring in order.
type bpfWire struct {
	t     *testing.T
	prog  *offload.Program
	pl    *Pipeline
	queue []queued
	taken int
}

type queued struct {
	frame []byte
	in    Port
	mark  offload.Mark
}

func (w *bpfWire) send(frame []byte, in Port) {
	w.t.Helper()
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+offload.MarkLen+64)}
	ret, err := w.prog.EBPF(int(in)).Run(opts)
	if err != nil {
		w.t.Fatal(err)
	}
	if ret == offload.ActionRedirect {
		w.taken++
		return
	}
	var m offload.Mark
	if meta := len(opts.DataOut) - len(frame); meta > 0 {
		m = offload.ReadMark(opts.DataOut[:meta])
	}
	w.queue = append(w.queue, queued{frame: frame, in: in, mark: m})
}

// drain judges the first n queued frames (-1: all).
func (w *bpfWire) drain(n int) {
	w.t.Helper()
	if n < 0 || n > len(w.queue) {
		n = len(w.queue)
	}
	for _, q := range w.queue[:n] {
		w.pl.SetMark(q.mark)
		if r := w.pl.Process(q.frame, 0, q.in, w.prog.Now()); r.Verdict != Accept {
			w.t.Fatalf("frame dropped: %+v", r)
		}
	}
	w.queue = w.queue[n:]
}

// TestFastPathPendingActivation: frames of a flow the program punted
// before the offer (queued in the RX ring) no longer take the flow back:
// the offer is pending, they are judged on the table, the frames punted
// meanwhile are marked, and the flow is activated once the pipeline has
// judged every marked frame, one of each direction among them.
func TestFastPathPendingActivation(t *testing.T) {
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
	w := &bpfWire{t: t, prog: prog, pl: pl}
	q := pt.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("q"))
	r := pt.UDP4("198.19.0.1", "198.18.0.1", 53, 4000, []byte("r"))

	// Both directions' verdicts cached before the fast path is set.
	for range 2 {
		w.send(q, PortA)
		w.send(r, PortB)
	}
	w.drain(-1)
	pl.SetFastPath(prog)
	pl.fast.delay = 0

	// Four frames punted (miss) before the offer, queued.
	for range 2 {
		w.send(q, PortA)
		w.send(r, PortB)
	}
	for _, x := range w.queue {
		if x.mark.Seq != 0 {
			t.Fatalf("frame punted before the offer is marked: %+v", x.mark)
		}
	}
	w.drain(1) // offers, pending
	fs := &pl.Stats().Fast
	if fs.Offered != 1 || len(pl.fast.pend) != 1 {
		t.Fatalf("after the first frame: %+v, %d pending; want one pending offer", *fs, len(pl.fast.pend))
	}
	w.drain(-1) // pre-offer frames: judged, no take-back
	if fs.PreOffer != 3 || fs.TakenBack != [NumTakeBackReasons]uint64{} {
		t.Fatalf("pre-offer frames: %+v; want 3 judged, none taken back", *fs)
	}

	// Punted while pending: marked 1, 2; the pipeline judges the first
	// (original direction only: not ready), meanwhile a third is punted,
	// so the reply's mark (2 of 3) cannot activate; the third does.
	w.send(q, PortA)
	w.send(r, PortB)
	w.drain(1)
	w.send(q, PortA)
	for i, x := range w.queue {
		if x.mark.Seq != uint32(i+2) {
			t.Fatalf("queued frame %d: mark %+v, want seq %d", i, x.mark, i+2)
		}
	}
	w.drain(1)
	if fs.Activated != 0 {
		t.Fatalf("activated with a marked frame still queued: %+v", *fs)
	}
	w.drain(-1)
	if fs.Activated != 1 || fs.Marked != 3 || len(pl.fast.pend) != 0 {
		t.Fatalf("after the marked frames: %+v, %d pending; want activated", *fs, len(pl.fast.pend))
	}
	w.send(q, PortA)
	w.send(r, PortB)
	if w.taken != 2 || len(w.queue) != 0 {
		t.Fatalf("after activation: %d taken, %d punted; want both taken", w.taken, len(w.queue))
	}
	if fs.TakenBack != [NumTakeBackReasons]uint64{} || fs.Cancelled != 0 {
		t.Fatalf("stats %+v: want no take-back, no cancellation", *fs)
	}

	// A settings change takes it back as before; a pending offer it finds
	// is cancelled.
	pl.ctl.Store(DefaultSettings())
	pl.SyncFastPath()
	w.send(q, PortA)
	w.drain(-1) // offered again, pending
	pl.ctl.Store(DefaultSettings())
	pl.SyncFastPath()
	if fs.TakenBack[TakeBackSettings] != 1 || fs.Cancelled != 1 || fs.Offered != 2 {
		t.Fatalf("stats %+v: want one settings take-back, one cancellation, two offers", *fs)
	}
}

// TestFastPathForcedHandover: a flow that keeps sending while the worker
// stays behind the program (half of what is queued judged per round) is
// activated after pendingForce at the program's count; the frames still
// queued, numbered up to that cut, are dropped unjudged (DropHandover)
// instead of taking the flow back, and what leaves the bridge (frames the
// pipeline accepted and frames the program took, in the order they left)
// keeps the sender's order. Before the hand-over, the first queued frame
// took the flow back and left after frames the program had taken.
func TestFastPathForcedHandover(t *testing.T) {
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
	var out []uint64 // sequence numbers in the order they left
	w := &bpfWire{t: t, prog: prog, pl: pl}
	seq := uint64(0)
	send := func() {
		seq++
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], seq)
		before := w.taken
		w.send(pt.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, b[:]), PortA)
		if w.taken > before {
			out = append(out, seq)
		}
	}
	// drain judges n queued frames as the worker does, recording the
	// accepted ones; the handed-over ones come back dropped.
	var handedOver int
	drain := func(n int) {
		n = min(n, len(w.queue))
		for _, q := range w.queue[:n] {
			pl.SetMark(q.mark)
			r := pl.Process(q.frame, 0, q.in, prog.Now())
			switch {
			case r.Verdict == Accept:
				if q.in == PortA {
					out = append(out, binary.BigEndian.Uint64(q.frame[len(q.frame)-8:]))
				}
			case r.Drop == DropHandover:
				handedOver++
			default:
				t.Fatalf("frame dropped: %+v", r)
			}
		}
		w.queue = w.queue[n:]
	}
	reply := pt.UDP4("198.19.0.1", "198.18.0.1", 53, 4000, []byte("r"))
	for range 2 {
		send()
		w.send(reply, PortB)
	}
	drain(len(w.queue))
	out = out[:0]
	first := seq + 1
	pl.SetFastPath(prog)
	pl.fast.delay = 0

	// Overload: every round the flow sends 8 frames and the worker judges
	// 6 of what is queued, while 1 ms passes; the queue grows, the worker
	// never reaches the program's count.
	fs := &pl.Stats().Fast
	for round := 0; round < 20 && fs.Activated == 0; round++ {
		for range 8 {
			send()
		}
		if err := prog.AdjustClock(time.Millisecond); err != nil {
			t.Fatal(err)
		}
		drain(6)
	}
	if fs.Offered != 1 || fs.Activated != 1 || fs.Forced != 1 {
		t.Fatalf("after the overload: %+v; want one offer, activated by force", *fs)
	}
	// Dropping a handed-over frame allocates nothing (the worker does it
	// per frame); the runs are left out of the counts below.
	var extra uint64
	if len(w.queue) == 0 || w.queue[0].mark.Seq == 0 {
		t.Fatalf("no marked frame queued at the activation")
	}
	q := w.queue[0]
	h0, now := fs.Handover, prog.Now()
	if n := testing.AllocsPerRun(100, func() {
		pl.SetMark(q.mark)
		if r := pl.Process(q.frame, 0, q.in, now); r.Drop != DropHandover {
			t.Fatalf("queued frame: %+v, want dropped (handover)", r)
		}
	}); n != 0 {
		t.Errorf("a handover drop allocates %v times", n)
	}
	extra = fs.Handover - h0
	// The flow now goes by the fast path; the queue drains behind it.
	for range 16 {
		send()
		drain(6)
	}
	drain(len(w.queue))
	if uint64(handedOver) != fs.Handover-extra || handedOver == 0 {
		t.Errorf("%d frames dropped as handed over, stats say %d; want some", handedOver, fs.Handover-extra)
	}
	if got := pl.Stats().Drops[DropHandover]; got != fs.Handover {
		t.Errorf("Drops[handover] = %d, FastPathStats.Handover = %d", got, fs.Handover)
	}
	if fs.TakenBack != [NumTakeBackReasons]uint64{} || fs.Cancelled != 0 || len(pl.fast.pend) != 0 || pl.fast.offered != 1 {
		t.Errorf("stats %+v: want no take-back, no cancellation, the flow active", *fs)
	}
	for i := 1; i < len(out); i++ {
		if out[i] <= out[i-1] {
			t.Fatalf("left out of order: %d after %d (%v)", out[i], out[i-1], out)
		}
	}
	if want := int(seq-first+1) - handedOver; len(out) != want || out[0] != first {
		t.Errorf("%d frames left from %d, want %d sent from %d - %d handed over", len(out), out[0], seq-first+1, first, handedOver)
	}
	t.Logf("%d frames sent, %d by the program, %d handed over; stats %+v", seq, w.taken, handedOver, *fs)
}
