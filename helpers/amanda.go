package helpers

import (
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// The Amanda helper (nf_conntrack_amanda.c). The Amanda server sends a UDP
// request to the client's port 10080 (original direction); the client's
// reply names the TCP ports the server is to connect to:
// "... CONNECT DATA 50000 MESG 50001 INDEX 50002 STATE 50003\n".
//
// Kernel behaviour reproduced: reply-direction packets only, any state;
// every one refreshes the master (see MasterTimeout). "CONNECT " is searched
// anywhere in the payload (exact case), then the first '\n' after it; within
// that line "DATA ", "MESG ", "INDEX ", "STATE " are searched in that order,
// each once (its first occurrence); a missing keyword is skipped; the port
// is read from at most 5 bytes after it (decimal, wrapping at 2^16); a port
// of 0 (including no digit at all) stops the whole search. Each port makes
// one expectation: TCP from the original source's address (the Amanda
// server), any port, to the original destination (the client) and the port.
var amandaKeys = [...]string{"DATA ", "MESG ", "INDEX ", "STATE "}

func amandaHelp(p *packet.Packet, v view, dir statemachine.Dir, out *[MaxExpectPerPacket]Expectation) int {
	if dir != statemachine.Reply || p.Proto != packet.ProtoUDP || v.n <= 0 {
		return 0
	}
	start := v.index(0, v.n, "CONNECT ")
	if start < 0 {
		return 0
	}
	start += len("CONNECT ")
	stop := v.index(start, v.n, "\n")
	if stop < 0 {
		return 0
	}
	src, dst, _, _ := origEnds(p, dir)
	n := 0
	for _, key := range amandaKeys {
		off := v.index(start, stop, key)
		if off < 0 {
			continue
		}
		off += len(key)
		l := stop - off
		if l > 5 {
			l = 5
		}
		var port uint16
		for i := 0; i < l && isDigit(v.at(off+i)); i++ {
			port = port*10 + uint16(v.at(off+i)-'0')
		}
		if port == 0 {
			break
		}
		out[n] = Expectation{
			L3:      p.IPVersion,
			Proto:   packet.ProtoTCP,
			Src:     src,
			Dst:     dst,
			DstPort: port,
			Timeout: AmandaExpectTimeout,
			Helper:  IDAmanda,
		}
		n++
	}
	return n
}
