package hasync

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/statewire/statewire/ctsync"
)

// sendQueue is how many messages a NOTRACK link queues for its sender
// before it drops and counts them (SendCT never waits).
const sendQueue = 4096

// notrackLink is conntrackd's NOTRACK sync mode over UDP unicast: every
// message in its own datagram, sequence numbers sent but not tracked, no
// acknowledgements; a lost message is lost until the next update or a
// resync (statewire sync -n sends NET_F_RESYNC and the peer answers with
// its whole internal cache). Datagrams from any address but the peer's are
// ignored and counted as malformed; the source port is not checked, since
// conntrackd sends from an unbound socket.
type notrackLink struct {
	conn *net.UDPConn
	peer netip.AddrPort
	q    chan []byte
	seq  atomic.Uint32
	st   struct {
		sent, recv, bsent, brecv, dropped, malformed, rsSent, rsRecv atomic.Uint64
	}
	closeOnce sync.Once
	wg        sync.WaitGroup
	done      chan struct{}
}

// NewNotrackLink binds listen (ADDR:PORT) and sends to peer (ADDR:PORT).
func NewNotrackLink(listen, peer string) (Link, error) {
	la, err := netip.ParseAddrPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--sync-listen %q: want ADDR:PORT, e.g. 198.19.0.1:3780: %v", listen, err)
	}
	pa, err := netip.ParseAddrPort(peer)
	if err != nil {
		return nil, fmt.Errorf("--sync-peer %q: want ADDR:PORT, e.g. 198.19.0.2:3780: %v", peer, err)
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(la))
	if err != nil {
		return nil, fmt.Errorf("sync link: cannot listen on %s (is the address configured on the sync interface?): %w", listen, err)
	}
	return &notrackLink{conn: c, peer: pa, q: make(chan []byte, sendQueue), done: make(chan struct{})}, nil
}

func (l *notrackLink) Start(h Handler) {
	l.wg.Add(2)
	go l.sender()
	go l.receiver(h)
}

func (l *notrackLink) sender() {
	defer l.wg.Done()
	to := net.UDPAddrFromAddrPort(l.peer)
	for {
		select {
		case <-l.done:
			return
		case b := <-l.q:
			if _, err := l.conn.WriteToUDP(b, to); err != nil {
				l.st.dropped.Add(1)
				continue
			}
			l.st.bsent.Add(uint64(len(b)))
		}
	}
}

func (l *notrackLink) receiver(h Handler) {
	defer l.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if from.Addr().Unmap() != l.peer.Addr().Unmap() {
			l.st.malformed.Add(1)
			continue
		}
		l.st.brecv.Add(uint64(n))
		msgs, err := ctsync.Decode(buf[:n])
		if err != nil {
			l.st.malformed.Add(1)
		}
		for i := range msgs {
			m := &msgs[i]
			switch {
			case m.Type == ctsync.TypeCtl:
				if m.Flags&ctsync.FlagResync != 0 {
					l.st.rsRecv.Add(1)
					h.ResyncRequested()
				}
			case m.CT != nil:
				l.st.recv.Add(1)
				h.CT(m.Type, m.CT)
			case m.Exp != nil:
				l.st.recv.Add(1)
				h.Exp(m.Type, m.Exp)
			}
		}
	}
}

func (l *notrackLink) queue(b []byte) error {
	select {
	case l.q <- b:
		return nil
	default:
		l.st.dropped.Add(1)
		return errors.New("sync link: send queue full, message dropped")
	}
}

func (l *notrackLink) queueData(b []byte) error {
	if err := l.queue(b); err != nil {
		return err
	}
	l.st.sent.Add(1)
	return nil
}

func (l *notrackLink) SendCT(t ctsync.Type, c *ctsync.CT) error {
	b, err := ctsync.AppendCT(nil, ctsync.Header{Type: t, Seq: l.seq.Add(1)}, c, ctsync.Options{})
	if err != nil {
		return err
	}
	return l.queueData(b)
}

func (l *notrackLink) SendExp(t ctsync.Type, e *ctsync.Exp) error {
	b, err := ctsync.AppendExp(nil, ctsync.Header{Type: t, Seq: l.seq.Add(1)}, e, ctsync.Options{})
	if err != nil {
		return err
	}
	return l.queueData(b)
}

func (l *notrackLink) RequestResync() {
	l.st.rsSent.Add(1)
	l.queue(ctsync.AppendControl(nil, ctsync.FlagResync, l.seq.Add(1), 0, 0))
}

func (l *notrackLink) Stats() LinkStats {
	return LinkStats{
		MsgSent: l.st.sent.Load(), MsgRecv: l.st.recv.Load(),
		BytesSent: l.st.bsent.Load(), BytesRecv: l.st.brecv.Load(),
		SendDropped: l.st.dropped.Load(), Malformed: l.st.malformed.Load(),
		ResyncsSent: l.st.rsSent.Load(), ResyncsRecv: l.st.rsRecv.Load(),
	}
}

func (l *notrackLink) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.conn.Close()
		l.wg.Wait()
	})
	return err
}
