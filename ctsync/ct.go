package ctsync

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Conntrack attributes (include/network.h, enum nta_attr).
const (
	NTAIPv4         = 0  // struct nfct_attr_grp_ipv4: src, dst (network order)
	NTAIPv6         = 1  // struct nfct_attr_grp_ipv6
	NTAL4Proto      = 2  // uint8
	NTAPort         = 3  // struct nfct_attr_grp_port: sport, dport (network order)
	NTATCPState     = 4  // uint8
	NTAStatus       = 5  // uint32
	NTATimeout      = 6  // uint32, seconds
	NTAMark         = 7  // uint32
	NTAMasterIPv4   = 8  // struct nfct_attr_grp_ipv4
	NTAMasterIPv6   = 9  // struct nfct_attr_grp_ipv6
	NTAMasterL4Prot = 10 // uint8
	NTAMasterPort   = 11 // struct nfct_attr_grp_port
	NTASNATIPv4     = 12 // uint32
	NTADNATIPv4     = 13 // uint32
	NTASPATPort     = 14 // uint16
	NTADPATPort     = 15 // uint16
	NTANATSeqAdj    = 16 // struct nta_attr_natseqadj (6 x uint32)
	NTASCTPState    = 17 // uint8
	NTASCTPVtagOrig = 18 // uint32
	NTASCTPVtagRepl = 19 // uint32
	NTADCCPState    = 20 // uint8
	NTADCCPRole     = 21 // uint8
	NTAICMPType     = 22 // uint8
	NTAICMPCode     = 23 // uint8
	NTAICMPID       = 24 // uint16 (see ICMPIDWire)
	NTATCPWScaleOrg = 25 // uint8
	NTATCPWScaleRpl = 26 // uint8
	NTAHelperName   = 27 // NUL-terminated string
	NTALabels       = 28 // uint32 array
	NTASNATIPv6     = 29 // 4 x uint32
	NTADNATIPv6     = 30 // 4 x uint32
	NTASynproxy     = 31 // struct nta_attr_synproxy (3 x uint32)
	NTAMax          = 32
)

// nfctHelperNameMax is NFCT_HELPER_NAME_MAX (libnetfilter_conntrack).
const nfctHelperNameMax = 16

// ctSpecs is parse.c's table h[NTA_MAX]: .size = NTA_SIZE(payload) or
// .max_size for the variable ones.
var ctSpecs = func() []attrSpec {
	s := make([]attrSpec, NTAMax)
	fixed := map[int]int{
		NTAIPv4: 8, NTAIPv6: 32, NTAL4Proto: 1, NTAPort: 4, NTATCPState: 1,
		NTAStatus: 4, NTATimeout: 4, NTAMark: 4, NTAMasterIPv4: 8,
		NTAMasterIPv6: 32, NTAMasterL4Prot: 1, NTAMasterPort: 4,
		NTASNATIPv4: 4, NTADNATIPv4: 4, NTASPATPort: 2, NTADPATPort: 2,
		NTANATSeqAdj: 24, NTASCTPState: 1, NTASCTPVtagOrig: 4, NTASCTPVtagRepl: 4,
		NTADCCPState: 1, NTADCCPRole: 1, NTAICMPType: 1, NTAICMPCode: 1,
		NTAICMPID: 2, NTATCPWScaleOrg: 1, NTATCPWScaleRpl: 1,
		NTASNATIPv6: 16, NTADNATIPv6: 16, NTASynproxy: 12,
	}
	for a, n := range fixed {
		s[a].size = attrHdrLen + n
	}
	s[NTAHelperName].maxSize = nfctHelperNameMax
	s[NTALabels].maxSize = attrHdrLen + 4096/4 // NTA_SIZE(NTA_LABELS_MAX_SIZE)
	return s
}()

// Tuple is one direction of a connection as conntrackd sends it: the
// original tuple (or the master's).
type Tuple struct {
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16 // TCP, UDP, SCTP, DCCP
}

// CT is a connection in a CT_NEW/UPD/DEL message. Present records which
// attributes the message had (bit i for NTA attribute i): conntrackd sends
// only what is set (src/build.c ct2msg).
type CT struct {
	Orig     Tuple
	Status   uint32 // kernel IPS_* bits
	TCPState uint8  // kernel enum tcp_conntrack
	// WScale is the window scale of the original and the reply direction
	// (NTA_TCP_WSCALE_ORIG/REPL, sent with TCPWindowTracking on).
	WScale   [2]uint8
	ICMPType uint8
	ICMPCode uint8
	ICMPID   uint16 // host value; see ICMPIDWire
	Timeout  uint32 // seconds left
	Mark     uint32
	Master   Tuple // NTA_MASTER_*: the connection this one is RELATED to
	Helper   string
	// Synproxy is struct nta_attr_synproxy {its, isn, tsoff}: conntrackd
	// 1.4.7 sends it whenever the kernel reports the synproxy extension
	// (zeros for a connection synproxy did not handle).
	Synproxy [3]uint32
	Present  uint64
}

// Has reports whether attribute a was present (decoded) or is to be sent
// (encoded).
func (c *CT) Has(a int) bool { return a >= 0 && a < 64 && c.Present&(1<<a) != 0 }

// Set marks attribute a present.
func (c *CT) Set(a int) { c.Present |= 1 << a }

// ICMPIDWire says how NTA_ICMP_ID is laid out: conntrackd's ct_build_u16
// applies htons to libnetfilter_conntrack's ATTR_ICMP_ID, which is already
// in network order, so an x86 conntrackd sends the identifier
// little-endian and parses it back with ntohs the same way. We speak to
// x86 peers.
var ICMPIDWire = binary.LittleEndian

func decodeCT(b []byte) (*CT, error) {
	c := &CT{}
	err := walkAttrs(b, ctSpecs, func(a uint16, d []byte) {
		c.Set(int(a))
		switch a {
		case NTAIPv4:
			c.Orig.Src, c.Orig.Dst = addrs4(d)
		case NTAIPv6:
			c.Orig.Src, c.Orig.Dst = addrs6(d)
		case NTAL4Proto:
			c.Orig.Proto = d[0]
		case NTAPort:
			c.Orig.SrcPort, c.Orig.DstPort = ports(d)
		case NTATCPState:
			c.TCPState = d[0]
		case NTAStatus:
			c.Status = binary.BigEndian.Uint32(d)
		case NTATimeout:
			c.Timeout = binary.BigEndian.Uint32(d)
		case NTAMark:
			c.Mark = binary.BigEndian.Uint32(d)
		case NTAMasterIPv4:
			c.Master.Src, c.Master.Dst = addrs4(d)
		case NTAMasterIPv6:
			c.Master.Src, c.Master.Dst = addrs6(d)
		case NTAMasterL4Prot:
			c.Master.Proto = d[0]
		case NTAMasterPort:
			c.Master.SrcPort, c.Master.DstPort = ports(d)
		case NTAICMPType:
			c.ICMPType = d[0]
		case NTAICMPCode:
			c.ICMPCode = d[0]
		case NTAICMPID:
			c.ICMPID = ICMPIDWire.Uint16(d)
		case NTATCPWScaleOrg:
			c.WScale[0] = d[0]
		case NTATCPWScaleRpl:
			c.WScale[1] = d[0]
		case NTAHelperName:
			c.Helper = cstring(d)
		case NTASynproxy:
			for i := range c.Synproxy {
				c.Synproxy[i] = binary.BigEndian.Uint32(d[4*i:])
			}
		}
	})
	if err != nil {
		return nil, err
	}
	// conntrackd would hand a tuple-less object to its cache; we refuse it.
	if !c.Has(NTAIPv4) && !c.Has(NTAIPv6) || !c.Has(NTAL4Proto) {
		return nil, fmt.Errorf("%w: a conntrack needs NTA_IPV4 or NTA_IPV6 and NTA_L4PROTO", ErrIncomplete)
	}
	return c, nil
}

// Encoding options: what conntrackd's configuration decides in ct2msg.
type Options struct {
	// TCPWindowTracking sends the window scales (Sync { TCPWindowTracking on }).
	TCPWindowTracking bool
	// CommitTimeout leaves the timeout out (General { CommitTimeout }).
	CommitTimeout bool
}

// AppendCT appends a CT_NEW, CT_UPD or CT_DEL message for c (h gives
// the type, the flags — FTFW sets HELLO until the peer answers — and the
// sequence number; Version and Len are ignored), with the
// attributes ct2msg (src/build.c) writes, in its order: address group,
// status, L4 protocol, the protocol's attributes, timeout, mark, master,
// helper name. Attributes c does not mark present are left out, except
// the tuple and status, which ct2msg always writes.
func AppendCT(b []byte, h Header, c *CT, o Options) ([]byte, error) {
	if !h.Type.IsCT() || !h.IsData() {
		return b, fmt.Errorf("ctsync: AppendCT with message type %v flags %#x; use CT_NEW, CT_UPD or CT_DEL with no flags but HELLO/HELLO_BACK", h.Type, h.Flags)
	}
	if !c.Orig.Src.IsValid() || c.Orig.Src.Is4() != c.Orig.Dst.Is4() {
		return b, fmt.Errorf("ctsync: tuple %v -> %v is not two addresses of one family", c.Orig.Src, c.Orig.Dst)
	}
	if len(c.Helper) > nfctHelperNameMax-attrHdrLen-1 {
		return b, fmt.Errorf("ctsync: helper name %q longer than conntrackd accepts (%d bytes)", c.Helper, nfctHelperNameMax-attrHdrLen-1)
	}
	start := len(b)
	b = appendHeader(b, h.Type, h.Flags, h.Seq)
	b = appendAddrs(b, NTAIPv4, NTAIPv6, c.Orig)
	b = putAttr(b, NTAStatus, be32(c.Status)...)
	b = putAttr(b, NTAL4Proto, c.Orig.Proto)
	switch c.Orig.Proto {
	case 6: // build_l4proto_tcp: only with a TCP state
		if c.Has(NTATCPState) {
			b = putPorts(b, NTAPort, c.Orig)
			b = putAttr(b, NTATCPState, c.TCPState)
			if o.TCPWindowTracking {
				b = putAttr(b, NTATCPWScaleOrg, c.WScale[0])
				b = putAttr(b, NTATCPWScaleRpl, c.WScale[1])
			}
		}
	case 17, 136, 132, 33: // build_l4proto_udp (UDP-Lite too); SCTP/DCCP states are not modelled: ports only
		b = putPorts(b, NTAPort, c.Orig)
	case 1, 58: // build_l4proto_icmp
		b = putAttr(b, NTAICMPType, c.ICMPType)
		b = putAttr(b, NTAICMPCode, c.ICMPCode)
		var id [2]byte
		ICMPIDWire.PutUint16(id[:], c.ICMPID)
		b = putAttr(b, NTAICMPID, id[:]...)
	}
	if !o.CommitTimeout && c.Has(NTATimeout) {
		b = putAttr(b, NTATimeout, be32(c.Timeout)...)
	}
	if c.Has(NTAMark) {
		b = putAttr(b, NTAMark, be32(c.Mark)...)
	}
	if c.Master.Src.IsValid() {
		b = appendAddrs(b, NTAMasterIPv4, NTAMasterIPv6, c.Master)
		b = putAttr(b, NTAMasterL4Prot, c.Master.Proto)
		if c.Master.SrcPort != 0 || c.Master.DstPort != 0 {
			b = putPorts(b, NTAMasterPort, c.Master)
		}
	}
	if c.Helper != "" {
		b = putAttr(b, NTAHelperName, append([]byte(c.Helper), 0)...)
	}
	// Labels (NTA_LABELS) would come here; statewire has none.
	if c.Has(NTASynproxy) {
		var d []byte
		for _, v := range c.Synproxy {
			d = append(d, be32(v)...)
		}
		b = putAttr(b, NTASynproxy, d...)
	}
	return finish(b, start), nil
}

// appendAddrs and portBytes build their payloads in arrays that stay on
// the stack (putAttr only copies), so encoding allocates nothing beyond
// the growth of b: Link.SendCT runs once per connection event.
func appendAddrs(b []byte, a4, a6 uint16, t Tuple) []byte {
	var d [32]byte
	if t.Src.Is4() {
		s, dst := t.Src.As4(), t.Dst.As4()
		copy(d[:4], s[:])
		copy(d[4:8], dst[:])
		return putAttr(b, a4, d[:8]...)
	}
	s, dst := t.Src.As16(), t.Dst.As16()
	copy(d[:16], s[:])
	copy(d[16:], dst[:])
	return putAttr(b, a6, d[:]...)
}

func portBytes(t Tuple) [4]byte {
	return [4]byte{byte(t.SrcPort >> 8), byte(t.SrcPort), byte(t.DstPort >> 8), byte(t.DstPort)}
}

func putPorts(b []byte, attr uint16, t Tuple) []byte {
	p := portBytes(t)
	return putAttr(b, attr, p[:]...)
}
