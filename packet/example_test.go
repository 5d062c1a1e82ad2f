package packet_test

import (
	"fmt"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

func ExampleParse() {
	frame := pt.TCP4("198.18.0.1", "198.19.0.1", 40000, 80, pt.TCPFields{
		Flags: packet.TCPSyn, Seq: 1, Window: 64240, MSS: 1460, HasWScale: true, WScale: 7,
	})
	var p packet.Packet // reuse one per worker
	r := packet.Parse(frame, 0, packet.Options{VerifyChecksum: true}, &p)
	fmt.Println(r, p.Src, p.SrcPort, p.Dst, p.DstPort, p.TCP.MSS, p.TCP.WScale, p.ChecksumOK)
	// Output: ok 198.18.0.1 40000 198.19.0.1 80 1460 7 true
}
