package helpers

import (
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// The FTP helper (nf_conntrack_ftp.c).
//
// Kernel behaviour reproduced:
//   - only ESTABLISHED / ESTABLISHED_REPLY packets with payload are looked at;
//   - a segment is parsed only if its sequence number is one of the two
//     remembered "just after a newline" numbers of its direction; whatever
//     the outcome (except a drop), a segment whose last byte is '\n'
//     remembers seq+len (update_nl_seq: the new number fills a free slot, or
//     replaces the older of the two if it is after it). So the first segment
//     of each direction is never parsed, and a command split over two
//     segments is parsed only if the first part ended in '\n' (it never
//     does): the second part starts at an unremembered sequence number;
//   - original direction: "PORT" then skip to ' ', six decimal numbers
//     separated by ',' then '\r'; "EPRT" then skip to ' ',
//     <d>1<d>a.b.c.d<d>port<d> (IPv4 connections) or
//     <d>2<d>ipv6<d>port<d> (IPv6 connections, in6_pton syntax), d printable
//     and not a digit, port not 0;
//   - reply direction: "227 " then the first digit, six decimal numbers
//     separated by ',' ended by any other byte (RFC 1123: parentheses are
//     optional); "229 " then skip to '(', <d><d><d>port<d>, the address
//     being the server's own;
//   - keywords match case-insensitively at the very start of the segment.
//     A segment shorter than or as long as a keyword that is a prefix of it
//     ("POR", "227"), a keyword whose skip character never comes, and
//     arguments that do not parse all make the kernel drop the packet
//     (and then it does not update the newline bookkeeping);
//   - numbers are not range-checked: PORT and 227 fields are u32 shifted
//     and OR-ed ("PORT 1,2,3,256,0,80" is address 1.2.4.0), EPRT/EPSV
//     ports wrap at 65536 (a port that wraps to 0 fails to parse);
//   - on an IPv6 connection a PORT/227 address overwrites the first four
//     bytes of the sender's IPv6 address, and only if that leaves it
//     unchanged is the expectation made (for the sender's IPv6 address);
//   - an address other than the sender's creates no expectation but is not
//     dropped (module parameter loose=0);
//   - the expectation is from the peer's address, any port, to the sender's
//     address and the announced port, TCP: PORT/EPRT from the server to the
//     client, 227/229 from the client to the server.

type ftpGetnum uint8

const (
	getRFC959 ftpGetnum = iota
	getRFC1123
	getEPRT
	getEPSV
)

type ftpSearch struct {
	pattern string
	skip    byte // 0: no skipping, the numbers start right after the pattern
	term    byte // 0: any byte ends the numbers
	getnum  ftpGetnum
	reason  DropReason
}

// ftpSearches is the kernel's search[dir][] table.
var ftpSearches = [2][2]ftpSearch{
	statemachine.Original: {
		{pattern: "PORT", skip: ' ', term: '\r', getnum: getRFC959, reason: DropFTPPort},
		{pattern: "EPRT", skip: ' ', term: '\r', getnum: getEPRT, reason: DropFTPEPRT},
	},
	statemachine.Reply: {
		{pattern: "227 ", getnum: getRFC1123, reason: DropFTPPASV},
		{pattern: "229 ", skip: '(', term: ')', getnum: getEPSV, reason: DropFTPEPSV},
	},
}

// ftpCmd is the address and port a command announced (nf_conntrack_man).
type ftpCmd struct {
	addr packet.Addr
	port uint16
	ipv6 bool
}

// setIPv4 stores a 32-bit address where the kernel's cmd.u3.ip lies: the
// last four bytes of our IPv4-mapped form, or the first four of an IPv6
// address (the kernel writes u3.ip, the first word of u3.all, whatever the
// family).
func (c *ftpCmd) setIPv4(ip uint32) {
	o := 12
	if c.ipv6 {
		o = 0
	}
	c.addr[o], c.addr[o+1], c.addr[o+2], c.addr[o+3] = byte(ip>>24), byte(ip>>16), byte(ip>>8), byte(ip)
}

func ftpHelp(st *State, p *packet.Packet, v view, dir statemachine.Dir, established bool, out *[MaxExpectPerPacket]Expectation) (int, bool, DropReason) {
	if !established || p.Proto != packet.ProtoTCP || v.n <= 0 {
		return 0, false, DropNone
	}
	seq := p.TCP.Seq
	endsNL := v.at(v.n-1) == '\n'
	nlSeq := seq + uint32(v.n)

	if !st.findNL(seq, dir) && !st.takePickup(dir) {
		if endsNL {
			st.updateNL(nlSeq, dir)
		}
		return 0, false, DropNone
	}

	cmd := ftpCmd{addr: p.Src, ipv6: p.IPVersion == 6}
	found := 0
	var s *ftpSearch
	for i := range ftpSearches[dir] {
		s = &ftpSearches[dir][i]
		found = findPattern(v, s, &cmd)
		if found != 0 {
			break
		}
	}
	if found < 0 {
		return 0, true, s.reason
	}
	n := 0
	if found > 0 && cmd.addr == p.Src {
		out[0] = Expectation{
			L3:      p.IPVersion,
			Proto:   packet.ProtoTCP,
			Src:     p.Dst,
			Dst:     p.Src,
			DstPort: cmd.port,
			Timeout: FTPExpectTimeout,
			Helper:  IDFTP,
		}
		n = 1
	}
	if endsNL {
		st.updateNL(nlSeq, dir)
	}
	return n, false, DropNone
}

// findNL reports whether seq is a remembered "just after a newline" number
// of direction dir (find_nl_seq).
func (st *State) findNL(seq uint32, dir statemachine.Dir) bool {
	for i := 0; i < int(st.numNL[dir]) && i < 2; i++ {
		if st.seqAftNL[dir][i] == seq {
			return true
		}
	}
	return false
}

// takePickup reports whether direction dir picks up its next segment
// (State.Pickup) and clears that.
func (st *State) takePickup(dir statemachine.Dir) bool {
	on := st.pickup[dir&1]
	st.pickup[dir&1] = false
	return on
}

// updateNL remembers nl as a "just after a newline" number of direction dir
// (update_nl_seq): a free slot takes it; with both slots used it replaces
// the older one, and only if it is after it.
func (st *State) updateNL(nl uint32, dir statemachine.Dir) {
	s := &st.seqAftNL[dir]
	num := int(st.numNL[dir])
	for i := 0; i < num && i < 2; i++ {
		if s[i] == nl {
			return
		}
	}
	if num < 2 {
		s[num] = nl
		st.numNL[dir]++
		return
	}
	oldest := 1
	if seqBefore(s[0], s[1]) {
		oldest = 0
	}
	if seqBefore(s[oldest], nl) {
		s[oldest] = nl
	}
}

func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }

// findPattern is the kernel's find_pattern: 1 for a parsed command, 0 for
// no match, -1 for a keyword that matched but whose arguments did not parse.
func findPattern(v view, s *ftpSearch, cmd *ftpCmd) int {
	dlen, plen := v.n, len(s.pattern)
	if dlen <= plen {
		// Short packet: a prefix of the keyword is "partial".
		if v.hasPrefixFold(0, s.pattern[:dlen]) {
			return -1
		}
		return 0
	}
	if !v.hasPrefixFold(0, s.pattern) {
		return 0
	}
	i := plen
	if s.skip != 0 {
		for v.at(i) != s.skip {
			if i >= dlen-1 {
				return -1
			}
			i++
		}
		i++ // over the skip character
	}
	var numlen int
	switch s.getnum {
	case getRFC959:
		numlen = tryRFC959(v, i, dlen-i, cmd, s.term)
	case getRFC1123:
		numlen = tryRFC1123(v, i, dlen-i, cmd)
	case getEPRT:
		numlen = tryEPRT(v, i, dlen-i, cmd)
	case getEPSV:
		numlen = tryEPSV(v, i, dlen-i, cmd)
	}
	if numlen == 0 {
		return -1
	}
	return 1
}

// tryNumber reads size decimal numbers separated by sep from the dlen bytes
// at off into arr, ended by term (term 0: by any other byte). It returns the
// number of bytes consumed (not counting the terminator) or 0. Values are
// u32 and wrap, as in the kernel.
func tryNumber(v view, off, dlen int, arr *[6]uint32, size int, sep, term byte) int {
	*arr = [6]uint32{}
	i := 0
	for l := 0; l < dlen && i < size; l++ {
		c := v.at(off + l)
		switch {
		case isDigit(c):
			arr[i] = arr[i]*10 + uint32(c-'0')
		case c == sep:
			i++
		default:
			if (c == term || term == 0) && i == size-1 {
				return l
			}
			return 0
		}
	}
	return 0
}

// tryRFC959 parses "h1,h2,h3,h4,p1,p2" (PORT and, via tryRFC1123, 227).
func tryRFC959(v view, off, dlen int, cmd *ftpCmd, term byte) int {
	var a [6]uint32
	length := tryNumber(v, off, dlen, &a, 6, ',', term)
	if length == 0 {
		return 0
	}
	cmd.setIPv4(a[0]<<24 | a[1]<<16 | a[2]<<8 | a[3])
	cmd.port = uint16(a[4]<<8 | a[5])
	return length
}

// tryRFC1123 scans to the first digit, then parses like PORT with any
// terminator.
func tryRFC1123(v view, off, dlen int, cmd *ftpCmd) int {
	i := 0
	for ; i < dlen; i++ {
		if isDigit(v.at(off + i)) {
			break
		}
	}
	if i == dlen {
		return 0
	}
	return tryRFC959(v, off+i, dlen-i, cmd, 0)
}

// getPort reads a decimal port from start up to delim; the port is u16 and
// wraps, and 0 fails. It returns the offset after delim, or 0.
func getPort(v view, off, start, dlen int, delim byte, port *uint16) int {
	var tmp uint16
	for i := start; i < dlen; i++ {
		c := v.at(off + i)
		switch {
		case c == delim:
			if tmp == 0 {
				return 0
			}
			*port = tmp
			return i + 1
		case isDigit(c):
			tmp = tmp*10 + uint16(c-'0')
		default:
			return 0
		}
	}
	return 0
}

// eprtDelim reports whether c can delimit EPRT/EPSV fields: printable ASCII
// other than a digit (the kernel's char is signed, so bytes >= 0x80 are
// negative and fail "< 33").
func eprtDelim(c byte) bool { return c >= 33 && c <= 126 && !isDigit(c) }

// tryEPRT parses <d>1<d>a.b.c.d<d>port<d> or <d>2<d>ipv6<d>port<d>; the
// protocol digit must match the connection's family.
func tryEPRT(v view, off, dlen int, cmd *ftpCmd) int {
	if dlen <= 3 {
		return 0
	}
	delim := v.at(off)
	if !eprtDelim(delim) || v.at(off+2) != delim {
		return 0
	}
	af := v.at(off + 1)
	if (!cmd.ipv6 && af != '1') || (cmd.ipv6 && af != '2') {
		return 0
	}
	var length int
	if af == '1' {
		var a [6]uint32
		length = tryNumber(v, off+3, dlen-3, &a, 4, '.', delim)
		if length != 0 {
			cmd.setIPv4(a[0]<<24 | a[1]<<16 | a[2]<<8 | a[3])
		}
	} else {
		srclen := dlen - 3
		if srclen > 0xffff {
			srclen = 0xffff
		}
		end, ok := in6pton(v, off+3, srclen, int(delim), (*[16]byte)(&cmd.addr))
		if ok {
			length = end - (off + 3)
		}
	}
	if length == 0 {
		return 0
	}
	// Past "|1|", the address and its closing delimiter.
	return getPort(v, off, 3+length+1, dlen, delim, &cmd.port)
}

// tryEPSV parses <d><d><d>port<d>.
func tryEPSV(v view, off, dlen int, cmd *ftpCmd) int {
	if dlen <= 3 {
		return 0
	}
	delim := v.at(off)
	if !eprtDelim(delim) || v.at(off+1) != delim || v.at(off+2) != delim {
		return 0
	}
	return getPort(v, off, 3, dlen, delim, &cmd.port)
}
