package helpers

import (
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// The IRC DCC helper (nf_conntrack_irc.c, with the 2022 "tighten matching"
// change). Kernel behaviour reproduced:
//   - IPv4 only (the kernel registers irc for AF_INET only), original
//     direction (client to server), ESTABLISHED, with payload; only the
//     first 4095 payload bytes are searched;
//   - leading ' ', '\r', '\n' are skipped; if more than 10 bytes remain they
//     must start with "PRIVMSG " (any case), else nothing is looked at;
//   - then the first " :" is searched; the bytes after it must be "\1DCC "
//     (exact case) or the packet is done; then one of "SEND ", "CHAT ",
//     "MOVE ", "TSEND ", "SCHAT " (exact case; after a failed parse the
//     next kind is tried from the advanced position, as the kernel does);
//   - the argument is a token up to the first space (no quote handling: a
//     quoted file name with spaces makes the address fail), then, provided
//     a '\n' follows within the data, the address as a decimal number
//     (wrapping at 2^32), blanks, the port as a decimal number (wrapping at
//     2^16);
//   - an address other than the client's, or port 0, is ignored ("Forged
//     DCC command") and the search for " :" goes on; the first good offer
//     creates the expectation and ends the packet: at most one per packet;
//   - the expectation: TCP from any address, any port, to the client's
//     address and the announced port.
//
// Deviation: the kernel's newline check reads one byte past the data
// (tmp <= data_end; fixed upstream in 2026); statewire stops at the end.

const ircMaxSearch = 4095

var dccProtos = [...]string{"SEND ", "CHAT ", "MOVE ", "TSEND ", "SCHAT "}

func ircHelp(p *packet.Packet, v view, dir statemachine.Dir, established bool, out *[MaxExpectPerPacket]Expectation) int {
	if dir != statemachine.Original || !established || p.IPVersion != 4 || p.Proto != packet.ProtoTCP || v.n <= 0 {
		return 0
	}
	limit := v.n
	if limit > ircMaxSearch {
		limit = ircMaxSearch
	}
	data := 0
	for data < limit-10 {
		c := v.at(data)
		if c != ' ' && c != '\r' && c != '\n' {
			break
		}
		data++
	}
	if data < limit-10 {
		if !v.hasPrefixFold(data, "PRIVMSG ") {
			return 0
		}
		data += 8
	}
	client := uint32(p.Src[12])<<24 | uint32(p.Src[13])<<16 | uint32(p.Src[14])<<8 | uint32(p.Src[15])

	// strlen(" :\1DCC SENT t AAAAAAAA P\1\n") = 26.
	for data < limit-26 {
		if v.at(data) != ' ' || v.at(data+1) != ':' {
			data++
			continue
		}
		data += 2
		if !v.hasPrefix(data, "\x01DCC ") {
			return 0
		}
		data += 5
		for _, proto := range dccProtos {
			if !v.hasPrefix(data, proto) {
				continue
			}
			data += len(proto)
			ip, port, ok := parseDCC(v, data, limit)
			if !ok || ip != client || port == 0 {
				continue
			}
			out[0] = Expectation{
				L3:      4,
				Proto:   packet.ProtoTCP,
				SrcAny:  true,
				Dst:     p.Src,
				DstPort: port,
				Timeout: IRCExpectTimeout,
				Helper:  IDIRC,
			}
			return 1
		}
	}
	return 0
}

// parseDCC reads "<token> <ip> <port>" starting at data; end is one past
// the searched data (parse_dcc).
func parseDCC(v view, data, end int) (ip uint32, port uint16, ok bool) {
	// Skip the token and its space; at least 12 bytes ("AAAAAAAA P\1\n")
	// must remain.
	for {
		c := v.at(data)
		data++
		if c == ' ' {
			break
		}
		if data > end-12 {
			return 0, 0, false
		}
	}
	// A '\n' must lie ahead within the data, so that the number parsing
	// below stops inside it.
	tmp := data
	for tmp < end && v.at(tmp) != '\n' {
		tmp++
	}
	if tmp >= end {
		return 0, 0, false
	}
	for ; isDigit(v.at(data)); data++ {
		ip = ip*10 + uint32(v.at(data)-'0')
	}
	for v.at(data) == ' ' {
		if data >= end {
			return 0, 0, false
		}
		data++
	}
	for ; isDigit(v.at(data)); data++ {
		port = port*10 + uint16(v.at(data)-'0')
	}
	return ip, port, true
}
