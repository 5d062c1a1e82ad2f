package rules_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// A stateful bridge: port A (ethA) may open SSH to the servers, replies and
// related traffic pass, everything else is dropped by the FORWARD policy.
func Example() {
	const v4 = `*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 21 -j CT --helper ftp
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 22 -m physdev --physdev-in ethA -m conntrack --ctstate NEW -m comment --comment "ssh from A" -j ACCEPT
COMMIT
`
	var l rules.Loader
	if err := l.Load("v4.rules", strings.NewReader(v4), rules.FamilyIPv4); err != nil {
		fmt.Println(err)
		return
	}
	rs, err := l.Compile([2]string{"ethA", "ethB"})
	if err != nil {
		fmt.Println(err)
		return
	}
	syn := &packet.Packet{
		IPVersion: 4, Proto: packet.ProtoTCP,
		Src: packet.AddrFrom4([4]byte{10, 0, 0, 1}), Dst: packet.AddrFrom4([4]byte{10, 0, 1, 1}),
		SrcPort: 40000, DstPort: 22,
	}
	const portA, portB = 0, 1
	v, cacheable := rs.Filter(syn, statemachine.StateNew, portA)
	fmt.Println(v.Action, cacheable, rs.RuleText(v.Rule))
	v, _ = rs.Filter(syn, statemachine.StateNew, portB)
	fmt.Println(v.Action, rs.RuleText(v.Rule))

	ftp := *syn
	ftp.DstPort = 21
	fmt.Println(rs.Raw(&ftp, portA).Helper)

	rs.Save(os.Stdout, rules.FamilyIPv4)
	// Output:
	// ACCEPT true v4.rules:11: -A FORWARD -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m physdev --physdev-in ethA -m comment --comment "ssh from A" -j ACCEPT
	// DROP policy
	// ftp
	// *filter
	// :INPUT ACCEPT [0:0]
	// :FORWARD DROP [0:0]
	// :OUTPUT ACCEPT [0:0]
	// -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
	// -A FORWARD -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m physdev --physdev-in ethA -m comment --comment "ssh from A" -j ACCEPT
	// COMMIT
	// *raw
	// :PREROUTING ACCEPT [0:0]
	// :OUTPUT ACCEPT [0:0]
	// -A PREROUTING -p tcp -m tcp --dport 21 -j CT --helper ftp
	// COMMIT
}
