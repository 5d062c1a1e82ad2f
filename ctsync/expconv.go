package ctsync

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/helpers"
	"github.com/statewire/statewire/packet"
)

// Expectation flags (NF_CT_EXPECT_*, include/uapi/linux/netfilter/
// nf_conntrack_common.h) as NTA_EXP_FLAGS carries them. statewire's helpers
// make none of these.
const (
	ExpectPermanent uint32 = 1 << 0
	ExpectInactive  uint32 = 1 << 1
	ExpectUserspace uint32 = 1 << 2
)

// FillExpFromExpect writes into e (overwritten) the Exp a conntrackd would
// send for the kernel's version of x, whose master's original tuple is
// master, at time now (ns, the table's clock): the master tuple; the
// expected tuple with source 0.0.0.0 (::) and port 0 where any is allowed;
// the mask as ctnetlink dumps it (ctnetlink_exp_dump_mask: source address
// all ones or zero, destination address all ones, the expected protocol,
// source port 0xffff or 0, destination port 0xffff); the seconds left,
// rounded up; flags 0; the class; the helper's name. It allocates nothing.
func FillExpFromExpect(e *Exp, x *flowtable.Expect, master *flowtable.Tuple, now int64) {
	*e = Exp{Master: Tuple{Src: master.Src.Netip(), Dst: master.Dst.Netip(), Proto: master.Proto}}
	switch master.Proto {
	case 6, 17, 132, 33:
		e.Master.SrcPort, e.Master.DstPort = master.SrcPort, master.DstPort
	}
	var zero, ones netip.Addr
	if x.L3 == 4 {
		zero, ones = netip.AddrFrom4([4]byte{}), netip.AddrFrom4([4]byte{255, 255, 255, 255})
	} else {
		zero = netip.AddrFrom16([16]byte{})
		ones = netip.AddrFrom16([16]byte{255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255})
	}
	e.Expect = Tuple{Src: zero, Dst: addrOfL3(x.Dst, x.L3), Proto: x.Proto, SrcPort: x.SrcPort, DstPort: x.DstPort}
	e.Mask = Tuple{Src: zero, Dst: ones, Proto: x.Proto, DstPort: 0xffff}
	if x.SrcMask {
		e.Expect.Src = addrOfL3(x.Src, x.L3)
		e.Mask.Src = ones
	}
	if x.SrcPort != 0 {
		e.Mask.SrcPort = 0xffff
	}
	for i, tu := range [3]*Tuple{&e.Master, &e.Expect, &e.Mask} {
		base := 4 * i
		if tu.Src.Is4() {
			e.Set(base + 0)
		} else {
			e.Set(base + 1)
		}
		e.Set(base + 2)
		switch master.Proto {
		case 6, 17, 132, 33: // exp2msg: the master's protocol decides
			e.Set(base + 3)
		}
	}
	left := x.Expires - now
	if left < 0 {
		left = 0
	}
	e.Timeout = uint32((left + int64(time.Second) - 1) / int64(time.Second))
	e.Set(NTAExpTimeout)
	e.Set(NTAExpFlags)
	e.Class = uint32(x.Class)
	e.Set(NTAExpClass)
	if x.HelperID != 0 {
		e.Helper = helpers.ID(x.HelperID).String()
		e.Set(NTAExpHelperName)
	}
}

// addrOfL3 is a as a 4- or 16-byte address, as l3 says.
func addrOfL3(a packet.Addr, l3 uint8) netip.Addr {
	n := netip.AddrFrom16(a)
	if l3 == 4 {
		return n.Unmap()
	}
	return n
}

// ToExpect converts a received expectation, at now (ns), into what the
// table takes (flowtable.Expect, its Master left for the commit to fill)
// and the original tuple of its master. It refuses what statewire cannot
// expect exactly: a mask other than an exact or an any source address and
// source port and an exact destination, families that differ, a protocol
// without ports. Without a timeout in the message (the peer's
// CommitTimeout) the helper's expectation timeout applies.
func (e *Exp) ToExpect(now int64) (flowtable.Expect, flowtable.Tuple, error) {
	var x flowtable.Expect
	var m flowtable.Tuple
	ms, md := e.Master.Src.Unmap(), e.Master.Dst.Unmap()
	if !ms.IsValid() || !md.IsValid() || ms.Is4() != md.Is4() {
		return x, m, fmt.Errorf("ctsync: expectation's master without a usable address pair (%v, %v)", e.Master.Src, e.Master.Dst)
	}
	m.Src, m.Dst, m.Proto = packet.AddrFromNetip(ms), packet.AddrFromNetip(md), e.Master.Proto
	m.L3 = 6
	if ms.Is4() {
		m.L3 = 4
	}
	switch m.Proto {
	case 6, 17, 132, 33:
		if !e.Has(NTAExpMasterPort) {
			return x, m, fmt.Errorf("%w: expectation's master of protocol %d without NTA_EXP_MASTER_PORT", ErrIncomplete, m.Proto)
		}
		m.SrcPort, m.DstPort = e.Master.SrcPort, e.Master.DstPort
	default:
		return x, m, fmt.Errorf("ctsync: expectation of a protocol %d master: statewire's helpers expect only for TCP and UDP", m.Proto)
	}
	es, ed := e.Expect.Src.Unmap(), e.Expect.Dst.Unmap()
	ks, kd := e.Mask.Src.Unmap(), e.Mask.Dst.Unmap()
	if !es.IsValid() || !ed.IsValid() || es.Is4() != ed.Is4() || !ks.IsValid() || !kd.IsValid() || ks.Is4() != es.Is4() || kd.Is4() != es.Is4() {
		return x, m, fmt.Errorf("ctsync: expected tuple or mask of mixed families (%v %v, mask %v %v)", e.Expect.Src, e.Expect.Dst, e.Mask.Src, e.Mask.Dst)
	}
	switch {
	case !allOnes(kd):
		return x, m, fmt.Errorf("ctsync: expectation mask on the destination %v: statewire expects an exact destination", kd)
	case !allOnes(ks) && !ks.IsUnspecified():
		return x, m, fmt.Errorf("ctsync: expectation source mask %v: statewire expects an exact or any source", ks)
	case e.Mask.DstPort != 0xffff || e.Mask.SrcPort != 0 && e.Mask.SrcPort != 0xffff:
		return x, m, fmt.Errorf("ctsync: expectation port mask %#x/%#x: statewire expects an exact destination port and an exact or any source port", e.Mask.SrcPort, e.Mask.DstPort)
	}
	switch e.Expect.Proto {
	case 6, 17, 132, 33:
	default:
		return x, m, fmt.Errorf("ctsync: expectation of protocol %d: statewire expects TCP, UDP, SCTP or DCCP connections", e.Expect.Proto)
	}
	x.L3 = 6
	if es.Is4() {
		x.L3 = 4
	}
	x.Proto = e.Expect.Proto
	x.Dst, x.DstPort = packet.AddrFromNetip(ed), e.Expect.DstPort
	if allOnes(ks) {
		x.SrcMask, x.Src = true, packet.AddrFromNetip(es)
	}
	if e.Mask.SrcPort == 0xffff {
		x.SrcPort = e.Expect.SrcPort
	}
	if e.Class > 0xff {
		return x, m, fmt.Errorf("ctsync: expectation class %d above 255", e.Class)
	}
	x.Class = uint8(e.Class)
	id, _ := helpers.ByName(e.Helper) // an unknown helper: the master's, at commit
	x.HelperID = uint8(id)
	timeout := int64(e.Timeout) * int64(time.Second)
	if !e.Has(NTAExpTimeout) {
		timeout = id.Policy().Timeout
		if timeout == 0 {
			timeout = helpers.FTPExpectTimeout
		}
	}
	x.Expires = now + timeout
	return x, m, nil
}

func allOnes(a netip.Addr) bool {
	for _, b := range a.AsSlice() {
		if b != 0xff {
			return false
		}
	}
	return true
}
