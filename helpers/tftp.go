package helpers

import (
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// The TFTP helper (nf_conntrack_tftp.c): any packet of the connection, in
// either direction and any state (the first, NEW, one included), whose
// first two payload bytes are opcode 1 (RRQ) or 2 (WRQ) creates one
// expectation, built from the connection's reply tuple: UDP from the
// server's address (the original destination), any port, to the client's
// address and the client's own port (the original source port), where the
// server's transfer port will answer.
const (
	tftpOpRRQ = 1
	tftpOpWRQ = 2
)

func tftpHelp(p *packet.Packet, v view, dir statemachine.Dir, out *[MaxExpectPerPacket]Expectation) int {
	if p.Proto != packet.ProtoUDP || v.n < 2 {
		return 0
	}
	op := uint16(v.at(0))<<8 | uint16(v.at(1))
	if op != tftpOpRRQ && op != tftpOpWRQ {
		return 0
	}
	client, server, clientPort, _ := origEnds(p, dir)
	out[0] = Expectation{
		L3:      p.IPVersion,
		Proto:   packet.ProtoUDP,
		Src:     server,
		Dst:     client,
		DstPort: clientPort,
		Timeout: TFTPExpectTimeout,
		Helper:  IDTFTP,
	}
	return 1
}
