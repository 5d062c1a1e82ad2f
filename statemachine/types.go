package statemachine

// Dir is the direction of a packet relative to its connection: Original is
// the direction of the packet that created the entry.
type Dir uint8

const (
	Original Dir = 0
	Reply    Dir = 1
)

// CtState is the user-land connection state of a packet, as the rule set
// sees it (iptables -m conntrack --ctstate). The values are bits so a rule's
// state set is one mask and matching is one AND.
type CtState uint8

const (
	StateInvalid CtState = 1 << iota
	StateNew
	StateEstablished
	StateRelated
	StateUntracked
)

// TCPState is the conntrack TCP state (kernel enum tcp_conntrack order).
type TCPState uint8

const (
	TCPNone TCPState = iota
	TCPSynSent
	TCPSynRecv
	TCPEstablished
	TCPFinWait
	TCPCloseWait
	TCPLastAck
	TCPTimeWait
	TCPClose
	TCPSynSent2
	NumTCPStates
	tcpIV TCPState = 0xfe // table sentinel: invalid
	tcpIG TCPState = 0xff // table sentinel: ignore
)

// Status bits of a connection (subset of the kernel's IPS_* bits).
const (
	StatusSeenReply uint8 = 1 << iota // a reply was accepted (cleared: [UNREPLIED])
	StatusAssured                     // [ASSURED]: never early-dropped
	StatusExpected                    // created from an expectation (RELATED until first reply)
	StatusUntracked                   // NOTRACK: no state kept
	StatusDying                       // deleted; the slot may be reused
)

// Per-direction TCP flags (kernel IP_CT_TCP_FLAG_*).
const (
	TCPFlagWindowScale    uint8 = 0x01
	TCPFlagSACKPerm       uint8 = 0x02
	TCPFlagCloseInit      uint8 = 0x04
	TCPFlagBeLiberal      uint8 = 0x08
	TCPFlagDataUnacked    uint8 = 0x10
	TCPFlagMaxAckSet      uint8 = 0x20
	TCPFlagChallengeAck   uint8 = 0x40 // per connection (kept in TCPConn.Flags)
	TCPFlagSimultaneousOp uint8 = 0x80 // per connection (kept in TCPConn.Flags)
)

// TCPPeer is the window-tracking state of one direction (kernel struct
// ip_ct_tcp_state).
type TCPPeer struct {
	End    uint32 // td_end: highest seq+len sent
	MaxEnd uint32 // td_maxend: highest ack+win seen from the peer
	MaxWin uint32 // td_maxwin: largest window (plus SACK span) seen
	MaxAck uint32 // td_maxack: highest ack sent
	Scale  uint8  // td_scale: 0..14
	Flags  uint8  // TCPFlag*
}

// TCPConn is the TCP part of a connection (kernel struct ip_ct_tcp).
// Peer is indexed by Dir: snd, rcv := &t.Peer[dir], &t.Peer[dir^1].
type TCPConn struct {
	Peer       [2]TCPPeer
	LastSeq    uint32
	LastAck    uint32
	LastEnd    uint32
	LastWin    uint16
	LastDir    Dir
	LastIndex  uint8 // packet class of the last accepted/ignored packet
	LastWScale uint8
	LastFlags  uint8
	Retrans    uint8
	Flags      uint8 // connection-wide flags: TCPFlagChallengeAck, TCPFlagSimultaneousOp
}

// Conn is the protocol state of one tracked connection: everything the
// state machines read and write. It lives inside a flow-table entry and is
// owned by the goroutine that owns that entry's shard.
type Conn struct {
	Created int64 // ns, time the entry was created (UDP stream rule)
	Expires int64 // ns, absolute expiry time
	TCP     TCPConn
	Proto   uint8    // L4 protocol number
	State   TCPState // TCP only
	Status  uint8    // Status* bits
}
