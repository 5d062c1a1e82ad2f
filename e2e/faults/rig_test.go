package faults

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/lab"
)

var (
	leftIP  = lab.LeftIPv4.Addr()
	rightIP = lab.RightIPv4.Addr()
)

// stopTimeout bounds Datapath.Stop: its own drain deadline is 2 s, so a
// Stop that takes longer than this has hung.
const stopTimeout = 10 * time.Second

// TestMain builds the statewire binary at most once (lab.StatewireBinary)
// and removes it at the end.
func TestMain(m *testing.M) { os.Exit(lab.RunTests(m)) }

// rig is one lab with the datapath running in-process on its bridge ports.
type rig struct {
	l       *lab.Lab
	dp      *bridge.Datapath
	stopped bool
	final   bridge.DatapathStats
}

// newRig builds a 2-queue lab with static neighbour entries on both hosts
// (so no ARP frame spoils an exact count), starts a datapath whose config
// tweak may change, and stops it at the end of the test with the
// accounting checks if the test did not.
func newRig(t *testing.T, tweak func(*bridge.DatapathConfig)) *rig {
	t.Helper()
	l := lab.NewT(t, lab.Options{Queues: 2})
	staticNeighbours(t, l)
	cfg := bridge.DefaultDatapathConfig()
	cfg.PortA, cfg.PortB = l.PortA, l.PortB
	cfg.Cores, cfg.Queues = 1, 2
	cfg.RXSize, cfg.TXSize, cfg.FillSize, cfg.CompletionSize, cfg.Frames = 1024, 1024, 1024, 1024, 4096
	cfg.Table.Buckets = 4096
	cfg.Logf = t.Logf
	if tweak != nil {
		tweak(&cfg)
	}
	dp, err := bridge.NewDatapath(cfg)
	if err != nil {
		t.Fatalf("NewDatapath: %v", err)
	}
	if err := l.Do(l.BridgeNS, dp.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	r := &rig{l: l, dp: dp}
	t.Cleanup(func() {
		if !r.stopped {
			r.stop(t)
		}
	})
	return r
}

// staticNeighbours gives each host a permanent ARP entry for the other.
func staticNeighbours(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, n := range []struct {
		ns, ifc string
		ip      string
		mac     net.HardwareAddr
	}{
		{l.LeftNS, l.LeftIf, rightIP.String(), l.RightMAC},
		{l.RightNS, l.RightIf, leftIP.String(), l.LeftMAC},
	} {
		if _, err := l.Run(context.Background(), n.ns, "ip", "neigh", "replace", n.ip, "lladdr", n.mac.String(),
			"dev", n.ifc, "nud", "permanent"); err != nil {
			t.Fatalf("static neighbour: %v", err)
		}
	}
}

// stop stops the datapath within stopTimeout and checks the accounting:
// nothing in flight, conservation per direction, each port's RX counter
// equal to its socket's RX ring count, every frame submitted on a TX ring
// completed (so every UMEM frame that left is back), no XDP program left.
func (r *rig) stop(t *testing.T) bridge.DatapathStats {
	t.Helper()
	r.stopped = true
	type res struct {
		st  bridge.DatapathStats
		err error
	}
	done := make(chan res, 1)
	start := time.Now()
	go func() {
		st, err := r.dp.Stop()
		done <- res{st, err}
	}()
	var out res
	select {
	case out = <-done:
	case <-time.After(stopTimeout):
		t.Fatalf("Datapath.Stop did not return within %v", stopTimeout)
	}
	t.Logf("Stop took %v", time.Since(start).Round(time.Millisecond))
	if out.err != nil {
		t.Errorf("Stop: %v", out.err)
	}
	st := out.st
	r.final = st
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		c := st.Total(p)
		t.Logf("%s->%s: in %d, forwarded %d, dropped %d (%s), kernel drops %d, fill-empty %d",
			p, p.Other(), c.RX, c.Forwarded, c.Dropped(), c.DropList(), st.KernelDrops(p), fillEmpty(&st, p))
		if c.InFlight != 0 {
			t.Errorf("%s: %d frames in flight after Stop, want 0", p, c.InFlight)
		}
	}
	if err := st.CheckConservation(); err != nil {
		t.Errorf("frame conservation: %v", err)
	}
	if err := checkSockets(&st); err != nil {
		t.Errorf("UMEM accounting: %v", err)
	}
	if err := r.l.CheckNoXDP(); err != nil {
		t.Errorf("after Stop: %v", err)
	}
	return st
}

// checkSockets checks the per-socket ring counts the workers published last:
// the frames a port counted as received are the frames taken from its RX
// rings, and every frame put on a TX ring came back on the completion ring
// (after Stop nothing may still be in the kernel's hands).
func checkSockets(st *bridge.DatapathStats) error {
	for _, q := range st.Queues {
		for p := range q.Socket {
			s := &q.Socket[p]
			if q.Port[p].RX != s.RX {
				return fmt.Errorf("queue %d port %s: counted %d frames in, RX ring gave %d", q.Queue, bridge.Port(p), q.Port[p].RX, s.RX)
			}
			if s.TX != s.Completed+q.Unsent[p] {
				return fmt.Errorf("queue %d port %s: %d frames submitted on TX, %d completed + %d counted unsent: %d frames not accounted for",
					q.Queue, bridge.Port(p), s.TX, s.Completed, q.Unsent[p], int64(s.TX)-int64(s.Completed+q.Unsent[p]))
			}
			if s.TxInvalidDescs != 0 || s.RxInvalidDescs != 0 {
				return fmt.Errorf("queue %d port %s: kernel found %d invalid TX and %d invalid fill descriptors, want 0",
					q.Queue, bridge.Port(p), s.TxInvalidDescs, s.RxInvalidDescs)
			}
		}
	}
	return nil
}

// fillEmpty sums the kernel's rx_fill_ring_empty_descs over port p's sockets.
func fillEmpty(st *bridge.DatapathStats, p bridge.Port) uint64 {
	var n uint64
	for _, q := range st.Queues {
		n += q.Socket[p].RxFillRingEmptyDescs
	}
	return n
}

// settledStats waits until the published counters stop moving (workers
// publish every 50 ms) and returns them; it fails the test after d.
func (r *rig) settledStats(t *testing.T, d time.Duration) bridge.DatapathStats {
	t.Helper()
	deadline := time.Now().Add(d)
	prev := r.dp.Stats()
	stable := 0
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		cur := r.dp.Stats()
		if cur.Total(bridge.PortA).RX == prev.Total(bridge.PortA).RX && cur.Total(bridge.PortB).RX == prev.Total(bridge.PortB).RX &&
			cur.Now != prev.Now {
			if stable++; stable >= 3 {
				return cur
			}
		} else {
			stable = 0
		}
		prev = cur
	}
	t.Fatalf("counters still moving (or workers not publishing) after %v", d)
	return prev
}

// alive checks that the workers keep publishing: the datapath clock of the
// published counters advances within a second, and Stats itself returns.
func (r *rig) alive(t *testing.T) {
	t.Helper()
	done := make(chan int64, 1)
	go func() { done <- r.dp.Stats().Now }()
	var before int64
	select {
	case before = <-done:
	case <-time.After(time.Second):
		t.Fatalf("Datapath.Stats did not return within 1s")
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(60 * time.Millisecond)
		if r.dp.Stats().Now > before {
			return
		}
	}
	t.Fatalf("workers stopped publishing: counters' clock stuck at %d", before)
}

// ifStat reads one /sys/class/net/IF/statistics counter inside ns.
func ifStat(t *testing.T, l *lab.Lab, ns, ifc, name string) uint64 {
	t.Helper()
	n, err := l.IfStat(ns, ifc, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// setLink sets ifc in ns up or down.
func setLink(t *testing.T, l *lab.Lab, ns, ifc string, up bool) {
	t.Helper()
	state := map[bool]string{true: "up", false: "down"}[up]
	if _, err := l.Run(context.Background(), ns, "ip", "link", "set", ifc, state); err != nil {
		t.Fatalf("ip link set %s %s: %v", ifc, state, err)
	}
}

// transferOK sends size random bytes from the left host to the right one
// over TCP within 60 s and fails unless they arrive intact (SHA-256).
func transferOK(t *testing.T, l *lab.Lab, port, size int) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tr, err := l.TransferTCP(ctx, l.LeftNS, l.RightNS, net.JoinHostPort(rightIP.String(), strconv.Itoa(port)), data)
	if err != nil {
		t.Fatalf("TCP transfer: %v", err)
	}
	if tr.Got != tr.Sent || tr.N != int64(size) {
		t.Fatalf("TCP transfer got %d bytes sha256 %x, want %d bytes sha256 %x", tr.N, tr.Got[:8], size, tr.Sent[:8])
	}
	t.Logf("TCP transfer of %d bytes intact in %v", size, tr.Took.Round(time.Millisecond))
}

// udpStream sends UDP datagrams from the left host to the right host's
// port until stopped, one every gap (0: as fast as the socket takes them),
// and counts those the socket accepted. A receiver in the right namespace
// reads and counts them.
type udpStream struct {
	sent, got atomic.Uint64
	stop      chan struct{}
	once      sync.Once
	wg        sync.WaitGroup
	tx, rx    *net.UDPConn
}

func startUDP(t *testing.T, l *lab.Lab, port int, size int, gap time.Duration, limit uint64) *udpStream {
	t.Helper()
	s := &udpStream{stop: make(chan struct{})}
	to := &net.UDPAddr{IP: rightIP.AsSlice(), Port: port}
	if err := l.Do(l.RightNS, func() (err error) { s.rx, err = net.ListenUDP("udp4", to); return err }); err != nil {
		t.Fatalf("udp listen: %v", err)
	}
	s.rx.SetReadBuffer(8 << 20)
	if err := l.Do(l.LeftNS, func() (err error) { s.tx, err = net.DialUDP("udp4", nil, to); return err }); err != nil {
		t.Fatalf("udp dial: %v", err)
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 2048)
		for {
			if _, err := s.rx.Read(buf); err != nil {
				return
			}
			s.got.Add(1)
		}
	}()
	go func() {
		defer s.wg.Done()
		payload := make([]byte, size)
		for limit == 0 || s.sent.Load() < limit {
			select {
			case <-s.stop:
				return
			default:
			}
			if _, err := s.tx.Write(payload); err == nil {
				s.sent.Add(1)
			}
			if gap > 0 {
				time.Sleep(gap)
			}
		}
	}()
	t.Cleanup(s.close)
	return s
}

// wait blocks until the sender has sent its limit or d passes.
func (s *udpStream) waitSent(limit uint64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if s.sent.Load() >= limit {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// stopSending stops the sender (idempotent); the receiver keeps counting.
func (s *udpStream) stopSending() {
	s.once.Do(func() {
		close(s.stop)
		s.tx.Close()
	})
}

// close stops the sender and the receiver (idempotent).
func (s *udpStream) close() {
	s.stopSending()
	s.rx.Close()
	s.wg.Wait()
}

// pathCounters are the counters along the left-to-right path that say where
// a frame went: the datapath's and the veths' own.
type pathCounters struct {
	st                      bridge.DatapathStats
	leftTxDrop, bTxDrop     uint64 // veth drops on the way to port A, and after port B's TX ring
	rightRxDrop, rightRxErr uint64
}

// sample reads the path counters once the datapath's are settled.
func (r *rig) sample(t *testing.T) pathCounters {
	t.Helper()
	l := r.l
	return pathCounters{
		st:          r.settledStats(t, 5*time.Second),
		leftTxDrop:  ifStat(t, l, l.LeftNS, l.LeftIf, "tx_dropped"),
		bTxDrop:     ifStat(t, l, l.BridgeNS, l.PortB, "tx_dropped"),
		rightRxDrop: ifStat(t, l, l.RightNS, l.RightIf, "rx_dropped"),
		rightRxErr:  ifStat(t, l, l.RightNS, l.RightIf, "rx_errors"),
	}
}

// balance checks, for a UDP stream that was the only traffic between two
// samples, that every datagram the left host's socket took was received by
// the right host's socket or counted as dropped at exactly one place: the
// left veth (port A down), the kernel's AF_XDP socket of port A (no fill
// frame, RX ring full), the datapath (by reason), port B after its TX ring
// (egress carrier down), the right veth. It returns the bridge's view.
func balance(t *testing.T, u *udpStream, b, a pathCounters) {
	t.Helper()
	pa, pb := b.st.Total(bridge.PortA), a.st.Total(bridge.PortA)
	d := struct{ rx, fwd, dropped, kernel, left, bTx, right uint64 }{
		rx: pb.RX - pa.RX, fwd: pb.Forwarded - pa.Forwarded, dropped: pb.Dropped() - pa.Dropped(),
		kernel: a.st.KernelDrops(bridge.PortA) - b.st.KernelDrops(bridge.PortA),
		left:   a.leftTxDrop - b.leftTxDrop, bTx: a.bTxDrop - b.bTxDrop,
		right: a.rightRxDrop - b.rightRxDrop + a.rightRxErr - b.rightRxErr,
	}
	sent, got := u.sent.Load(), u.got.Load()
	t.Logf("UDP balance: sent %d = received %d + left veth drops %d + AF_XDP kernel drops %d + bridge drops %d + port B tx drops %d + right veth drops %d (bridge in %d, forwarded %d)",
		sent, got, d.left, d.kernel, d.dropped, d.bTx, d.right, d.rx, d.fwd)
	if want := got + d.left + d.kernel + d.dropped + d.bTx + d.right; sent != want {
		t.Errorf("UDP balance: sent %d, received + counted drops = %d: %d frames unaccounted for", sent, want, int64(sent)-int64(want))
	}
	// Port A may also see non-IP frames of the hosts (a link coming up can
	// send some): allow for as many as the pipeline classified as such.
	nonIP := a.st.Pipeline.States[0] - b.st.Pipeline.States[0]
	if extra := int64(d.left+d.kernel+d.rx) - int64(sent); extra < 0 || uint64(extra) > nonIP {
		t.Errorf("frames reaching port A: sent %d, left veth drops %d + AF_XDP kernel drops %d + bridge RX %d = %d (non-IP frames %d)",
			sent, d.left, d.kernel, d.rx, d.left+d.kernel+d.rx, nonIP)
	}
}

// settle waits until the receiver's count stops moving (up to 2 s).
func (s *udpStream) settle() {
	last := s.got.Load()
	for range 20 {
		time.Sleep(100 * time.Millisecond)
		cur := s.got.Load()
		if cur == last {
			return
		}
		last = cur
	}
}
