package bridge

import (
	"context"
	"encoding/binary"
	"log/slog"
	"strconv"
	"time"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
)

// LOG writes one line per packet that matches a LOG rule, in the kernel's
// format (net/netfilter/nf_log_syslog.c: nf_log_dump_packet_common,
// dump_mac_header, dump_ipv4_packet, dump_ipv6_packet), through the
// structured log (Control.Logger) at the rule's level: the line is the
// message. statewire has no bridge device, so where the kernel bridge
// prints IN=br0 OUT=br0 PHYSIN=port PHYSOUT=port statewire prints the
// ports in both (IN=port OUT=port PHYSIN=port PHYSOUT=port). --log-uid
// prints nothing: a forwarded packet has no local socket (the kernel
// prints UID only for packets of local sockets). Each worker lets at most
// logBurst lines through at once and logRate a second after that (a token
// bucket on the packet clock) and counts the lines it suppressed
// (TargetStats.LogSuppressed); the next line written says how many.
const (
	logRate  = 10 // lines per second per worker, once the burst is spent
	logBurst = 50
)

// tokenBucket is a token bucket on the packet clock, in nanoseconds of
// credit. Owner only.
type tokenBucket struct {
	b          bucket
	suppressed int
}

func (t *tokenBucket) allow(now int64) bool {
	per := int64(time.Second) / logRate
	return t.b.take(now, per, logBurst*per, true)
}

// writeLogs writes the lines of the LOG rules the packet matched
// (pl.tg.logs). Off the fast path: only packets that matched a LOG rule
// come here, and only lines the bucket lets through are formatted.
func (pl *Pipeline) writeLogs(s *Settings, frame []byte, p *packet.Packet, in Port, now int64) {
	hits := &pl.tg.logs
	st := &pl.stats.Targets
	lg := pl.ctl.Logger()
	n := int(hits.N) + int(hits.Over)
	for i := 0; i < n; i++ {
		if lg == nil || i >= int(hits.N) || !pl.tg.logLim.allow(now) {
			st.LogSuppressed++
			pl.tg.logLim.suppressed++
			continue
		}
		spec := s.Rules.Log(hits.Rule[i])
		if spec == nil {
			continue
		}
		ports := s.Rules.Ports()
		pl.tg.line = AppendLogLine(pl.tg.line[:0], spec, ports[in], ports[in.Other()], frame, p)
		var attrs []slog.Attr
		if k := pl.tg.logLim.suppressed; k > 0 {
			attrs = append(attrs, slog.Int("suppressed", k))
			pl.tg.logLim.suppressed = 0
		}
		st.LogLines++
		lg.LogAttrs(context.Background(), logLevel(spec.Level), string(pl.tg.line), attrs...)
	}
	hits.N, hits.Over = 0, 0
}

// logLevel maps a syslog level to slog's.
func logLevel(l uint8) slog.Level {
	switch {
	case l <= 3:
		return slog.LevelError
	case l == 4:
		return slog.LevelWarn
	case l <= 6:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// AppendLogLine appends the kernel's LOG line for frame (parsed as p),
// received on port inName and leaving by outName, without the trailing
// space the kernel leaves.
func AppendLogLine(b []byte, spec *rules.LogSpec, inName, outName string, frame []byte, p *packet.Packet) []byte {
	b = append(b, spec.Prefix...)
	b = append(b, "IN="...)
	b = append(b, inName...)
	b = append(b, " OUT="...)
	b = append(b, outName...)
	b = append(b, " PHYSIN="...)
	b = append(b, inName...)
	b = append(b, " PHYSOUT="...)
	b = append(b, outName...)
	b = append(b, ' ')
	l3 := int(p.L3Off)
	if l3 >= 14 && l3 <= len(frame) {
		b = appendMAC(b, spec.Flags, frame, p)
	}
	if l3 < len(frame) {
		if p.IPVersion == 6 {
			b = dumpIPv6(b, spec.Flags, frame[l3:], true)
		} else {
			b = dumpIPv4(b, spec.Flags, frame[l3:], true)
		}
	}
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return b
}

const hexDigits = "0123456789abcdef"
const hexUpper = "0123456789ABCDEF"

func appendHex(b []byte, c byte, digits string) []byte {
	return append(b, digits[c>>4], digits[c&0xf])
}

func appendMACAddr(b []byte, m []byte) []byte {
	for i, c := range m {
		if i > 0 {
			b = append(b, ':')
		}
		b = appendHex(b, c, hexDigits)
	}
	return b
}

// appendMAC is dump_mac_header for an Ethernet device whose VLAN tag the
// driver took off (as the kernel bridge's veth ports do): MAC= shows
// destination, source and the EtherType after the tags.
func appendMAC(b []byte, flags rules.LogFlags, frame []byte, p *packet.Packet) []byte {
	var et [2]byte
	binary.BigEndian.PutUint16(et[:], p.EtherType)
	if flags&rules.LogMACDecode != 0 {
		b = append(b, "MACSRC="...)
		b = appendMACAddr(b, frame[6:12])
		b = append(b, " MACDST="...)
		b = appendMACAddr(b, frame[0:6])
		b = append(b, ' ')
		if p.VLANTags > 0 && len(frame) >= 16 {
			b = append(b, "VPROTO="...)
			b = appendHex(b, frame[12], hexDigits)
			b = appendHex(b, frame[13], hexDigits)
			b = append(b, " VID="...)
			b = strconv.AppendUint(b, uint64(p.VLAN), 10)
			b = append(b, ' ')
		}
		b = append(b, "MACPROTO="...)
		b = appendHex(b, et[0], hexDigits)
		b = appendHex(b, et[1], hexDigits)
		return append(b, ' ')
	}
	b = append(b, "MAC="...)
	b = appendMACAddr(b, frame[0:12])
	b = append(b, ':')
	b = appendHex(b, et[0], hexDigits)
	b = append(b, ':')
	b = appendHex(b, et[1], hexDigits)
	return append(b, ' ')
}

func appendIPv4(b []byte, a []byte) []byte {
	for i, c := range a {
		if i > 0 {
			b = append(b, '.')
		}
		b = strconv.AppendUint(b, uint64(c), 10)
	}
	return b
}

// appendIPv6 prints an address as the kernel's %pI6: eight groups of four
// hex digits, nothing compressed.
func appendIPv6(b []byte, a []byte) []byte {
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			b = append(b, ':')
		}
		b = appendHex(b, a[i], hexDigits)
		b = appendHex(b, a[i+1], hexDigits)
	}
	return b
}

func appendKV(b []byte, k string, v uint64) []byte {
	b = append(b, k...)
	b = strconv.AppendUint(b, v, 10)
	return append(b, ' ')
}

func appendOpts(b []byte, o []byte) []byte {
	b = append(b, "OPT ("...)
	for _, c := range o {
		b = appendHex(b, c, hexUpper)
	}
	return append(b, ") "...)
}

// dumpIPv4 is dump_ipv4_packet over ip (the IP header on); top is false
// for the packet quoted in an ICMP error (printed once, in brackets).
func dumpIPv4(b []byte, flags rules.LogFlags, ip []byte, top bool) []byte {
	if len(ip) < 20 {
		return append(b, "TRUNCATED"...)
	}
	b = append(b, "SRC="...)
	b = appendIPv4(b, ip[12:16])
	b = append(b, " DST="...)
	b = appendIPv4(b, ip[16:20])
	b = append(b, ' ')
	b = appendKV(b, "LEN=", uint64(binary.BigEndian.Uint16(ip[2:4])))
	b = append(b, "TOS=0x"...)
	b = appendHex(b, ip[1]&0x1e, hexUpper)
	b = append(b, " PREC=0x"...)
	b = appendHex(b, ip[1]&0xe0, hexUpper)
	b = append(b, ' ')
	b = appendKV(b, "TTL=", uint64(ip[8]))
	b = appendKV(b, "ID=", uint64(binary.BigEndian.Uint16(ip[4:6])))
	fo := binary.BigEndian.Uint16(ip[6:8])
	if fo&0x8000 != 0 {
		b = append(b, "CE "...)
	}
	if fo&0x4000 != 0 {
		b = append(b, "DF "...)
	}
	if fo&0x2000 != 0 {
		b = append(b, "MF "...)
	}
	if fo&0x1fff != 0 {
		b = append(b, "FRAG:"...)
		b = strconv.AppendUint(b, uint64(fo&0x1fff), 10)
		b = append(b, ' ')
	}
	ihl := int(ip[0]&0xf) * 4
	if flags&rules.LogIPOpt != 0 && ihl > 20 {
		if len(ip) < ihl {
			return append(b, "TRUNCATED"...)
		}
		b = appendOpts(b, ip[20:ihl])
	}
	if ihl < 20 || ihl > len(ip) {
		ihl = len(ip)
	}
	frag := fo&0x1fff != 0
	l4 := ip[ihl:]
	switch ip[9] {
	case packet.ProtoTCP:
		b = dumpTCP(b, flags, l4, frag)
	case packet.ProtoUDP, 136:
		b = dumpUDP(b, ip[9], l4, frag)
	case packet.ProtoICMP:
		b = append(b, "PROTO=ICMP "...)
		if frag {
			break
		}
		if len(l4) < 8 { // sizeof(struct icmphdr)
			b = appendIncomplete(b, len(l4))
			break
		}
		b = appendKV(b, "TYPE=", uint64(l4[0]))
		b = appendKV(b, "CODE=", uint64(l4[1]))
		need := map4Required(l4[0])
		if need > 0 && len(l4) < need {
			b = appendIncomplete(b, len(l4))
			break
		}
		switch l4[0] {
		case 0, 8:
			b = appendKV(b, "ID=", uint64(binary.BigEndian.Uint16(l4[4:6])))
			b = appendKV(b, "SEQ=", uint64(binary.BigEndian.Uint16(l4[6:8])))
		case 12:
			b = appendKV(b, "PARAMETER=", uint64(l4[4]))
		case 5, 3, 4, 11:
			if l4[0] == 5 {
				b = append(b, "GATEWAY="...)
				b = appendIPv4(b, l4[4:8])
				b = append(b, ' ')
			}
			if top {
				b = append(b, '[')
				b = dumpIPv4(b, flags, l4[8:], false)
				b = append(b, "] "...)
			}
			if l4[0] == 3 && l4[1] == 4 {
				b = appendKV(b, "MTU=", uint64(binary.BigEndian.Uint16(l4[6:8])))
			}
		}
	default:
		b = appendKV(b, "PROTO=", uint64(ip[9]))
	}
	return b
}

// map4Required is dump_ipv4_packet's required_len: the bytes an ICMP
// message of type t needs to be printed.
func map4Required(t uint8) int {
	switch t {
	case 0, 8:
		return 4
	case 3, 4, 5, 11, 12:
		return 8 + 20
	case 13, 14:
		return 20
	case 17, 18:
		return 12
	}
	return 0
}

func appendIncomplete(b []byte, n int) []byte {
	b = append(b, "INCOMPLETE ["...)
	b = strconv.AppendUint(b, uint64(n), 10)
	return append(b, " bytes] "...)
}

// dumpTCP is nf_log_dump_tcp_header.
func dumpTCP(b []byte, flags rules.LogFlags, th []byte, frag bool) []byte {
	b = append(b, "PROTO=TCP "...)
	if frag {
		return b
	}
	if len(th) < 20 {
		return appendIncomplete(b, len(th))
	}
	b = appendKV(b, "SPT=", uint64(binary.BigEndian.Uint16(th[0:2])))
	b = appendKV(b, "DPT=", uint64(binary.BigEndian.Uint16(th[2:4])))
	if flags&rules.LogTCPSeq != 0 {
		b = appendKV(b, "SEQ=", uint64(binary.BigEndian.Uint32(th[4:8])))
		b = appendKV(b, "ACK=", uint64(binary.BigEndian.Uint32(th[8:12])))
	}
	b = appendKV(b, "WINDOW=", uint64(binary.BigEndian.Uint16(th[14:16])))
	b = append(b, "RES=0x"...)
	b = appendHex(b, (th[12]&0x0e)<<2, hexDigits)
	b = append(b, ' ')
	if th[12]&0x01 != 0 {
		b = append(b, "AE "...)
	}
	for _, f := range [...]struct {
		bit  uint8
		name string
	}{{0x80, "CWR "}, {0x40, "ECE "}, {0x20, "URG "}, {0x10, "ACK "}, {0x08, "PSH "}, {0x04, "RST "}, {0x02, "SYN "}, {0x01, "FIN "}} {
		if th[13]&f.bit != 0 {
			b = append(b, f.name...)
		}
	}
	b = appendKV(b, "URGP=", uint64(binary.BigEndian.Uint16(th[18:20])))
	if doff := int(th[12]>>4) * 4; flags&rules.LogTCPOpt != 0 && doff > 20 {
		if len(th) < doff {
			return append(b, "OPT (TRUNCATED)"...)
		}
		b = appendOpts(b, th[20:doff])
	}
	return b
}

// dumpUDP is nf_log_dump_udp_header.
func dumpUDP(b []byte, proto uint8, uh []byte, frag bool) []byte {
	if proto == packet.ProtoUDP {
		b = append(b, "PROTO=UDP "...)
	} else {
		b = append(b, "PROTO=UDPLITE "...)
	}
	if frag {
		return b
	}
	if len(uh) < 8 {
		return appendIncomplete(b, len(uh))
	}
	b = appendKV(b, "SPT=", uint64(binary.BigEndian.Uint16(uh[0:2])))
	b = appendKV(b, "DPT=", uint64(binary.BigEndian.Uint16(uh[2:4])))
	return appendKV(b, "LEN=", uint64(binary.BigEndian.Uint16(uh[4:6])))
}

// dumpIPv6 is dump_ipv6_packet; top is false for a quoted packet.
func dumpIPv6(b []byte, flags rules.LogFlags, ip []byte, top bool) []byte {
	if len(ip) < 40 {
		return append(b, "TRUNCATED"...)
	}
	b = append(b, "SRC="...)
	b = appendIPv6(b, ip[8:24])
	b = append(b, " DST="...)
	b = appendIPv6(b, ip[24:40])
	b = append(b, ' ')
	w := binary.BigEndian.Uint32(ip[0:4])
	b = appendKV(b, "LEN=", uint64(binary.BigEndian.Uint16(ip[4:6]))+40)
	b = appendKV(b, "TC=", uint64(w&0x0ff00000>>20))
	b = appendKV(b, "HOPLIMIT=", uint64(ip[7]))
	b = appendKV(b, "FLOWLBL=", uint64(w&0x000fffff))
	frag := false
	ptr := 40
	cur := ip[6]
	for cur == 0 || cur == 43 || cur == 44 || cur == 60 || cur == 51 || cur == 50 {
		if ptr+8 > len(ip) {
			return append(b, "TRUNCATED"...)
		}
		if flags&rules.LogIPOpt != 0 {
			b = append(b, "OPT ( "...)
		}
		hl := 0
		switch cur {
		case 44:
			b = append(b, "FRAG:"...)
			fo := binary.BigEndian.Uint16(ip[ptr+2 : ptr+4])
			b = strconv.AppendUint(b, uint64(fo&0xfff8), 10)
			b = append(b, ' ')
			if fo&1 != 0 {
				b = append(b, "INCOMPLETE "...)
			}
			b = append(b, "ID:"...)
			for _, c := range ip[ptr+4 : ptr+8] {
				b = appendHex(b, c, hexDigits)
			}
			b = append(b, ' ')
			if fo&0xfff8 != 0 {
				frag = true
			}
			hl = 8
		case 0, 43, 60:
			if frag {
				if flags&rules.LogIPOpt != 0 {
					b = append(b, ')')
				}
				return b
			}
			hl = (int(ip[ptr+1]) + 1) * 8
		case 51:
			if flags&rules.LogIPOpt != 0 {
				b = append(b, "AH "...)
				if frag {
					return append(b, ')')
				}
				b = append(b, "SPI=0x"...)
				b = strconv.AppendUint(b, uint64(binary.BigEndian.Uint32(ip[ptr+4:ptr+8])), 16)
				b = append(b, ' ')
			}
			hl = (int(ip[ptr+1]) + 2) * 4
		case 50:
			if flags&rules.LogIPOpt != 0 {
				b = append(b, "ESP "...)
				if frag {
					return append(b, ')')
				}
				b = append(b, "SPI=0x"...)
				b = strconv.AppendUint(b, uint64(binary.BigEndian.Uint32(ip[ptr:ptr+4])), 16)
				b = append(b, " )"...)
			}
			return b
		}
		if flags&rules.LogIPOpt != 0 {
			b = append(b, ") "...)
		}
		cur = ip[ptr]
		ptr += hl
		if ptr > len(ip) {
			return append(b, "TRUNCATED"...)
		}
	}
	l4 := ip[ptr:]
	switch cur {
	case packet.ProtoTCP:
		b = dumpTCP(b, flags, l4, frag)
	case packet.ProtoUDP, 136:
		b = dumpUDP(b, cur, l4, frag)
	case packet.ProtoICMPv6:
		b = append(b, "PROTO=ICMPv6 "...)
		if frag {
			break
		}
		if len(l4) < 8 {
			b = appendIncomplete(b, len(l4))
			break
		}
		b = appendKV(b, "TYPE=", uint64(l4[0]))
		b = appendKV(b, "CODE=", uint64(l4[1]))
		switch l4[0] {
		case 128, 129:
			b = appendKV(b, "ID=", uint64(binary.BigEndian.Uint16(l4[4:6])))
			b = appendKV(b, "SEQ=", uint64(binary.BigEndian.Uint16(l4[6:8])))
		case 4, 1, 2, 3:
			if l4[0] == 4 {
				b = append(b, "POINTER="...)
				for _, c := range l4[4:8] {
					b = appendHex(b, c, hexDigits)
				}
				b = append(b, ' ')
			}
			if top {
				b = append(b, '[')
				b = dumpIPv6(b, flags, l4[8:], false)
				b = append(b, "] "...)
			}
			if l4[0] == 2 {
				b = appendKV(b, "MTU=", uint64(binary.BigEndian.Uint32(l4[4:8])))
			}
		}
	default:
		b = appendKV(b, "PROTO=", uint64(cur))
	}
	return b
}
