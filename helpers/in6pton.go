package helpers

// in6pton and in4pton are the kernel's in6_pton/in4_pton (net/core/utils.c),
// which EPRT |2| uses: the accepted syntax (and its oddities: a '\0' or the
// end of the data ends an address like the delimiter does, ':' ends an
// embedded IPv4 tail) must be the kernel's, not net/netip's.

const (
	in6XDigit    = 0x00010000
	in6Digit     = 0x00020000
	in6ColonMask = 0x00700000
	in6Colon1    = 0x00100000 // single ':' requested
	in6Colon2    = 0x00200000 // second ':' requested
	in6Colon12   = 0x00400000 // '::' requested
	in6Dot       = 0x00800000
	in6Delim     = 0x10000000
	in6Null      = 0x20000000 // first/tail
	in6Unknown   = 0x40000000
)

func xdigit2bin(c byte, delim int) int {
	if int(c) == delim || c == 0 {
		return in6Delim
	}
	switch {
	case c == ':':
		return in6ColonMask
	case c == '.':
		return in6Dot
	case c >= '0' && c <= '9':
		return int(c-'0') | in6XDigit | in6Digit
	case c >= 'a' && c <= 'f':
		return int(c-'a'+10) | in6XDigit
	case c >= 'A' && c <= 'F':
		return int(c-'A'+10) | in6XDigit
	}
	if delim == -1 {
		return in6Delim
	}
	return in6Unknown
}

// srcByte is the kernel's "srclen > 0 ? *s : '\0'".
func srcByte(v view, s, srclen int) byte {
	if srclen > 0 {
		return v.at(s)
	}
	return 0
}

// in4pton parses a dotted quad at s (srclen bytes) into dst[0:4]; it returns
// the offset where parsing stopped (the delimiter) and success.
func in4pton(v view, s, srclen, delim int, dst []byte) (int, bool) {
	var dbuf [4]byte
	d, i, w := 0, 0, 0
	for {
		c := xdigit2bin(srcByte(v, s, srclen), delim)
		if c&(in6Digit|in6Dot|in6Delim|in6ColonMask) == 0 {
			return s, false
		}
		if c&(in6Dot|in6Delim|in6ColonMask) != 0 {
			if w == 0 || d >= len(dbuf) {
				return s, false
			}
			dbuf[d] = byte(w)
			d++
			w = 0
			i++
			if c&(in6Delim|in6ColonMask) != 0 {
				if i != 4 {
					return s, false
				}
				break
			}
		} else {
			// The kernel adds the flag bits too; they sit above bit 16
			// and never reach the low 16 bits it tests and stores.
			w = w*10 + c
			if w&0xffff > 255 {
				return s, false
			}
		}
		if i >= 4 {
			return s, false
		}
		s++
		srclen--
	}
	if len(dst) < 4 {
		return s, false
	}
	copy(dst, dbuf[:])
	return s, true
}

// in6pton parses an IPv6 address at src (srclen bytes) ended by delim into
// *dst; it returns the offset of the delimiter and success. *dst is written
// only on success.
func in6pton(v view, src, srclen, delim int, dst *[16]byte) (int, bool) {
	var dbuf [16]byte
	s := src
	tok := -1
	d, dc := 0, -1
	state := in6Colon12 | in6XDigit | in6Null
	w := 0
	for {
		c := xdigit2bin(srcByte(v, s, srclen), delim)
		if c&state == 0 {
			return s, false
		}
		if c&(in6Delim|in6ColonMask) != 0 {
			// Process one 16-bit word.
			if state&in6Null == 0 {
				if d+2 > len(dbuf) {
					return s, false // unreachable: the state machine forbids it
				}
				dbuf[d] = byte(w >> 8)
				dbuf[d+1] = byte(w)
				d += 2
			}
			w = 0
			if c&in6Delim != 0 {
				break // the last word
			}
			switch state & in6ColonMask {
			case in6Colon2:
				dc = d
				state = in6XDigit | in6Delim
				if dc >= len(dbuf) {
					state |= in6Null
				}
			case in6Colon1 | in6Colon12:
				state = in6XDigit | in6Colon2
			case in6Colon1:
				state = in6XDigit
			case in6Colon12:
				state = in6Colon2
			default:
				state = 0
			}
			tok = s + 1
		} else {
			if c&in6Dot != 0 {
				from := s
				if tok >= 0 {
					from = tok
				}
				if d+4 > len(dbuf) {
					return s, false
				}
				end, ok := in4pton(v, from, srclen+(s-from), delim, dbuf[d:d+4])
				s = end
				if !ok {
					return s, false
				}
				d += 4
				break
			}
			w = w<<4 | c&0xff
			state = in6Colon1 | in6Delim
			if w&0xf000 == 0 {
				state |= in6XDigit
			}
			if dc < 0 && d+2 < len(dbuf) {
				state |= in6Colon12
				state &^= in6Delim
			}
			if d+2 >= len(dbuf) {
				state &^= in6Colon1 | in6Colon12
			}
		}
		// cont:
		if (dc >= 0 && d+4 < len(dbuf)) || d+4 == len(dbuf) {
			state |= in6Dot
		}
		if d >= len(dbuf) {
			state &^= in6XDigit | in6ColonMask
		}
		s++
		srclen--
	}

	var out [16]byte
	i := 15
	d--
	if dc >= 0 {
		for d >= dc && i >= 0 && d >= 0 {
			out[i] = dbuf[d]
			i--
			d--
		}
		for i >= dc && i >= 0 {
			out[i] = 0
			i--
		}
		for i >= 0 && d >= 0 {
			out[i] = dbuf[d]
			i--
			d--
		}
	} else {
		out = dbuf
	}
	*dst = out
	return s, true
}
