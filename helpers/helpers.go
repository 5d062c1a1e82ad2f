package helpers

import (
	"time"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// ID names a conntrack helper. It is one byte so a flow entry can carry it
// for free; IDNone means no helper is attached.
type ID uint8

// The helpers statewire knows. Keep names and the order of the tables below
// in sync.
const (
	IDNone ID = iota
	IDFTP
	IDIRC
	IDTFTP
	IDAmanda
	NumIDs
)

var idNames = [...]string{
	IDNone:   "none",
	IDFTP:    "ftp",
	IDIRC:    "irc",
	IDTFTP:   "tftp",
	IDAmanda: "amanda",
}

// String returns the kernel's name for the helper ("ftp", "irc", "tftp",
// "amanda"), as `-j CT --helper` and `conntrack -L` spell it, or "none".
func (id ID) String() string {
	if int(id) < len(idNames) {
		return idNames[id]
	}
	return "unknown"
}

// ByName returns the helper with the kernel name s (as written in a rule:
// `-j CT --helper ftp`). Names are case-sensitive, as in the kernel.
func ByName(s string) (ID, bool) {
	for id := IDFTP; id < NumIDs; id++ {
		if idNames[id] == s {
			return id, true
		}
	}
	return IDNone, false
}

// Expectation policies (kernel struct nf_conntrack_expect_policy): the most
// expectations one master connection may hold at once (when a new one would
// exceed it, the oldest of that master is evicted) and how long an
// expectation lives unless a connection matches it first.
const (
	FTPMaxExpected    = 1
	FTPExpectTimeout  = int64(300 * time.Second)
	IRCMaxExpected    = 8 // module parameter max_dcc_channels
	IRCExpectTimeout  = int64(300 * time.Second)
	TFTPMaxExpected   = 1
	TFTPExpectTimeout = int64(300 * time.Second)
	// AmandaMaxExpected is 4 since the kernel added the STATE stream (it was
	// 3 with DATA, MESG and INDEX only).
	AmandaMaxExpected   = 4
	AmandaExpectTimeout = int64(180 * time.Second)
	// AmandaMasterTimeout is what the Amanda helper sets the master UDP
	// connection's timeout to on every reply-direction packet (module
	// parameter master_timeout), because Amanda clients answer slowly.
	AmandaMasterTimeout = int64(300 * time.Second)
)

// Policy is the expectation policy of one helper.
type Policy struct {
	MaxExpected int   // per master connection; reaching it evicts the oldest
	Timeout     int64 // ns, lifetime of an expectation
}

var policies = [...]Policy{
	IDNone:   {},
	IDFTP:    {FTPMaxExpected, FTPExpectTimeout},
	IDIRC:    {IRCMaxExpected, IRCExpectTimeout},
	IDTFTP:   {TFTPMaxExpected, TFTPExpectTimeout},
	IDAmanda: {AmandaMaxExpected, AmandaExpectTimeout},
}

// Policy returns the helper's expectation policy (zero for IDNone).
func (id ID) Policy() Policy {
	if int(id) < len(policies) {
		return policies[id]
	}
	return Policy{}
}

// Classic ports, on which old kernels attached helpers by themselves
// (removed for security in 4.7; statewire offers it behind --auto-helpers).
// The port is the server's: the original direction's destination port.
const (
	FTPPort    uint16 = 21    // TCP, IPv4 and IPv6
	IRCPort    uint16 = 6667  // TCP, IPv4 only (the kernel registers irc for AF_INET only)
	TFTPPort   uint16 = 69    // UDP, IPv4 and IPv6
	AmandaPort uint16 = 10080 // UDP, IPv4 and IPv6
)

// ByPort returns the helper the classic port assignment gives a new
// connection whose first packet has IP version ipVersion (4 or 6), L4
// protocol proto and destination port dport, or IDNone. It serves the
// --auto-helpers mode; rules (`-j CT --helper`) are the default way.
func ByPort(ipVersion, proto uint8, dport uint16) ID {
	switch {
	case proto == packet.ProtoTCP && dport == FTPPort:
		return IDFTP
	case proto == packet.ProtoTCP && dport == IRCPort && ipVersion == 4:
		return IDIRC
	case proto == packet.ProtoUDP && dport == TFTPPort:
		return IDTFTP
	case proto == packet.ProtoUDP && dport == AmandaPort:
		return IDAmanda
	}
	return IDNone
}

// MasterTimeout reports whether a packet in direction dir that reached the
// helper id must reset its own connection's timeout, and to what (ns from
// now). Only Amanda does this: every reply-direction packet sets the master
// to AmandaMasterTimeout, overriding the UDP timeout the state machine just
// set (the kernel helper runs after the protocol handler).
func MasterTimeout(id ID, dir statemachine.Dir) (int64, bool) {
	if id == IDAmanda && dir == statemachine.Reply {
		return AmandaMasterTimeout, true
	}
	return 0, false
}

// MaxExpectPerPacket is the most expectations one packet can create: Amanda's
// four streams (DATA, MESG, INDEX, STATE). FTP, IRC and TFTP create at most
// one.
const MaxExpectPerPacket = 4

// Expectation is a connection a helper expects to see, as a value: the
// pipeline inserts it into the expectation table (flowtable), linked to the
// master connection that created it. A new connection matches it when its
// original-direction tuple has this L3 and Proto, Dst and DstPort exactly,
// and Src (unless SrcAny) and SrcPort (unless 0) exactly.
type Expectation struct {
	L3      uint8 // IP version of the expected connection: 4 or 6
	Proto   uint8 // L4 protocol of the expected connection
	Src     packet.Addr
	SrcAny  bool   // any source address (IRC DCC)
	SrcPort uint16 // 0 = any source port (every helper)
	Dst     packet.Addr
	DstPort uint16 // exact; may be 0 when the payload said so (FTP PORT ...,0,0)
	Timeout int64  // ns, the helper's policy timeout
	Helper  ID     // the helper that created it (the master's helper)
}

// DropReason says why a helper asked to drop a packet. It is a small integer
// so it can index counter arrays.
type DropReason uint8

// Helper drop reasons. Only FTP ever drops: a command keyword matched at the
// start of a line but its arguments did not parse (the kernel logs "partial
// matching of `PORT'" and returns NF_DROP so that a command split over two
// segments is retransmitted whole rather than slip past).
const (
	DropNone DropReason = iota
	DropFTPPort
	DropFTPEPRT
	DropFTPPASV // "227 "
	DropFTPEPSV // "229 "
	NumDropReasons
)

var dropNames = [...]string{
	DropNone:    "none",
	DropFTPPort: "ftp-partial-port",
	DropFTPEPRT: "ftp-partial-eprt",
	DropFTPPASV: "ftp-partial-227",
	DropFTPEPSV: "ftp-partial-229",
}

func (r DropReason) String() string {
	if int(r) < len(dropNames) {
		return dropNames[r]
	}
	return "unknown"
}

// State is the per-connection helper state, kept with the flow entry (beside
// it, in a slot of the same index: the entry has no room). Only FTP
// uses it: for each direction, the (at most two) sequence numbers that
// follow a segment ending in '\n' (kernel struct nf_ct_ftp_master,
// NUM_SEQ_TO_REMEMBER = 2). It is 20 bytes (16 of sequence numbers, 2
// counts, 2 pickup flags); the zero value is a fresh connection.
type State struct {
	seqAftNL [2][2]uint32 // [dir][slot]
	numNL    [2]uint8     // valid slots per direction, 0..2
	pickup   [2]bool      // NF_CT_FTP_SEQ_PICKUP per direction (Pickup)
}

// Pickup makes the helper parse the next segment of each direction
// whatever its sequence number, once: the state of a connection committed
// from a peer (statewire sync -c) does not say where the last line ended.
// The kernel's FTP helper does the same for a connection created through
// ctnetlink, as conntrackd -c does (nf_ct_ftp_from_nlattr sets
// NF_CT_FTP_SEQ_PICKUP in both directions; help() clears it on the first
// segment that does not follow a known newline and parses that segment).
func (st *State) Pickup() { st.pickup = [2]bool{true, true} }

// Inspect runs helper id on one packet of a connection it is attached to and
// writes the expectations the packet creates into out, returning how many.
// drop asks the pipeline to drop the packet (reason says why); the packet
// then creates no expectation.
//
// p is the parsed packet; payload is its captured L4 payload. p.PayloadLen,
// the length from the IP header, is authoritative: payload bytes beyond it
// (Ethernet padding) are ignored, and payload shorter than it (a truncated
// capture) reads as zeros past its end, which is what the kernel saw when the
// reference captures were replayed padded. dir is the packet's direction in
// its connection; established is true when the packet's ctinfo is
// ESTABLISHED or ESTABLISHED_REPLY (the connection has seen a reply, or the
// packet is a reply), false for NEW and RELATED. st is the connection's
// State. The master's addresses and ports are taken from p and dir.
//
// Call it for every packet of a connection with a helper attached (NEW ones
// included: TFTP acts on the first packet) once the state machine accepted
// it (not INVALID) and the rules accepted it: the kernel runs helpers at
// confirmation, after the filter hooks. Do not call it for an ICMP error
// related to the connection (the kernel skips helpers for those, and only
// TFTP would read them). After it, apply MasterTimeout.
func Inspect(id ID, st *State, p *packet.Packet, payload []byte, dir statemachine.Dir, established bool, out *[MaxExpectPerPacket]Expectation) (n int, drop bool, reason DropReason) {
	dlen := int(p.PayloadLen)
	if dlen > maxPayload {
		dlen = maxPayload // no IP header can say more; bounds every scan
	}
	if len(payload) > dlen {
		payload = payload[:dlen]
	}
	v := view{b: payload, n: dlen}
	switch id {
	case IDFTP:
		return ftpHelp(st, p, v, dir&1, established, out)
	case IDIRC:
		return ircHelp(p, v, dir&1, established, out), false, DropNone
	case IDTFTP:
		return tftpHelp(p, v, dir&1, out), false, DropNone
	case IDAmanda:
		return amandaHelp(p, v, dir&1, out), false, DropNone
	}
	return 0, false, DropNone
}

// maxPayload is the largest L4 payload an IPv4 or (non-jumbo) IPv6 header
// can announce.
const maxPayload = 0xffff

// view is a payload of n bytes of which b were captured; bytes past the
// capture read as zero. Every helper reads through at, so no index can
// panic whatever the input.
type view struct {
	b []byte
	n int
}

func (v view) at(i int) byte {
	if uint(i) < uint(len(v.b)) {
		return v.b[i]
	}
	return 0
}

// hasPrefixFold reports whether the bytes at off equal s, ASCII case folded
// (strncasecmp against patterns made of ASCII letters, digits and spaces:
// the kernel's Latin-1 tolower never maps a byte >= 0x80 into ASCII).
func (v view) hasPrefixFold(off int, s string) bool {
	for i := 0; i < len(s); i++ {
		if lower(v.at(off+i)) != lower(s[i]) {
			return false
		}
	}
	return true
}

// hasPrefix reports whether the bytes at off equal s exactly (memcmp).
func (v view) hasPrefix(off int, s string) bool {
	for i := 0; i < len(s); i++ {
		if v.at(off+i) != s[i] {
			return false
		}
	}
	return true
}

// index returns the offset of the first occurrence of s lying wholly within
// [from, to), or -1 (skb_find_text).
func (v view) index(from, to int, s string) int {
	for i := from; i+len(s) <= to; i++ {
		if v.hasPrefix(i, s) {
			return i
		}
	}
	return -1
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// origEnds returns the original direction's source and destination
// addresses and ports of the packet's connection.
func origEnds(p *packet.Packet, dir statemachine.Dir) (src, dst packet.Addr, sport, dport uint16) {
	if dir == statemachine.Original {
		return p.Src, p.Dst, p.SrcPort, p.DstPort
	}
	return p.Dst, p.Src, p.DstPort, p.SrcPort
}
