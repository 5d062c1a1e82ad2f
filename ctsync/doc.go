// Package ctsync encodes and decodes conntrackd's network messages, byte
// for byte as conntrack-tools 1.4.7 does, so statewire can exchange
// connection state with another statewire or with a Linux firewall running
// conntrackd (issue 14).
//
// A datagram holds one or more messages, each a nethdr (8 bytes: version
// and type in the first byte, flags, length, sequence number) followed,
// for data messages, by NTA_* attributes (4-byte header, 4-byte aligned).
// Control messages (type NET_T_CTL) carry ALIVE, ACK, NACK or RESYNC; ACK,
// NACK and RESYNC add a from/to sequence range (nethdr_ack, 16 bytes).
//
// The rules come from conntrack-tools' include/network.h (layout, enums,
// alignment), src/build.c (which attributes ct2msg/exp2msg write, in which
// order) and src/parse.c (msg2ct/msg2exp: the checks a receiver makes).
// Decode applies those checks and a few more so that nothing is read past
// a message's length; it never panics.
//
// FromSnapshot and FillExpFromExpect build what conntrackd would send for
// a table entry and an expectation (the mask as ctnetlink dumps it);
// CT.ToState and Exp.ToExpect turn what a peer sent into the table's types,
// refusing an expectation statewire cannot match exactly (a partial mask).
//
// Two quirks of conntrackd are reproduced, not fixed: addresses and ports
// travel as libnetfilter_conntrack's attribute groups, in network byte
// order, but the ICMP identifier goes through ct_build_u16, which applies
// htons to a value libnetfilter_conntrack already keeps in network order,
// so on the little-endian hosts conntrackd runs on the identifier is sent
// little-endian (ICMPIDWire); and a helper name may be at most 11 bytes,
// because parse.c compares the attribute's length including its 4-byte
// header with NFCT_HELPER_NAME_MAX (16) and the name ends with a NUL.
//
// # The link: FTFW over UDP unicast
//
// Link (link.go, protocol state in ftfw.go) is conntrackd's reliable
// FTFW mode (src/sync-ftfw.c, src/network.c, src/sync-mode.c), or its
// best-effort NOTRACK mode, over one UDP unicast channel. It speaks to
// another statewire or to conntrackd 1.4.7 (tested against the daemon).
//
// Sequence numbers: every message sent takes the next number, data and
// control alike (ALIVE, ACK, NACK, RESYNC); numbering starts at the Unix
// time of the first message, as conntrackd's does.
//
// Receiving: a message numbered as expected counts towards the ACK
// window; every ACKWindowSize (300) messages the receiver sends ACK
// [first, last] of the window. A gap: ACK what came before it, NACK
// [expected, received-1], accept the message and start a new window
// with it. A message numbered below the expected one (late, duplicated or
// overtaken by reordering) is dropped (LinkStats.Before) and, having left
// a gap when its successor arrived, is recovered by that NACK. Data
// messages go to the Handler in the order accepted, so in increasing
// sequence order.
//
// Sending: data messages, and ACK/NACK/RESYNC, wait in a resend queue of
// ResendQueueSize (131072) until ACKed. A NACK puts the messages of its
// range back on the transmit queue; they go out again with new numbers
// (conntrackd resends the object, not the old datagram). A control
// message is resent too, so a lost NACK or RESYNC is repaired like lost
// data. The queues hold one entry per connection (or expectation): a
// newer message for it replaces the queued one, as conntrackd queues its
// cache objects. When the resend queue is full its oldest message is
// dropped (ResendQueueDrops); if a later NACK reaches such a message,
// nothing can resend it, so the link calls Handler.ResyncRequested on
// its own side (ResyncsForLoss): the caller sends its whole cache again,
// exactly as when the peer asks with RESYNC. conntrackd itself drops such
// a NACK silently; this is the one place the link does more.
//
// ALIVE: after AliveInterval (1s, conntrackd's fixed ALIVE_INT) without
// sending, the link sends the pending ACK if messages came since the last
// one, or else ALIVE. PeerAlive in the stats means a datagram arrived
// within PeerTimeout (3s).
//
// HELLO: until the peer answers, every message carries NET_F_HELLO. A
// receiver seeing HELLO knows the peer (re)started: it accepts the
// message whatever its number, forgets its own resend queue (the peer
// knows nothing of it) and sets NET_F_HELLO_BACK on its next message —
// sent at once here, not with the next ALIVE as conntrackd does. Loss is
// not repaired before the handshake is done (LinkStats.PeerHello); a
// caller with a cache to send waits for it or, as conntrackd's
// StartupResync does, asks with RequestResync.
//
// RESYNC: RequestResync sends NET_F_RESYNC (what conntrackd -n does);
// receiving one calls Handler.ResyncRequested, and the caller re-sends
// its cache with SendCT(TypeCTNew, ...).
//
// Batching: messages are packed into datagrams up to MTU less the IP and
// UDP headers (1500 - 28 for IPv4), as conntrackd's buffered channel.
//
// NOTRACK mode: numbered messages, ALIVE, RESYNC; no HELLO, ACK, NACK or
// resend queue; gaps only counted.
//
// Defaults are conntrackd's (conntrackd.conf(5)): ResendQueueSize 131072,
// ACKWindowSize 300, ALIVE every second. The Link adds TxQueueSize
// (131072: SendCT never blocks; beyond it the message is dropped and
// counted) where conntrackd's transmit queue is unbounded. Settings of
// conntrackd's that belong to the caches and not to the link —
// DisableExternalCache, CommitTimeout (Options.CommitTimeout here),
// PurgeTimeout (60s), ALARM mode's RefreshTime and CacheTimeout — are
// for the code that keeps the caches (the sync integration in run).
//
// Concurrency: SendCT, SendExp, RequestResync, Stats and Close may be
// called from any goroutine and never wait for the network. The link's
// loop goroutine owns the protocol (under Link.mu, which callers hold
// only to queue a message) and calls the Handler, one call at a time.
// It sends the datagrams too, unless DeferSends made another goroutine
// the sender (flush.go): then everything queued waits for that
// goroutine's Flush, and the loop only receives (hasync runs the sender
// at idle priority).
package ctsync
