package hostile

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// dropInvalid is the rule set of every rig: a stateful bridge that drops
// INVALID packets and forwards the rest, so "forwarded" in a test means
// "not INVALID (nor malformed)".
const dropInvalid = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n"

// Injected frames carry these MACs: the bridge forwards them like any
// frame, the far host's stack ignores them (not its address: no RST, no
// reply), and the sniffer picks them out by source.
var (
	injSrcMAC = [6]byte{0x02, 0x5e, 0, 0, 0, 0x98}
	injDstMAC = [6]byte{0x02, 0x5e, 0, 0, 0, 0x99}
)

// rig is an e2etest rig with the hostile tests' helpers.
type rig struct{ *e2etest.Rig }

type rigOptions struct {
	cores    int
	maxFlows int // 0: 65536
	buckets  int // 0: maxFlows
	mtu      int
}

// newRig starts a rig (e2etest.Start: 2-queue lab, the end-of-test checks)
// with dropInvalid, 2048-entry rings and 8192 frames per queue.
func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	if o.maxFlows == 0 {
		o.maxFlows = 1 << 16
	}
	if o.buckets == 0 {
		o.buckets = o.maxFlows
	}
	return &rig{e2etest.Start(t, e2etest.Options{
		Cores: o.cores, MTU: o.mtu, Ring: 2048, Frames: 8192,
		Table: flowtable.Config{MaxEntries: o.maxFlows, Buckets: o.buckets},
		Rules: dropInvalid,
	})}
}

// settle waits until the workers have published counters covering
// everything sent so far (they publish about every 50 ms: the RX counters
// unchanged for 180 ms, as an idle worker may publish late) and returns
// them. It fails t if they still move after 5 s: the link is not quiet,
// and exact counts taken from them would be wrong.
func (r *rig) settle(t *testing.T) bridge.DatapathStats {
	t.Helper()
	var last bridge.DatapathStats
	prev, changed := uint64(1<<64-1), time.Now()
	ok := testenv.WaitFor(5*time.Second, func() bool {
		last = r.DP.Stats()
		n := last.Total(bridge.PortA).RX + last.Total(bridge.PortB).RX
		if n != prev {
			prev, changed = n, time.Now()
			return false
		}
		return time.Since(changed) >= 180*time.Millisecond
	})
	if !ok {
		t.Errorf("datapath RX counters still moving after 5s (now %d): want a quiet link before counting", prev)
	}
	return last
}

// injector sends raw frames out of one host's veth (AF_PACKET, qdisc
// bypassed).
type injector struct{ fd int }

func newInjector(t *testing.T, l *lab.Lab, ns, ifc string) *injector {
	t.Helper()
	var fd int
	err := l.Do(ns, func() error {
		i, err := net.InterfaceByName(ifc)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		return unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: i.Index})
	})
	if err != nil {
		t.Fatalf("injector on %s: %v", ifc, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &injector{fd: fd}
}

// send writes every frame, retrying briefly when the socket is out of
// buffer space, and returns how many the kernel took.
func (in *injector) send(frames [][]byte) int {
	n := 0
	for _, f := range frames {
		for try := 0; ; try++ {
			_, err := unix.Write(in.fd, f)
			if err == nil {
				n++
				break
			}
			if err != unix.ENOBUFS && err != unix.EAGAIN || try == 100 {
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	return n
}

// sniffer records the frames with injSrcMAC that reach one host's veth.
type sniffer struct {
	fd   int
	mu   sync.Mutex
	got  map[string]int // frame bytes -> times seen
	done chan struct{}  // closed to stop run
	ran  chan struct{}  // closed when run has returned
}

func newSniffer(t *testing.T, l *lab.Lab, ns, ifc string) *sniffer {
	t.Helper()
	s := &sniffer{got: map[string]int{}, done: make(chan struct{}), ran: make(chan struct{})}
	err := l.Do(ns, func() error {
		i, err := net.InterfaceByName(ifc)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
		return unix.Bind(s.fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: i.Index})
	})
	if err != nil {
		t.Fatalf("sniffer on %s: %v", ifc, err)
	}
	go s.run()
	t.Cleanup(s.close)
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (s *sniffer) run() {
	defer close(s.ran)
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-s.done:
			return
		default:
		}
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n >= 12 && bytes.Equal(buf[6:12], injSrcMAC[:]) {
			s.mu.Lock()
			s.got[string(buf[:n])]++
			s.mu.Unlock()
		}
	}
}

func (s *sniffer) close() {
	select {
	case <-s.done:
	default:
		close(s.done)
		<-s.ran // within the reader's 100 ms timeout
		unix.Close(s.fd)
	}
}

// seen returns how many times frame was seen (and not yet forgotten by
// arrived).
func (s *sniffer) seen(frame []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[string(frame)]
}

// arrived reports whether frame was seen, and forgets it.
func (s *sniffer) arrived(frame []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := string(frame)
	if s.got[k] == 0 {
		return false
	}
	s.got[k]--
	return true
}

// injected gives frame the injector's MACs (a copy).
func injected(frame []byte) []byte {
	f := append([]byte(nil), frame...)
	copy(f[0:6], injDstMAC[:])
	copy(f[6:12], injSrcMAC[:])
	return f
}

// entryOf returns the snapshot of the TCP entry between a and b (either
// direction), or false.
func (r *rig) entryOf(t *testing.T, a, b *net.TCPAddr) (flowtable.EntrySnapshot, bool) {
	t.Helper()
	var found flowtable.EntrySnapshot
	ok := false
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := r.DP.Table().Snapshot(ctx, func(e *flowtable.EntrySnapshot) {
		o := e.Orig
		if o.SrcPort == uint16(a.Port) && o.DstPort == uint16(b.Port) || o.SrcPort == uint16(b.Port) && o.DstPort == uint16(a.Port) {
			if o.Proto == 6 {
				found, ok = *e, true
			}
		}
	})
	if err != nil {
		t.Errorf("Snapshot: %v", err)
	}
	return found, ok
}
