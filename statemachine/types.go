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

// The kernel keeps EXP_CHALLENGE_ACK and SIMULTANEOUS_OPEN in last_flags,
// next to the window-scale/SACK options of the last ignored SYN. We keep
// them apart (TCPConn.Flags vs TCPConn.LastFlags) and clear TCPConn.Flags
// wherever the kernel zeroes last_flags (an ignored original SYN), so the
// behaviour is the same.

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
	Expires int64 // ns, absolute expiry time
	TCP     TCPConn
	Proto   uint8    // L4 protocol number
	State   TCPState // TCP only
	Status  uint8    // Status* bits
}

var ctStateNames = [...]string{"INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED"}

// String returns the iptables name of a single state ("NEW", ...), or
// "UNKNOWN" for zero or a combination of bits.
func (s CtState) String() string {
	for i, n := range ctStateNames {
		if s == 1<<i {
			return n
		}
	}
	return "UNKNOWN"
}

var tcpStateNames = [NumTCPStates]string{
	"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT",
	"CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2",
}

// String returns the kernel's name of the state, as in /proc/net/nf_conntrack.
func (s TCPState) String() string {
	if s < NumTCPStates {
		return tcpStateNames[s]
	}
	switch s {
	case tcpIV:
		return "INVALID"
	case tcpIG:
		return "IGNORE"
	}
	return "UNKNOWN"
}

// InvalidReason says why a packet was INVALID. It is a small integer so it
// can index counter arrays; String is for reports only.
type InvalidReason uint8

// Reasons for INVALID. Keep invalidReasonNames in sync.
const (
	ReasonNone            InvalidReason = iota
	ReasonTCPFlags                      // invalid TCP flag combination
	ReasonTCPDataOffset                 // data offset × 4 < 20
	ReasonTCPNewNotSyn                  // first packet not a SYN and loose pickup is off
	ReasonTCPNewState                   // first packet is SYN/ACK, FIN, RST or no flags
	ReasonTCPState                      // the transition table says INVALID
	ReasonTCPInvalidRST                 // RST with seq before the peer's highest ACK
	ReasonTCPSeqOverUpper               // window check I: SEQ over the receiver's window
	ReasonTCPAckOverUpper               // window check III: ACKs data not seen yet
	ReasonICMPNotRequest                // first ICMP packet of a flow is not a request type
	ReasonProto                         // packet protocol does not match the connection
	NumInvalidReasons
)

var invalidReasonNames = [...]string{
	ReasonNone:            "none",
	ReasonTCPFlags:        "tcp-invalid-flags",
	ReasonTCPDataOffset:   "tcp-bad-data-offset",
	ReasonTCPNewNotSyn:    "tcp-new-not-syn",
	ReasonTCPNewState:     "tcp-new-invalid-state",
	ReasonTCPState:        "tcp-invalid-state",
	ReasonTCPInvalidRST:   "tcp-invalid-rst",
	ReasonTCPSeqOverUpper: "tcp-seq-over-upper-bound",
	ReasonTCPAckOverUpper: "tcp-ack-over-upper-bound",
	ReasonICMPNotRequest:  "icmp-not-request",
	ReasonProto:           "proto-mismatch",
}

func (r InvalidReason) String() string {
	if int(r) < len(invalidReasonNames) {
		return invalidReasonNames[r]
	}
	return "unknown"
}

// Result is the outcome of New or Update for one packet.
//
// It has three fields, the flags grouped in Outcome (read as res.Kill
// through the embedding): Go keeps a struct of at most four fields in
// registers, while a wider one returned by value is stored byte by byte
// to the stack and copied with one wide load, which the CPU cannot
// forward from the narrow stores: that stall was 3% of an established
// packet's time in the pipeline.
type Result struct {
	State   CtState       // user-land state of this packet (StateNew, StateEstablished, StateRelated, StateInvalid)
	Reason  InvalidReason // why INVALID, or ReasonNone
	Outcome               // what the caller must do besides
}

// Outcome is what a packet's Result asks of the caller besides its state.
type Outcome struct {
	Ignored bool // accepted with no state change and no timeout refresh (kernel IGNORE)
	Kill    bool // the caller must delete the entry after this packet (RST before SEEN_REPLY)
	Reopen  bool // the caller must delete the entry and call New with this packet; State is StateNew then
}
