package bridge

import (
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// TestDatapathParseOnce runs a manual two-worker datapath on a two-queue
// veth lab while the left host sends UDP over 32 flows (the right host
// answers with ICMP port unreachable, judged as RELATED by the quoted
// flow's owner), and checks that each frame is parsed once: summed over
// the workers' pipelines, frames parsed (Stats.Parsed) = frames judged
// (Stats.Packets) = frames received, with some frames handed from one
// worker to the other. It also steps the workers one at a time over a
// burst and checks that the frames one worker handed off in one step are
// judged by the owner in one batch per ingress port. Needs root.
func TestDatapathParseOnce(t *testing.T) {
	l := lab.NewT(t, lab.Options{Queues: 2})
	dp := startLabDatapath(t, l, 512, 1024, "", true)

	const flows = 32
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	err := l.Do(l.LeftNS, func() error {
		for i := range flows {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 9000 + i, Addr: lab.RightIPv4.Addr().As4()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	send := func() {
		for _, fd := range fds {
			if _, err := unix.Write(fd, make([]byte, 18)); err != nil {
				t.Logf("send: %v", err)
			}
		}
	}
	stepAll := func() {
		for _, w := range dp.workers {
			w.step(dp.Now())
		}
	}
	// Warm up (ARP, an entry per flow), stepping the workers ourselves.
	send()
	if !testenv.WaitFor(10*time.Second, func() bool {
		stepAll()
		return dp.Table().Len() >= flows
	}) {
		t.Fatalf("entries got %d, want %d: the flows did not get through", dp.Table().Len(), flows)
	}

	// A burst of two frames per flow, taken one worker step at a time.
	send()
	send()
	ready := func() int {
		n := 0
		for _, w := range dp.workers {
			for _, q := range w.queues {
				got, _ := q.sock[PortA].RX().Peek(512)
				n += int(got)
			}
		}
		return n
	}
	// A frame the kernel lost on the way (the machine is shared) only
	// makes the burst smaller: the checks below count what came.
	if !testenv.WaitFor(5*time.Second, func() bool { return ready() >= 2*flows }) && ready() < flows {
		t.Fatalf("frames waiting on port A got %d, want %d", ready(), 2*flows)
	}
	handedOff := func(w *worker) (n uint64) {
		for _, q := range w.queues {
			n += q.ctr[PortA].HandedOff + q.ctr[PortB].HandedOff
		}
		return n
	}
	// Worker 0 steps, then worker 1 judges what it handed off and hands
	// off its own, then worker 0 judges those.
	w0, w1 := dp.workers[0], dp.workers[1]
	var checked uint64
	before := handedOff(w0)
	w0.step(dp.Now())
	h := handedOff(w0) - before
	for i, w := range []*worker{w1, w0} {
		before := handedOff(w)
		batches, frames := w.servedBatches, w.servedFrames
		w.step(dp.Now())
		if got := uint64(w.servedFrames - frames); got != h {
			t.Errorf("step %d: worker %d judged %d frames of the other worker, want the %d it handed off", i, w.id, got, h)
		}
		// One push per RX batch, and a step takes one batch of each port.
		if b := w.servedBatches - batches; h > 0 && (b < 1 || b > 2) {
			t.Errorf("step %d: worker %d judged %d handed-off frames in %d batches, want 1 or 2 (one per ingress port)", i, w.id, h, b)
		}
		checked += h
		h = handedOff(w) - before
	}
	// The rest goes through, then the totals.
	testenv.WaitFor(2*time.Second, func() bool {
		stepAll()
		return ready() == 0
	})
	for range 100 {
		stepAll()
	}
	st := stopLabDatapath(t, l, dp)
	rx := st.Total(PortA).RX + st.Total(PortB).RX
	pl := &st.Pipeline
	t.Logf("frames received %d, parsed %d, judged %d, handed off %d (A) %d (B), hand-off batches judged %d",
		rx, pl.Parsed, pl.Packets[PortA]+pl.Packets[PortB], st.Total(PortA).HandedOff, st.Total(PortB).HandedOff,
		w0.servedBatches+w1.servedBatches)
	if pl.Parsed != rx {
		t.Errorf("frames parsed got %d, want %d: one parse per frame received", pl.Parsed, rx)
	}
	if j := pl.Packets[PortA] + pl.Packets[PortB]; j != rx {
		t.Errorf("frames judged got %d, want %d (received)", j, rx)
	}
	if st.Total(PortA).HandedOff == 0 {
		t.Error("frames handed to the other worker got 0, want some")
	}
}
