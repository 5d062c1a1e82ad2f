package rules

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/statewire/statewire/packet"
)

// FuzzLoad: no input panics Load, Compile, Save, Filter, FilterCtx or Raw; every error
// is a *ParseError; and whatever loads saves to text that loads again and
// saves identically.
func FuzzLoad(f *testing.F) {
	for _, p := range []string{"testdata/bridge.rules", "testdata/bridge6.rules"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(string(b), uint8(0))
		}
	}
	f.Add(statefulV4, uint8(0))
	f.Add(wrap("filter", `-A FORWARD -p tcp -m multiport --dports 1,2:3 -m comment --comment "x \"y\"" -j ACCEPT`), uint8(2))
	f.Add(wrap("raw", "-A PREROUTING -p udp --dport 69 -j CT --helper tftp"), uint8(1))
	f.Add(wrap("filter", "-A FORWARD -s 2001:db8::/32 -p ipv6-icmp --icmpv6-type 1/4 -j DROP"), uint8(1))
	f.Add(wrap("filter", "[1:2] -A FORWARD ! -i eth+ -m physdev ! --physdev-is-bridged -j user"), uint8(2))
	f.Add(wrap("filter", "-A FORWARD -m iprange ! --src-range 10.0.0.1-10.0.0.9 --dst-range 10.1.0.0-10.1.0.255 -m mac ! --mac-source 0a:00:00:00:00:01 -m length --length 0:100 -m pkttype ! --pkt-type broadcast -m tos --tos 0x10/0x3f -m dscp ! --dscp 0x2e -m ttl ! --ttl-eq 64 -j DROP"), uint8(0))
	f.Add(wrap("filter", "-A FORWARD -m iprange --src-range 2001:db8::1-2001:db8::9 -m hl --hl-lt 5 -m dscp --dscp-class EF -j DROP"), uint8(1))
	f.Add(wrap("filter", "-A FORWARD -m set ! --match-set r-net src,dst --return-nomatch ! --update-counters -m set --match-set r-svc dst,dst -j DROP"), uint8(2))
	f.Add(wrap("filter", "-A FORWARD -m set --match-set r-v6 src -j DROP"), uint8(1))
	f.Add(wrap("filter", "-A FORWARD -p udp -m limit --limit 3/min --limit-burst 2 -m udp --dport 5 -m mark ! --mark 0x1/0x3 -m connmark --mark 2 -j CONNMARK --save-mark --nfmask 0xff --ctmask 0xf\n-A FORWARD -j MARK --set-xmark 0x1/0x3"), uint8(0))
	f.Add(wrap("filter", "-A FORWARD -m conntrack --ctstate NEW --ctproto 6 --ctorigsrc 10.1.2.3/8 ! --ctrepldst 9.9.9.9/24 --ctorigsrcport 10:20 --ctstatus SEEN_REPLY,ASSURED --ctexpire 5:9 --ctdir REPLY -m addrtype ! --dst-type BROADCAST,MULTICAST -j DROP"), uint8(0))
	f.Add(wrap("filter", "-A FORWARD -p tcp --dport 22 -j LOG --log-prefix \"ssh \" --log-level info --log-tcp-sequence --log-macdecode\n-A FORWARD -p tcp -j REJECT --reject-with tcp-reset\n-A user -j REJECT --reject-with port"), uint8(2))
	f.Add(wrap("filter", "-A FORWARD -p udp -j REJECT --reject-with icmp6-adm-prohibited\n-A FORWARD -j REJECT --reject-with admin-prohib"), uint8(2))
	f.Add(wrap("filter", "-A FORWARD -p tcp --syn -m connlimit ! --connlimit-upto 0x10 --connlimit-mask 255.255.255.0 --connlimit-daddr -j DROP\n-A FORWARD -m connlimit --connlimit-above 1 --connlimit-mask 64 -m udp -p udp --dport 5"), uint8(2))
	f.Add(wrap("filter", "-A FORWARD -p udp -m hashlimit --hashlimit-above 10/min --hashlimit-burst 3 --hashlimit-mode srcip,dstport --hashlimit-srcmask 24 --hashlimit-name a -m udp --dport 5 -j DROP\n"+
		"-A user -m hashlimit --hashlimit-upto 64kb/s --hashlimit-burst 128kb --hashlimit-name b --hashlimit-htable-size 1 --hashlimit-htable-max 2\n"+
		"-A FORWARD -m hashlimit ! --hashlimit-upto 1/sec --hashlimit-rate-match --hashlimit-rate-interval 2 --hashlimit-name c -j ACCEPT"), uint8(2))
	fams := [3]Family{FamilyIPv4, FamilyIPv6, FamilyBoth}
	pkts := []*packet.Packet{
		tcpPkt("10.1.1.1", "172.16.0.1", 40000, 22, syn),
		udpPkt("2001:db8::1", "2001:db8::2", 53, 69),
		icmpPkt("10.0.0.1", "10.0.0.2", 3, 4),
		frag(udpPkt("10.1.1.1", "172.16.0.1", 5000, 1500), 8),
	}
	f.Fuzz(func(t *testing.T, text string, fsel uint8) {
		fam := fams[int(fsel)%len(fams)]
		var l Loader
		l.SetIPSets(randomSets)
		if err := l.Load("f.rules", strings.NewReader(text), fam); err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %T %v, want *ParseError", err, err)
			}
			return
		}
		rs, err := l.Compile(testPorts)
		if err != nil {
			if !errors.Is(err, ErrUnknownPort) && !errors.Is(err, ErrNoSet) {
				t.Fatalf("compile: got %v, want ErrUnknownPort or ErrNoSet", err)
			}
			return
		}
		local := rs.NewLocal()
		for _, p := range pkts {
			for in := uint8(0); in < 3; in++ {
				var logs LogHits
				rs.FilterLog(p, stNew, in, &logs)
				for _, i := range logs.Rule[:logs.N] {
					if rs.Log(i) == nil {
						t.Fatalf("LogHits names rule %d, not a LOG rule", i)
					}
				}
				// The full context: a connection, worker buckets, a mark.
				conn := Conn{Mark: 2, Confirmed: true, Proto: 17, Expires: 5e9}
				var counts ConnCounts
				c := Ctx{State: stEstablished, InPort: in, Now: 1e9, Mark: 1, Conn: &conn, Local: local, Logs: &logs, Counts: &counts}
				if v, _ := rs.FilterCtx(p, &c); v.Reject != RejectNone && v.Action != Drop {
					t.Fatalf("a REJECT verdict %v is not a DROP", v.Action)
				}
				rs.ReleaseConn(&counts)
				rs.Raw(p, in)
			}
		}
		s1 := saveString(t, rs, fam)
		var l2 Loader
		l2.SetIPSets(randomSets)
		if err := l2.Load("saved", strings.NewReader(s1), fam); err != nil {
			t.Fatalf("saved form does not load: %v\n%s", err, s1)
		}
		rs2, err := l2.Compile(testPorts)
		if err != nil {
			t.Fatalf("saved form does not compile: %v", err)
		}
		if s2 := saveString(t, rs2, fam); s1 != s2 {
			t.Fatalf("round trip differs:\n%s\nvs\n%s", s1, s2)
		}
	})
}
