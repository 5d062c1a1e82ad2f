package ctsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Version is CONNTRACKD_PROTOCOL_VERSION (include/network.h).
const Version = 1

// Type is the nethdr type (include/network.h, enum nethdr_type).
type Type uint8

const (
	TypeCTNew  Type = 0  // NET_T_STATE_CT_NEW
	TypeCTUpd  Type = 1  // NET_T_STATE_CT_UPD
	TypeCTDel  Type = 2  // NET_T_STATE_CT_DEL
	TypeExpNew Type = 3  // NET_T_STATE_EXP_NEW
	TypeExpUpd Type = 4  // NET_T_STATE_EXP_UPD
	TypeExpDel Type = 5  // NET_T_STATE_EXP_DEL
	TypeCtl    Type = 10 // NET_T_CTL
)

var typeNames = map[Type]string{
	TypeCTNew: "CT_NEW", TypeCTUpd: "CT_UPD", TypeCTDel: "CT_DEL",
	TypeExpNew: "EXP_NEW", TypeExpUpd: "EXP_UPD", TypeExpDel: "EXP_DEL", TypeCtl: "CTL",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// IsCT reports whether t carries a conntrack (CT_NEW/UPD/DEL).
func (t Type) IsCT() bool { return t <= TypeCTDel }

// IsExp reports whether t carries an expectation (EXP_NEW/UPD/DEL).
func (t Type) IsExp() bool { return t >= TypeExpNew && t <= TypeExpDel }

// Header flags (include/network.h, NET_F_*).
const (
	FlagUnused    uint8 = 1 << 0 // NET_F_UNUSED
	FlagResync    uint8 = 1 << 1 // NET_F_RESYNC
	FlagNack      uint8 = 1 << 2 // NET_F_NACK
	FlagAck       uint8 = 1 << 3 // NET_F_ACK
	FlagAlive     uint8 = 1 << 4 // NET_F_ALIVE
	FlagHello     uint8 = 1 << 5 // NET_F_HELLO
	FlagHelloBack uint8 = 1 << 6 // NET_F_HELLO_BACK
)

// Sizes (include/network.h: NETHDR_SIZ, NETHDR_ACK_SIZ = nethdr_align(sizeof
// struct), aligned to 4 in src/network.c; struct netattr is 4 bytes).
const (
	HeaderLen    = 8
	AckHeaderLen = 16
	attrHdrLen   = 4
)

// align rounds n up to NTA_ALIGNTO (4), as NTA_ALIGN.
func align(n int) int { return (n + 3) &^ 3 }

// Header is a decoded nethdr. For ACK, NACK and RESYNC control messages
// From and To are the nethdr_ack sequence range (HDR_NETWORK2HOST converts
// them only for those three).
type Header struct {
	Version uint8
	Type    Type
	Flags   uint8
	Len     uint16
	Seq     uint32
	From    uint32
	To      uint32
}

// hasRange reports whether h is an ACK, NACK or RESYNC (network.h: IS_ACK,
// IS_NACK, IS_RESYNC), whose header is a nethdr_ack.
func (h *Header) hasRange() bool {
	return h.Type == TypeCtl && h.Flags&(FlagAck|FlagNack|FlagResync) != 0
}

// IsData reports whether h is a data message (network.h IS_DATA: a state
// type and no flags other than HELLO/HELLO_BACK).
func (h *Header) IsData() bool {
	return h.Type <= TypeExpDel && h.Flags&^(FlagHello|FlagHelloBack) == 0
}

// Msg is one decoded message: a header and, for data messages, the
// connection (CT_*) or the expectation (EXP_*) it carries.
type Msg struct {
	Header
	CT  *CT
	Exp *Exp
}

// Errors Decode wraps; every one means "drop the message and count it".
var (
	ErrShort      = errors.New("ctsync: message shorter than its header")
	ErrLength     = errors.New("ctsync: bad message length")
	ErrVersion    = errors.New("ctsync: unsupported protocol version")
	ErrType       = errors.New("ctsync: unknown message type")
	ErrAttr       = errors.New("ctsync: malformed attribute")
	ErrIncomplete = errors.New("ctsync: message lacks a required attribute")
)

// Decode splits a datagram into its messages, as conntrackd's channel
// handler walks a buffer (src/sync-mode.c): one after the other, each
// nethdr.len bytes long. It stops at the first malformed message and
// returns the messages before it with the error.
func Decode(b []byte) ([]Msg, error) {
	var out []Msg
	for len(b) > 0 {
		m, n, err := DecodeMsg(b)
		if err != nil {
			return out, err
		}
		out = append(out, m)
		b = b[n:]
	}
	return out, nil
}

// DecodeMsg decodes the message at the start of b and returns it with its
// length. It checks what conntrackd checks (version, type, length against
// the bytes received, msg2ct/msg2exp's attribute lengths) and never reads
// beyond the message.
func DecodeMsg(b []byte) (Msg, int, error) {
	var m Msg
	if len(b) < HeaderLen {
		return m, 0, fmt.Errorf("%w: %d bytes, want at least %d", ErrShort, len(b), HeaderLen)
	}
	// Byte 0 is the bitfield {type:4, version:4} of a little-endian
	// compiler: version in the high nibble (network.h struct nethdr).
	m.Version = b[0] >> 4
	m.Type = Type(b[0] & 0x0f)
	m.Flags = b[1]
	m.Len = binary.BigEndian.Uint16(b[2:])
	m.Seq = binary.BigEndian.Uint32(b[4:])
	n := int(m.Len)
	if n < HeaderLen || n > len(b) {
		return m, 0, fmt.Errorf("%w: len %d, %d bytes left", ErrLength, n, len(b))
	}
	if m.Version != Version {
		return m, n, fmt.Errorf("%w: %d, want %d", ErrVersion, m.Version, Version)
	}
	body := b[:n]
	switch {
	case m.Type == TypeCtl:
		if m.hasRange() {
			if n < AckHeaderLen {
				return m, n, fmt.Errorf("%w: control message of %d bytes carries no from/to", ErrLength, n)
			}
			m.From = binary.BigEndian.Uint32(body[8:])
			m.To = binary.BigEndian.Uint32(body[12:])
		}
		return m, n, nil
	case m.Type.IsCT():
		ct, err := decodeCT(body[HeaderLen:])
		if err != nil {
			return m, n, err
		}
		m.CT = ct
	case m.Type.IsExp():
		exp, err := decodeExp(body[HeaderLen:])
		if err != nil {
			return m, n, err
		}
		m.Exp = exp
	default:
		return m, n, fmt.Errorf("%w: %d", ErrType, m.Type)
	}
	return m, n, nil
}

// attrSpec is parse.c's per-attribute check: size is the exact nta_len
// (NTA_SIZE(payload)), maxSize an upper bound for variable attributes.
type attrSpec struct{ size, maxSize int }

// walkAttrs runs msg2ct's loop (src/parse.c): while more than a netattr
// header is left, the attribute must fit, be at least a header long, have
// a known number and the size its table entry wants; the next attribute
// starts NTA_ALIGN(nta_len) further.
func walkAttrs(b []byte, specs []attrSpec, fn func(attr uint16, data []byte)) error {
	for len(b) > attrHdrLen {
		l := int(binary.BigEndian.Uint16(b))
		a := binary.BigEndian.Uint16(b[2:])
		switch {
		case l > len(b):
			return fmt.Errorf("%w: attribute %d of %d bytes, %d left", ErrAttr, a, l, len(b))
		case l < attrHdrLen:
			return fmt.Errorf("%w: attribute %d of %d bytes", ErrAttr, a, l)
		case int(a) >= len(specs):
			return fmt.Errorf("%w: unknown attribute %d", ErrAttr, a)
		}
		s := specs[a]
		if s.size != 0 && l != s.size {
			return fmt.Errorf("%w: attribute %d of %d bytes, want %d", ErrAttr, a, l, s.size)
		}
		if s.maxSize != 0 && l > s.maxSize {
			return fmt.Errorf("%w: attribute %d of %d bytes, at most %d", ErrAttr, a, l, s.maxSize)
		}
		fn(a, b[attrHdrLen:l])
		next := align(l)
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return nil
}

// Attribute payload helpers.
func addrs4(d []byte) (netip.Addr, netip.Addr) {
	return netip.AddrFrom4([4]byte(d[0:4])), netip.AddrFrom4([4]byte(d[4:8]))
}

func addrs6(d []byte) (netip.Addr, netip.Addr) {
	return netip.AddrFrom16([16]byte(d[0:16])), netip.AddrFrom16([16]byte(d[16:32]))
}

func ports(d []byte) (uint16, uint16) {
	return binary.BigEndian.Uint16(d), binary.BigEndian.Uint16(d[2:])
}

// cstring returns a NUL-terminated string's bytes before the NUL (all of d
// when there is none).
func cstring(d []byte) string {
	for i, c := range d {
		if c == 0 {
			return string(d[:i])
		}
	}
	return string(d)
}

// appendHeader starts a message as nethdr_set does (src/network.c);
// finish writes its length. The caller numbers messages (FTFW and NOTRACK
// both send a sequence number).
func appendHeader(b []byte, t Type, flags uint8, seq uint32) []byte {
	return append(b, Version<<4|uint8(t)&0x0f, flags, 0, 0,
		byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq))
}

func finish(b []byte, start int) []byte {
	binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
}

// putAttr appends an attribute as put_header/addattr (src/build.c): nta_len
// is the header plus the payload, unpadded; the padding to 4 is zeroed.
func putAttr(b []byte, attr uint16, data ...byte) []byte {
	l := attrHdrLen + len(data)
	b = append(b, byte(l>>8), byte(l), byte(attr>>8), byte(attr))
	b = append(b, data...)
	for i := l; i < align(l); i++ {
		b = append(b, 0)
	}
	return b
}

func be16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }
func be32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// AppendControl appends a control message (type NET_T_CTL) with flags
// (FlagAlive, FlagAck, FlagNack, FlagResync, possibly with FlagHello...).
// ACK, NACK and RESYNC carry the range from..to in a nethdr_ack
// (src/network.c nethdr_set_ack); ALIVE is a bare nethdr (nethdr_set_ctl).
func AppendControl(b []byte, flags uint8, seq, from, to uint32) []byte {
	start := len(b)
	b = appendHeader(b, TypeCtl, flags, seq)
	if flags&(FlagAck|FlagNack|FlagResync) != 0 {
		b = append(b, be32(from)...)
		b = append(b, be32(to)...)
	}
	return finish(b, start)
}
