package helpers_test

import (
	"fmt"
	"net/netip"

	"github.com/statewire/statewire/helpers"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// An FTP client announces its data port with PORT; the helper expects the
// server to connect to it from any port.
func ExampleInspect() {
	client := netip.MustParseAddr("::ffff:10.0.0.1").As16()
	server := netip.MustParseAddr("::ffff:10.0.0.2").As16()
	var st helpers.State // lives in the flow entry
	var out [helpers.MaxExpectPerPacket]helpers.Expectation

	send := func(dir statemachine.Dir, seq uint32, msg string) {
		p := packet.Packet{IPVersion: 4, Proto: packet.ProtoTCP, Src: client, Dst: server,
			SrcPort: 40000, DstPort: 21, PayloadLen: uint32(len(msg))}
		if dir == statemachine.Reply {
			p.Src, p.Dst, p.SrcPort, p.DstPort = server, client, 21, 40000
		}
		p.TCP.Seq = seq
		n, drop, _ := helpers.Inspect(helpers.IDFTP, &st, &p, []byte(msg), dir, true, &out)
		for _, e := range out[:n] {
			fmt.Printf("expect tcp from %v to %v:%d for %ds\n",
				netip.AddrFrom16(e.Src).Unmap(), netip.AddrFrom16(e.Dst).Unmap(), e.DstPort, e.Timeout/1e9)
		}
		if drop {
			fmt.Println("drop")
		}
	}
	send(statemachine.Reply, 100, "220 ready\r\n")
	send(statemachine.Original, 1, "USER ftp\r\n") // the first line of a direction only teaches where lines start
	send(statemachine.Original, 11, "PORT 10,0,0,1,4,1\r\n")
	// Output: expect tcp from 10.0.0.2 to 10.0.0.1:1025 for 300s
}
