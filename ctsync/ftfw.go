package ctsync

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ftfw is the protocol state of one link: conntrackd's sync-ftfw.c (and,
// with notrack set, sync-notrack.c) without sockets, goroutines or a
// clock. Link owns one, guards it with Link.mu and passes the time in.
//
// Sender: every message sent takes the next sequence number (data, ACK,
// NACK, RESYNC and ALIVE alike: network.c __nethdr_set). Data messages and
// ACK/NACK/RESYNC wait in the resend queue (rs) until the peer ACKs their
// sequence number; a NACK moves them back to the transmit queue (tx), and
// they go out again with a new number, as conntrackd rebuilds a cache
// object's message at each transmission. One node per connection or
// expectation (objKey): a newer message for the same object replaces the
// queued one, as conntrackd queues cache objects, not messages.
//
// Receiver: ftfw_recv. In sequence: count the message towards the ACK
// window, ACK the window when it is full. A gap: ACK what came before it,
// NACK the missing range, accept the message. Older than expected: drop.
// HELLO from the peer (it has just started): accept whatever number it
// sends, forget our resend queue (the peer knows nothing of it) and say
// HELLO_BACK in our next message.
type ftfw struct {
	notrack    bool
	window     int   // ACKWindowSize
	rsMax      int   // ResendQueueSize
	txMax      int   // TxQueueSize
	maxDgram   int   // bytes of messages per datagram: MTU less IP and UDP headers
	aliveEvery int64 // ns
	opts       Options

	// Sender.
	seqSet     bool
	nextSeq    uint32
	tx, rs     nodeList
	objs       map[objKey]*node
	free       []*node
	enc        []byte // SendCT/SendExp encode here before queueData copies
	hello      int    // helloInit, helloSay, helloDone
	helloBack  bool
	lastTx     int64
	purged     bool   // rs dropped unacknowledged messages since the last loss resync
	purgedLo   uint32 // the sequence range they had
	purgedHi   uint32
	wantResync int // Handler.ResyncRequested calls owed (peer RESYNC or loss)

	// Receiver.
	recvSet    bool
	lastRecv   uint32
	win        int
	ackFrom    uint32
	ackFromSet bool
	lastRx     int64
	rxAny      bool
	peerHello  bool // the peer's last message said HELLO: it has not heard our HELLO_BACK

	st LinkStats
}

const (
	helloInit = iota
	helloSay
	helloDone
)

// objKey names the connection or expectation a data message is about.
type objKey struct {
	exp  bool
	a, b Tuple
	icmp [4]byte // type, code, identifier
}

func ctKey(c *CT) objKey {
	return objKey{a: c.Orig, icmp: [4]byte{c.ICMPType, c.ICMPCode, byte(c.ICMPID >> 8), byte(c.ICMPID)}}
}

func expKey(e *Exp) objKey { return objKey{exp: true, a: e.Master, b: e.Expect} }

// node is a queued message. Its header's flags and sequence number are
// written when it is transmitted.
type node struct {
	prev, next *node
	in         *nodeList
	keyed      bool
	key        objKey
	flags      uint8 // the message's own flags (control: ACK, NACK...; data: 0)
	seq        uint32
	msg        []byte
}

// nodeList is an intrusive doubly linked list in transmission order.
type nodeList struct {
	head node // sentinel
	n    int
}

func (l *nodeList) init() { l.head.next, l.head.prev = &l.head, &l.head }

func (l *nodeList) first() *node {
	if l.head.next == &l.head {
		return nil
	}
	return l.head.next
}

func (l *nodeList) push(n *node) {
	n.prev, n.next = l.head.prev, &l.head
	l.head.prev.next = n
	l.head.prev = n
	n.in = l
	l.n++
}

func (l *nodeList) remove(n *node) {
	n.prev.next, n.next.prev = n.next, n.prev
	n.prev, n.next, n.in = nil, nil, nil
	l.n--
}

// before is network.h's before(): a < b in sequence space.
func before(a, b uint32) bool { return int32(a-b) < 0 }

// between is network.h's between(): lo <= s <= hi in sequence space.
func between(s, lo, hi uint32) bool { return hi-lo >= s-lo }

// ErrQueueFull is returned by Link.SendCT/SendExp when the transmit queue
// holds TxQueueSize messages: the message is dropped and counted.
var ErrQueueFull = errors.New("ctsync: sync transmit queue full")

func newFTFW(cfg *LinkConfig) *ftfw {
	f := &ftfw{
		notrack:    cfg.Mode == "notrack",
		window:     cfg.ACKWindowSize,
		rsMax:      cfg.ResendQueueSize,
		txMax:      cfg.TxQueueSize,
		maxDgram:   cfg.MTU - cfg.headerLen,
		aliveEvery: int64(cfg.AliveInterval),
		opts:       cfg.Options,
		objs:       make(map[objKey]*node),
	}
	f.tx.init()
	f.rs.init()
	f.win = f.window
	return f
}

func (f *ftfw) alloc() *node {
	if n := len(f.free); n > 0 {
		nd := f.free[n-1]
		f.free = f.free[:n-1]
		return nd
	}
	return &node{}
}

// release forgets n: out of its list and the key map, back to the free list.
func (f *ftfw) release(n *node) {
	if n.in != nil {
		n.in.remove(n)
	}
	if n.keyed {
		delete(f.objs, n.key)
	}
	n.keyed = false
	n.msg = n.msg[:0]
	f.free = append(f.free, n)
}

// queueData queues an encoded data message for key; msg is copied.
func (f *ftfw) queueData(key objKey, msg []byte) error {
	n := f.objs[key]
	switch {
	case n == nil:
		if f.tx.n >= f.txMax {
			f.st.QueueDrops++
			return fmt.Errorf("%w (%d messages waiting): the peer is not keeping up or the sync link is down; the message was dropped and counted (QueueDrops)", ErrQueueFull, f.tx.n)
		}
		n = f.alloc()
		n.keyed, n.key = true, key
		f.objs[key] = n
		f.tx.push(n)
	case n.in == &f.rs:
		// Sent and not yet acknowledged: the new state supersedes it
		// (ftfw_enqueue moves the object from rs_queue to tx_queue).
		f.rs.remove(n)
		f.tx.push(n)
	}
	n.flags = 0
	n.msg = append(n.msg[:0], msg...)
	return nil
}

// queueCtl queues a control message (ALIVE, ACK, NACK, RESYNC).
func (f *ftfw) queueCtl(flags uint8, from, to uint32) {
	n := f.alloc()
	n.flags = flags
	n.msg = AppendControl(n.msg[:0], flags, 0, from, to)
	f.tx.push(n)
	switch {
	case flags&FlagAck != 0:
		f.st.AcksSent++
	case flags&FlagNack != 0:
		f.st.NacksSent++
	}
}

// helloFlags is nethdr_set_hello: HELLO until the peer answers, and one
// HELLO_BACK after the peer said HELLO.
func (f *ftfw) helloFlags() uint8 {
	var fl uint8
	if f.hello == helloInit {
		f.hello = helloSay
	}
	if f.hello == helloSay {
		fl |= FlagHello
	}
	if f.helloBack {
		fl |= FlagHelloBack
		f.helloBack = false
	}
	return fl
}

// nextDatagram fills buf (its capacity at least maxDgram) with the next
// messages of the transmit queue, numbering them, as conntrackd's buffered
// channel packs messages up to the MTU. It returns an empty slice when
// nothing is queued.
func (f *ftfw) nextDatagram(buf []byte, now int64) []byte {
	buf = buf[:0]
	for n := f.tx.first(); n != nil; n = f.tx.first() {
		if len(buf) > 0 && len(buf)+len(n.msg) > f.maxDgram {
			break
		}
		if !f.seqSet {
			// conntrackd starts numbering at time(NULL).
			f.seqSet, f.nextSeq = true, uint32(now/1e9)
		}
		seq := f.nextSeq
		f.nextSeq++
		n.msg[1] = n.flags
		if !f.notrack { // sync-notrack.c does not say HELLO
			n.msg[1] |= f.helloFlags()
		}
		binary.BigEndian.PutUint32(n.msg[4:], seq)
		buf = append(buf, n.msg...)
		f.st.MsgsSent++
		if n.flags == 0 {
			f.st.DataSent++
		}
		f.tx.remove(n)
		if f.notrack || n.flags&(FlagAck|FlagNack|FlagResync) == 0 && n.flags != 0 {
			// ALIVE, and everything in NOTRACK, is not kept.
			f.release(n)
			continue
		}
		n.seq = seq
		f.rs.push(n)
		if f.rs.n > f.rsMax {
			f.purgeHead()
		}
	}
	if len(buf) > 0 {
		f.lastTx = now
		f.st.DatagramsSent++
		f.st.BytesSent += uint64(len(buf))
	}
	return buf
}

// purgeHead drops the oldest message of a full resend queue
// (rs_queue_purge_full) and remembers its number: a NACK for it can only
// be answered with a whole resync.
func (f *ftfw) purgeHead() {
	n := f.rs.first()
	if !f.purged {
		f.purged, f.purgedLo = true, n.seq
	}
	f.purgedHi = n.seq
	f.st.ResendQueueDrops++
	f.release(n)
}

// tick runs conntrackd's alive alarm: after AliveInterval without sending,
// ACK what was received since the last ACK, or else send ALIVE.
func (f *ftfw) tick(now int64) {
	if f.seqSet && now-f.lastTx < f.aliveEvery || f.tx.n > 0 {
		return
	}
	if !f.notrack && f.ackFromSet && f.recvSet {
		f.queueCtl(FlagAck, f.ackFrom, f.lastRecv)
		f.ackFromSet = false
		return
	}
	f.queueCtl(FlagAlive, 0, 0)
}

// Verdicts of one received message (network.h MSG_*).
const (
	msgData = iota
	msgCtl
	msgDrop
	msgBad
)

// digest is digest_msg: act on a control message.
func (f *ftfw) digest(h *Header) int {
	switch {
	case h.IsData():
		return msgData
	case h.Type != TypeCtl:
		return msgBad
	case h.Flags&FlagAck != 0 && !f.notrack:
		if before(h.To, h.From) {
			return msgBad
		}
		f.st.AcksRecv++
		f.ack(h.From, h.To)
		return msgCtl
	case h.Flags&FlagNack != 0 && !f.notrack:
		if before(h.To, h.From) {
			return msgBad
		}
		f.st.NacksRecv++
		f.nack(h.From, h.To)
		return msgCtl
	case h.Flags&FlagResync != 0:
		f.st.ResyncsServed++
		f.wantResync++
		return msgCtl
	case h.Flags&FlagAlive != 0:
		return msgCtl
	}
	return msgBad
}

// ack is rs_queue_empty: forget the acknowledged messages.
func (f *ftfw) ack(from, to uint32) {
	for n := f.rs.head.next; n != &f.rs.head; {
		next := n.next
		if before(to, n.seq) {
			break
		}
		if !before(n.seq, from) {
			f.release(n)
		}
		n = next
	}
}

// nack is rs_queue_to_tx: send the missing messages again. If the range
// reaches messages the full resend queue dropped, only a whole resync can
// repair it: the Handler is asked for one (ResyncRequested), as for a
// RESYNC from the peer.
func (f *ftfw) nack(from, to uint32) {
	if f.purged && !before(to, f.purgedLo) && !before(f.purgedHi, from) {
		f.purged = false
		f.st.ResyncsForLoss++
		f.wantResync++
	}
	for n := f.rs.head.next; n != &f.rs.head; {
		next := n.next
		if before(to, n.seq) {
			break
		}
		if !before(n.seq, from) {
			f.rs.remove(n)
			f.tx.push(n)
			f.st.Resent++
		}
		n = next
	}
}

// receive handles one message header (ftfw_recv / notrack_recv) and
// returns its verdict; for msgData the caller delivers the payload.
func (f *ftfw) receive(h *Header) int {
	if f.notrack {
		switch {
		case !f.recvSet || h.Seq == f.lastRecv+1:
		case before(f.lastRecv+1, h.Seq):
			f.st.Lost += uint64(h.Seq - f.lastRecv - 1)
		default:
			f.st.Before++
		}
		v := f.digest(h)
		if v != msgBad {
			f.recvSet, f.lastRecv = true, h.Seq
		}
		return v
	}
	f.peerHello = h.Flags&FlagHello != 0
	if h.Flags&FlagHelloBack != 0 && f.hello == helloSay {
		f.hello = helloDone
	}
	v := msgDrop
	switch {
	case h.Flags&FlagHello != 0:
		f.helloBack = true
		if f.ackFromSet && before(h.Seq, f.ackFrom) {
			f.win = f.window - 1
			f.ackFrom = h.Seq
		}
		// The peer has (re)started and knows nothing of what we sent.
		for n := f.rs.first(); n != nil; n = f.rs.first() {
			f.release(n)
		}
		f.purged = false
		v = f.inSync(h)
	case !f.recvSet || h.Seq == f.lastRecv+1:
		v = f.inSync(h)
	case before(f.lastRecv+1, h.Seq):
		exp := f.lastRecv + 1
		if v = f.digest(h); v == msgBad {
			return v
		}
		f.st.Lost += uint64(h.Seq - exp)
		if f.ackFromSet {
			f.queueCtl(FlagAck, f.ackFrom, exp-1)
		}
		f.queueCtl(FlagNack, exp, h.Seq-1)
		f.win = f.window - 1
		f.ackFrom, f.ackFromSet = h.Seq, true
	default:
		// "we don't accept delayed packets"
		f.st.Before++
		return msgDrop
	}
	if v == msgData || v == msgCtl {
		f.recvSet, f.lastRecv = true, h.Seq
	}
	return v
}

func (f *ftfw) inSync(h *Header) int {
	v := f.digest(h)
	if v == msgBad {
		return v
	}
	if !f.ackFromSet {
		f.ackFrom, f.ackFromSet = h.Seq, true
	}
	if f.win--; f.win <= 0 {
		f.queueCtl(FlagAck, f.ackFrom, h.Seq)
		f.win = f.window
		f.ackFromSet = false
	}
	return v
}

// receiveDatagram walks a datagram as channel_handler_routine does and
// appends the data messages to deliver to out. A message with a bad
// version is skipped; a length that does not fit ends the datagram; a
// data message whose attributes do not decode keeps its sequence number
// (conntrackd tracks it before msg2ct) but is dropped. Every dropped
// message counts in Malformed.
func (f *ftfw) receiveDatagram(b []byte, now int64, out []Msg) []Msg {
	f.lastRx, f.rxAny = now, true
	f.st.DatagramsRecv++
	f.st.BytesRecv += uint64(len(b))
	for len(b) > 0 {
		m, n, err := DecodeMsg(b)
		if n == 0 || errors.Is(err, ErrLength) {
			f.st.Malformed++
			break
		}
		b = b[n:]
		if errors.Is(err, ErrVersion) {
			f.st.Malformed++
			continue
		}
		f.st.MsgsRecv++
		v := f.receive(&m.Header)
		switch {
		case v == msgBad:
			f.st.Malformed++
		case v != msgData:
		case err != nil:
			f.st.Malformed++
		default:
			f.st.DataRecv++
			out = append(out, m)
		}
	}
	if f.helloBack && f.tx.n == 0 {
		// Answer HELLO now rather than with the next alive alarm (up to
		// AliveInterval later, as conntrackd does): until the peer hears
		// HELLO_BACK it says HELLO, and each HELLO empties our resend queue.
		f.queueCtl(FlagAlive, 0, 0)
	}
	return out
}
