package bridge

import (
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// Port is one of the two bridge ports. Frames accepted on one leave by the
// other.
type Port uint8

const (
	PortA Port = 0
	PortB Port = 1
)

func (p Port) String() string {
	if p == PortA {
		return "A"
	}
	return "B"
}

// Other returns the port a frame received on p leaves by.
func (p Port) Other() Port { return p ^ 1 }

// Verdict is what happens to a frame. The zero value drops: a result that
// was never filled in never forwards.
type Verdict uint8

const (
	Drop Verdict = iota
	Accept
)

func (v Verdict) String() string {
	if v == Accept {
		return "ACCEPT"
	}
	return "DROP"
}

// DropReason says why a frame was dropped. Every drop has one and a counter.
type DropReason uint8

const (
	DropNone         DropReason = iota
	DropMalformed               // the L2/L3 header is broken: the kernel drops these before conntrack
	DropRule                    // a FORWARD rule or the FORWARD policy said DROP
	DropRaw                     // a raw-table rule said DROP
	DropTableFull               // no room for a new connection and nothing could be early-dropped
	DropHelper                  // a helper found a command it could not parse (kernel NF_DROP)
	DropNonIP                   // a non-IP frame while --non-ip=drop
	DropOversize                // the frame is larger than the datapath's frame size
	DropNoTXSpace               // the egress port's TX ring was full
	DropReopenFailed            // a TCP reopen could not replace the old entry
	// DropHandover: a frame the XDP fast path punted while its flow was
	// pending, still queued when the flow was activated (most often
	// under overload, fastpath.go pendingForce): judging it after the
	// frames the fast path has taken since would reorder the flow.
	DropHandover
	// DropReject: a REJECT rule dropped the frame (and an answer went
	// back out of its ingress port, unless TargetStats says why not).
	DropReject
	// DropHashlimit: a -m hashlimit table had no room for the frame's
	// key (--hashlimit-htable-max keys, per worker), and the match
	// dropped the frame itself, as the kernel's hotdrop does.
	DropHashlimit
	// DropConnlimit: the -m connlimit counts (shared by every worker,
	// 65536 addresses) had no room for the frame's address, and the
	// match dropped the frame itself, as the kernel does when it cannot
	// allocate a count.
	DropConnlimit
	NumDropReasons
)

var dropReasonNames = [...]string{
	DropNone:         "none",
	DropMalformed:    "malformed",
	DropRule:         "rule",
	DropRaw:          "raw-rule",
	DropTableFull:    "table-full",
	DropHelper:       "helper",
	DropNonIP:        "non-ip",
	DropOversize:     "oversize",
	DropNoTXSpace:    "tx-ring-full",
	DropReopenFailed: "reopen-failed",
	DropHandover:     "handover",
	DropReject:       "reject",
	DropHashlimit:    "hashlimit-full",
	DropConnlimit:    "connlimit-full",
}

func (r DropReason) String() string {
	if int(r) < len(dropReasonNames) {
		return dropReasonNames[r]
	}
	return "unknown"
}

// Result is the pipeline's answer for one frame.
type Result struct {
	Verdict  Verdict
	Drop     DropReason // why dropped, when Verdict is Drop
	State    statemachine.CtState
	Dir      statemachine.Dir
	TCPState statemachine.TCPState // the connection's TCP state after the packet (TCP only)
	Parse    packet.Reason         // the parser's finding (ReasonOK, ReasonNotIP, or why broken)
	Invalid  statemachine.InvalidReason
	Tracked  bool  // the packet belongs to (or created) a flow-table entry
	Rule     int32 // the deciding FORWARD rule, or rules.PolicyRule
	// CsumAt is the offset of the L4 checksum field the pipeline completed
	// in the frame (a partial checksum, packet.CompleteChecksum), 0 when
	// none: a caller that had the pipeline judge a copy of the frame (a
	// multi-buffer frame gathered into one slice) writes those two bytes
	// back into the buffer it forwards.
	CsumAt uint16
	// Reject is the answer a REJECT rule asked for (Drop is DropReject):
	// Pipeline.RejectAnswer builds it.
	Reject rules.RejectWith
}
