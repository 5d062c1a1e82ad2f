package ctsync

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/helpers"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// Kernel status bits (include/uapi/linux/netfilter/nf_conntrack_common.h,
// enum ip_conntrack_status), as NTA_STATUS carries them.
const (
	IPSExpected  uint32 = 1 << 0
	IPSSeenReply uint32 = 1 << 1
	IPSAssured   uint32 = 1 << 2
	IPSConfirmed uint32 = 1 << 3
	IPSDying     uint32 = 1 << 9
	IPSUntracked uint32 = 1 << 12
	IPSHelper    uint32 = 1 << 13
)

var statusMap = [...]struct {
	sw  uint8
	ips uint32
}{
	{statemachine.StatusExpected, IPSExpected},
	{statemachine.StatusSeenReply, IPSSeenReply},
	{statemachine.StatusAssured, IPSAssured},
	{statemachine.StatusDying, IPSDying},
	{statemachine.StatusUntracked, IPSUntracked},
}

// KernelStatus turns statewire status bits into the kernel's IPS_* bits.
// A tracked entry is CONFIRMED (it is in the table).
func KernelStatus(s uint8) uint32 {
	out := IPSConfirmed
	for _, m := range statusMap {
		if s&m.sw != 0 {
			out |= m.ips
		}
	}
	return out
}

// StatusFromKernel keeps the IPS_* bits statewire models.
func StatusFromKernel(s uint32) uint8 {
	var out uint8
	for _, m := range statusMap {
		if s&m.ips != 0 {
			out |= m.sw
		}
	}
	return out
}

func addrOf(a packet.Addr) netip.Addr { return a.Netip() }

// FromSnapshot builds the CT a conntrackd would send for the entry es at
// time now (ns, the table's clock): original tuple, status, TCP state and
// window scales, the seconds left before expiry (rounded up, as the
// kernel's ctnetlink reports them), the connection mark (always, as a
// ctnetlink dump has it), the helper's name. VLAN zones are not
// carried (conntrackd 1.4.7 has no zone attribute).
func FromSnapshot(es *flowtable.EntrySnapshot, now int64) *CT {
	c := new(CT)
	FillFromSnapshot(c, es, now)
	return c
}

// FillFromSnapshot is FromSnapshot into c (overwritten), for a caller that
// keeps its CTs by value and must not allocate one per event.
func FillFromSnapshot(c *CT, es *flowtable.EntrySnapshot, now int64) {
	t := &es.Orig
	*c = CT{Orig: Tuple{Src: addrOf(t.Src), Dst: addrOf(t.Dst), Proto: t.Proto}}
	c.Set(NTAL4Proto)
	if c.Orig.Src.Is4() {
		c.Set(NTAIPv4)
	} else {
		c.Set(NTAIPv6)
	}
	c.Status = KernelStatus(es.Conn.Status)
	if es.Helper != 0 {
		c.Status |= IPSHelper
		c.Helper = helpers.ID(es.Helper).String()
		c.Set(NTAHelperName)
	}
	c.Set(NTAStatus)
	switch t.Proto {
	case packet.ProtoTCP:
		c.Orig.SrcPort, c.Orig.DstPort = t.SrcPort, t.DstPort
		c.TCPState = uint8(es.Conn.State)
		c.WScale = [2]uint8{es.Conn.TCP.Peer[0].Scale, es.Conn.TCP.Peer[1].Scale}
		c.Set(NTAPort)
		c.Set(NTATCPState)
	case 1, 58:
		c.ICMPType, c.ICMPCode, c.ICMPID = t.ICMPType(), t.ICMPCode(), t.ICMPID()
		c.Set(NTAICMPType)
		c.Set(NTAICMPCode)
		c.Set(NTAICMPID)
	case 17, 136, 132, 33:
		c.Orig.SrcPort, c.Orig.DstPort = t.SrcPort, t.DstPort
		c.Set(NTAPort)
	}
	left := es.Conn.Expires - now
	if left < 0 {
		left = 0
	}
	c.Timeout = uint32((left + int64(time.Second) - 1) / int64(time.Second))
	c.Set(NTATimeout)
	c.Mark = es.Mark
	c.Set(NTAMark)
}

// State is what the table can take from a received CT: the original
// tuple, the protocol state (Expires absolute, on the caller's clock), the
// helper and the connection mark (0 without NTA_MARK).
type State struct {
	Orig   flowtable.Tuple
	Conn   statemachine.Conn
	Helper helpers.ID
	Mark   uint32
}

// ToState converts c, received at now (ns), into statewire's types. The
// TCP window data is not in the message (conntrackd does not send it); the
// scales are kept and the rest is learnt from the next packets.
func (c *CT) ToState(now int64) (State, error) {
	var s State
	src, dst := c.Orig.Src.Unmap(), c.Orig.Dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return s, fmt.Errorf("ctsync: conntrack without a usable address pair (%v, %v)", c.Orig.Src, c.Orig.Dst)
	}
	t := &s.Orig
	t.Src, t.Dst = packet.AddrFromNetip(src), packet.AddrFromNetip(dst)
	t.Proto = c.Orig.Proto
	t.L3 = 6
	if src.Is4() {
		t.L3 = 4
	}
	s.Conn.Proto = c.Orig.Proto
	s.Conn.Status = StatusFromKernel(c.Status)
	switch c.Orig.Proto {
	case packet.ProtoTCP:
		if !c.Has(NTATCPState) || !c.Has(NTAPort) {
			return s, fmt.Errorf("%w: TCP conntrack without NTA_TCP_STATE/NTA_PORT", ErrIncomplete)
		}
		if c.TCPState >= uint8(statemachine.NumTCPStates) {
			return s, fmt.Errorf("ctsync: TCP state %d out of range (0..%d)", c.TCPState, statemachine.NumTCPStates-1)
		}
		s.Conn.State = statemachine.TCPState(c.TCPState)
		for d := range 2 {
			if c.WScale[d] > 14 {
				return s, fmt.Errorf("ctsync: window scale %d above 14", c.WScale[d])
			}
			s.Conn.TCP.Peer[d].Scale = c.WScale[d]
		}
		t.SrcPort, t.DstPort = c.Orig.SrcPort, c.Orig.DstPort
	case 1, 58:
		if !c.Has(NTAICMPType) || !c.Has(NTAICMPID) {
			return s, fmt.Errorf("%w: ICMP conntrack without type/id", ErrIncomplete)
		}
		t.SrcPort = c.ICMPID
		t.DstPort = uint16(c.ICMPType)<<8 | uint16(c.ICMPCode)
	case 17, 136, 132, 33:
		if !c.Has(NTAPort) {
			return s, fmt.Errorf("%w: conntrack of protocol %d without NTA_PORT", ErrIncomplete, c.Orig.Proto)
		}
		t.SrcPort, t.DstPort = c.Orig.SrcPort, c.Orig.DstPort
	}
	if c.Has(NTATimeout) {
		s.Conn.Expires = now + int64(c.Timeout)*int64(time.Second)
	}
	if c.Helper != "" {
		if id, ok := helpers.ByName(c.Helper); ok {
			s.Helper = id
		}
	}
	s.Mark = c.Mark
	return s, nil
}
