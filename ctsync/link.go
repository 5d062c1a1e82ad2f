package ctsync

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// LinkConfig configures a Link. The zero values of the optional fields are
// conntrackd's defaults (conntrackd.conf(5), sync-ftfw.c).
type LinkConfig struct {
	// Listen is the local UDP address, "ADDR:PORT" (required): conntrackd's
	// UDP { IPv4_address; Port }. The link sends from it too.
	Listen string
	// Peer is the peer's UDP address, "ADDR:PORT" (required): conntrackd's
	// IPv4_Destination_Address and Port. Datagrams from other addresses
	// (any source port: conntrackd sends from an unbound socket) are
	// dropped and counted (Foreign).
	Peer string
	// Mode is "ftfw" (the default, reliable) or "notrack" (best effort:
	// numbered messages, no ACK, NACK or resend).
	Mode string

	// ResendQueueSize bounds the messages sent and not yet acknowledged
	// (default 131072, conntrackd's ResendQueueSize). When it is full the
	// oldest is dropped; a later NACK for it makes a full resync.
	ResendQueueSize int
	// ACKWindowSize is the number of messages received before an ACK is
	// sent (default 300, conntrackd's ACKWindowSize).
	ACKWindowSize int
	// TxQueueSize bounds the messages waiting to be sent (default 131072);
	// SendCT/SendExp beyond it drop the message and return ErrQueueFull.
	// conntrackd's transmit queue is unbounded.
	TxQueueSize int
	// AliveInterval is the idle time after which an ALIVE (or the pending
	// ACK) is sent (default 1s, sync-ftfw.c ALIVE_INT; not configurable in
	// conntrackd).
	AliveInterval time.Duration
	// PeerTimeout is how long without a datagram from the peer before
	// LinkStats.PeerAlive turns false (default 3 × AliveInterval).
	PeerTimeout time.Duration
	// MTU of the sync interface (default 1500). Datagrams carry messages
	// up to MTU less the IP and UDP headers, as conntrackd's buffered
	// channel does with the interface's MTU.
	MTU int
	// SndBuf and RcvBuf set SO_SNDBUF/SO_RCVBUF when not zero (conntrackd's
	// UDP { SndSocketBuffer RcvSocketBuffer }; its example uses 1249280).
	// The kernel caps them at net.core.wmem_max/rmem_max.
	SndBuf, RcvBuf int
	// StartupResync asks the peer for its whole cache (RequestResync) once
	// the first HELLO handshake is done (conntrackd's StartupResync, which
	// asks at start; after the handshake the request is repaired if lost).
	StartupResync bool
	// Options are the encoding options (TCPWindowTracking, CommitTimeout).
	Options Options
	// Logger, if set, gets the link's events (handshake, peer up/down,
	// resyncs); nil logs nothing.
	Logger *slog.Logger

	headerLen int // IP + UDP header bytes, from the address family
}

// Handler receives what the peer sends. Its methods are called from one
// goroutine, the link's receive loop, one at a time and in sequence
// order; they should return quickly (the link does not ACK meanwhile) and
// may call the Link's methods except Close (which waits for that
// goroutine).
type Handler interface {
	// CT is a received connection message (already decoded; in sequence
	// order under FTFW).
	CT(t Type, c *CT)
	// Exp is a received expectation message.
	Exp(t Type, e *Exp)
	// ResyncRequested asks the caller to send its whole internal cache
	// again with SendCT(TypeCTNew, ...) (and SendExp): the peer sent
	// RESYNC (conntrackd -n there, or RequestResync), or the peer NACKed
	// messages our full resend queue had already dropped, which only a
	// whole resync can repair (LinkStats.ResyncsForLoss).
	ResyncRequested()
}

// LinkStats are a link's counters. Every dropped message is in one of
// Malformed, Foreign, Before, QueueDrops or ResendQueueDrops.
type LinkStats struct {
	DatagramsSent, DatagramsRecv uint64
	BytesSent, BytesRecv         uint64 // UDP payload bytes
	MsgsSent, MsgsRecv           uint64 // messages, data and control
	DataSent, DataRecv           uint64 // data messages (CT/EXP); DataRecv counts those delivered
	AcksSent, AcksRecv           uint64
	NacksSent, NacksRecv         uint64
	// Resent counts messages sent again because the peer NACKed them.
	Resent uint64
	// ResyncsRequested counts RESYNCs we sent (RequestResync).
	ResyncsRequested uint64
	// ResyncsServed counts RESYNCs the peer sent us; ResyncsForLoss the
	// resyncs we started because a NACKed range had left the resend queue.
	// Each called Handler.ResyncRequested.
	ResyncsServed, ResyncsForLoss uint64
	// Lost counts the sequence numbers missing in what we received (gaps,
	// each NACKed in FTFW mode); Before the late or duplicate messages
	// dropped (a number older than expected).
	Lost, Before uint64
	// Malformed counts messages dropped because they do not decode or
	// break the protocol; Foreign datagrams from an address that is not
	// the peer.
	Malformed, Foreign uint64
	// QueueDrops counts SendCT/SendExp refused with ErrQueueFull;
	// ResendQueueDrops unacknowledged messages dropped from the full
	// resend queue.
	QueueDrops, ResendQueueDrops uint64
	// SendErrors counts datagrams the socket refused.
	SendErrors uint64
	// TxQueueLen and ResendQueueLen are the current queue lengths.
	TxQueueLen, ResendQueueLen int
	// PeerAlive: a datagram came from the peer within PeerTimeout.
	PeerAlive bool
	// PeerHello: the HELLO handshake is done both ways (the peer answered
	// our HELLO with HELLO_BACK, and heard ours: it no longer says HELLO).
	// Before it, loss is not repaired (sync-ftfw.c): a caller with a cache
	// to send waits for it, or sends it again afterwards.
	PeerHello bool
}

// Link is one conntrackd sync channel over UDP unicast in FTFW (or
// NOTRACK) mode. SendCT, SendExp, RequestResync, Stats and Close may be
// called from any goroutine and never block on the network. The link runs
// two goroutines: a reader that only copies datagrams off the socket, and
// a loop that owns the protocol state (under mu, which callers take only
// to queue a message), sends datagrams and calls the Handler.
type Link struct {
	cfg  LinkConfig
	conn *net.UDPConn
	peer netip.AddrPort
	log  *slog.Logger

	mu sync.Mutex
	f  *ftfw

	kick    chan struct{}
	rx      chan []byte
	freeBuf chan []byte
	done    chan struct{}
	wg      sync.WaitGroup
	started bool
	closed  bool

	// sendMu serialises the datagrams' building and sending (flush):
	// two senders interleaving would reorder sequence numbers on the
	// wire, which the peer takes for loss.
	sendMu sync.Mutex
	// owner, set by DeferSends before Start, is called instead of waking
	// the loop when something is queued: the owner's goroutine sends
	// (Flush), the loop never does.
	owner func()
	obuf  []byte // Flush's datagram; under sendMu
}

const rxBuffers = 32

func (c *LinkConfig) setDefaults() error {
	if c.Listen == "" || c.Peer == "" {
		return errors.New("ctsync: a sync link needs both a listen address and a peer address (ADDR:PORT each)")
	}
	switch c.Mode {
	case "":
		c.Mode = "ftfw"
	case "ftfw", "notrack":
	default:
		return fmt.Errorf("ctsync: sync mode %q unknown; use ftfw (reliable, conntrackd's FTFW) or notrack", c.Mode)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.ResendQueueSize, 131072)
	def(&c.ACKWindowSize, 300)
	def(&c.TxQueueSize, 131072)
	def(&c.MTU, 1500)
	if c.AliveInterval <= 0 {
		c.AliveInterval = time.Second
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = 3 * c.AliveInterval
	}
	return nil
}

// NewLink binds the link's socket. Nothing is sent before Start.
func NewLink(cfg LinkConfig) (*Link, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	laddr, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("ctsync: sync listen address %q: %v; give ADDR:PORT, e.g. 198.18.0.1:3780", cfg.Listen, err)
	}
	peer, err := netip.ParseAddrPort(cfg.Peer)
	if err != nil {
		return nil, fmt.Errorf("ctsync: sync peer address %q: %v; give ADDR:PORT, e.g. 198.18.0.2:3780", cfg.Peer, err)
	}
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	if laddr.Addr().Unmap().Is4() != peer.Addr().Is4() {
		return nil, fmt.Errorf("ctsync: sync listen address %s and peer %s are of different families; use two IPv4 or two IPv6 addresses", laddr, peer)
	}
	cfg.headerLen = 28 // IPv4 + UDP, channel_udp.c headersiz
	if !peer.Addr().Is4() {
		cfg.headerLen = 48
	}
	if cfg.MTU-cfg.headerLen < AckHeaderLen {
		return nil, fmt.Errorf("ctsync: MTU %d is too small for the sync link; use the sync interface's MTU (1500 by default)", cfg.MTU)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(laddr))
	if err != nil {
		switch {
		case errors.Is(err, syscall.EADDRINUSE):
			return nil, fmt.Errorf("ctsync: sync listen address %s is in use (another statewire or conntrackd?): stop it or choose another port: %w", laddr, err)
		case errors.Is(err, syscall.EADDRNOTAVAIL):
			return nil, fmt.Errorf("ctsync: sync listen address %s is not configured on this host: add it to the sync interface (ip addr add) or choose one that is: %w", laddr.Addr(), err)
		case errors.Is(err, syscall.EACCES):
			return nil, fmt.Errorf("ctsync: binding sync listen address %s needs privileges: run as root or use a port above 1023: %w", laddr, err)
		}
		return nil, fmt.Errorf("ctsync: bind sync listen address %s: %w", laddr, err)
	}
	if cfg.SndBuf > 0 {
		if err := conn.SetWriteBuffer(cfg.SndBuf); err != nil {
			conn.Close()
			return nil, fmt.Errorf("ctsync: set the sync socket's send buffer to %d: %w", cfg.SndBuf, err)
		}
	}
	if cfg.RcvBuf > 0 {
		if err := conn.SetReadBuffer(cfg.RcvBuf); err != nil {
			conn.Close()
			return nil, fmt.Errorf("ctsync: set the sync socket's receive buffer to %d: %w", cfg.RcvBuf, err)
		}
	}
	l := &Link{
		cfg:     cfg,
		conn:    conn,
		peer:    peer,
		log:     cfg.Logger,
		f:       newFTFW(&cfg),
		kick:    make(chan struct{}, 1),
		rx:      make(chan []byte, rxBuffers),
		freeBuf: make(chan []byte, rxBuffers),
		done:    make(chan struct{}),
	}
	if l.log == nil {
		l.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for i := 0; i < rxBuffers; i++ {
		l.freeBuf <- make([]byte, 65536)
	}
	return l, nil
}

// LocalAddr is the bound address (useful with port 0).
func (l *Link) LocalAddr() netip.AddrPort {
	return l.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Start starts the reader and the loop; h's methods are called from the
// loop. Start may be called once.
func (l *Link) Start(h Handler) {
	l.mu.Lock()
	if l.started || l.closed {
		l.mu.Unlock()
		return
	}
	l.started = true
	l.mu.Unlock()
	l.wg.Add(2)
	go l.reader()
	go l.loop(h)
}

func (l *Link) reader() {
	defer l.wg.Done()
	for {
		var b []byte
		select {
		case b = <-l.freeBuf:
		case <-l.done:
			return
		}
		n, from, err := l.conn.ReadFromUDPAddrPort(b[:cap(b)])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.freeBuf <- b
			continue
		}
		// Address only: conntrackd sends from a second, unbound socket
		// (channel_udp.c's client), so its source port is ephemeral.
		if from.Addr().Unmap() != l.peer.Addr() {
			l.mu.Lock()
			l.f.st.Foreign++
			l.mu.Unlock()
			l.freeBuf <- b
			continue
		}
		select {
		case l.rx <- b[:n]:
		case <-l.done:
			return
		}
	}
}

func (l *Link) loop(h Handler) {
	defer l.wg.Done()
	tick := time.NewTicker(l.cfg.AliveInterval / 4)
	defer tick.Stop()
	out := make([]byte, 0, l.cfg.MTU)
	var msgs []Msg
	wasAlive, wasHello := false, false
	l.mu.Lock()
	l.f.tick(time.Now().UnixNano()) // the first ALIVE says HELLO
	l.mu.Unlock()
	l.send(&out)
	for {
		select {
		case <-l.done:
			return
		case b := <-l.rx:
			now := time.Now().UnixNano()
			l.mu.Lock()
			msgs = l.f.receiveDatagram(b, now, msgs[:0])
			resync := l.f.wantResync
			l.f.wantResync = 0
			l.mu.Unlock()
			l.freeBuf <- b[:cap(b)]
			for i := range msgs {
				m := &msgs[i]
				if m.CT != nil {
					h.CT(m.Type, m.CT)
				} else if m.Exp != nil {
					h.Exp(m.Type, m.Exp)
				}
				msgs[i] = Msg{}
			}
			for ; resync > 0; resync-- {
				l.log.Info("sync peer asked for a resync: resending the whole cache")
				h.ResyncRequested()
			}
		case <-l.kick:
		case <-tick.C:
			l.mu.Lock()
			l.f.tick(time.Now().UnixNano())
			l.mu.Unlock()
		}
		l.send(&out)
		st := l.Stats()
		if st.PeerAlive != wasAlive {
			wasAlive = st.PeerAlive
			if wasAlive {
				l.log.Info("sync peer is alive", "peer", l.peer)
			} else {
				l.log.Warn("sync peer is silent", "peer", l.peer, "for", l.cfg.PeerTimeout)
			}
		}
		if st.PeerHello && !wasHello {
			wasHello = true
			l.log.Info("sync peer answered HELLO", "peer", l.peer)
			if l.cfg.StartupResync {
				l.RequestResync()
			}
		}
	}
}

// flush sends everything queued, one datagram at a time, holding mu only
// to build each datagram. The caller holds sendMu.
func (l *Link) flush(out *[]byte) {
	for {
		l.mu.Lock()
		b := l.f.nextDatagram((*out)[:0], time.Now().UnixNano())
		l.mu.Unlock()
		if len(b) == 0 {
			return
		}
		if _, err := l.conn.WriteToUDPAddrPort(b, l.peer); err != nil {
			l.mu.Lock()
			l.f.st.SendErrors++
			l.mu.Unlock()
			if errors.Is(err, net.ErrClosed) {
				return
			}
		}
		*out = b
	}
}

func (l *Link) wake() {
	if l.owner != nil {
		l.owner()
		return
	}
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

var errClosed = errors.New("ctsync: the sync link is closed")

// SendCT queues a connection message (t is TypeCTNew, TypeCTUpd or
// TypeCTDel) and returns at once. A queued message for the same
// connection not yet acknowledged is replaced. With the transmit queue
// full the message is dropped, counted (QueueDrops) and ErrQueueFull
// returned.
func (l *Link) SendCT(t Type, c *CT) error {
	if !t.IsCT() {
		return fmt.Errorf("ctsync: SendCT with message type %v; use TypeCTNew, TypeCTUpd or TypeCTDel", t)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	f := l.f
	var err error
	f.enc, err = AppendCT(f.enc[:0], Header{Type: t}, c, f.opts)
	if err != nil {
		return err
	}
	if err := f.queueData(ctKey(c), f.enc); err != nil {
		return err
	}
	l.wake()
	return nil
}

// SendExp queues an expectation message (TypeExpNew, TypeExpUpd or
// TypeExpDel), as SendCT.
func (l *Link) SendExp(t Type, e *Exp) error {
	if !t.IsExp() {
		return fmt.Errorf("ctsync: SendExp with message type %v; use TypeExpNew, TypeExpUpd or TypeExpDel", t)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	f := l.f
	var err error
	f.enc, err = AppendExp(f.enc[:0], Header{Type: t}, e, f.opts)
	if err != nil {
		return err
	}
	if err := f.queueData(expKey(e), f.enc); err != nil {
		return err
	}
	l.wake()
	return nil
}

// RequestResync asks the peer to send its whole internal cache (a RESYNC
// control message, what conntrackd -n sends).
func (l *Link) RequestResync() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.f.queueCtl(FlagResync, 0, 0)
	l.f.st.ResyncsRequested++
	l.wake()
}

// Stats returns the link's counters.
func (l *Link) Stats() LinkStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.f
	st := f.st
	st.TxQueueLen, st.ResendQueueLen = f.tx.n, f.rs.n
	st.PeerAlive = f.rxAny && time.Now().UnixNano()-f.lastRx < int64(l.cfg.PeerTimeout)
	st.PeerHello = f.rxAny && (f.notrack || f.hello == helloDone && !f.peerHello)
	return st
}

// Close stops the goroutines and closes the socket. Queued messages are
// not sent.
func (l *Link) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.done)
	err := l.conn.Close()
	l.wg.Wait()
	return err
}
