package ctlist

import (
	"strings"
	"testing"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

func addr4(a, b, c, d byte) packet.Addr { return packet.AddrFrom4([4]byte{a, b, c, d}) }

func TestLineFormats(t *testing.T) {
	const now = int64(1000e9)
	ssh := flowtable.EntrySnapshot{
		Orig: flowtable.Tuple{Src: addr4(192, 168, 1, 2), Dst: addr4(192, 168, 1, 35), SrcPort: 1031, DstPort: 23, Proto: packet.ProtoTCP, L3: 4},
		Conn: statemachine.Conn{Expires: now + 117e9 + 5e8, Proto: packet.ProtoTCP, State: statemachine.TCPSynSent},
	}
	est := ssh
	est.Conn.State = statemachine.TCPEstablished
	est.Conn.Status = statemachine.StatusSeenReply | statemachine.StatusAssured
	est.Conn.Expires = now + 431999e9
	est.Helper = 1 // ftp
	vlan := ssh
	vlan.Orig.VLAN = 7
	master3 := est
	master3.Children = 3
	marked := est
	marked.Helper = 0
	marked.Mark = 0x2a
	offl := est
	offl.Helper = 0
	offl.Offloaded = true
	offlUDP := flowtable.EntrySnapshot{
		Orig:      flowtable.Tuple{Src: addr4(10, 0, 0, 1), Dst: addr4(10, 0, 0, 2), SrcPort: 5000, DstPort: 53, Proto: packet.ProtoUDP, L3: 4},
		Conn:      statemachine.Conn{Expires: now + 119e9 + 7e8, Proto: packet.ProtoUDP, Status: statemachine.StatusSeenReply | statemachine.StatusAssured},
		Offloaded: true,
	}
	ping := flowtable.EntrySnapshot{
		Orig: flowtable.Tuple{Src: addr4(10, 0, 0, 1), Dst: addr4(10, 0, 0, 2), SrcPort: 77, DstPort: 8 << 8, Proto: packet.ProtoICMP, L3: 4},
		Conn: statemachine.Conn{Expires: now + 29e9, Proto: packet.ProtoICMP, Status: statemachine.StatusSeenReply},
	}
	tests := []struct {
		name string
		es   flowtable.EntrySnapshot
		f    Format
		want string
	}{
		// The seeds' /proc/net/ip_conntrack example, in today's proc format.
		{"syn_sent proc", ssh, Proc, "ipv4     2 tcp      6 117 SYN_SENT src=192.168.1.2 dst=192.168.1.35 sport=1031 dport=23 [UNREPLIED] src=192.168.1.35 dst=192.168.1.2 sport=23 dport=1031 mark=0 zone=0 use=2"},
		{"syn_sent conntrack -L", ssh, Conntrack, "tcp      6 117 SYN_SENT src=192.168.1.2 dst=192.168.1.35 sport=1031 dport=23 [UNREPLIED] src=192.168.1.35 dst=192.168.1.2 sport=23 dport=1031 mark=0 use=1"},
		{"established with helper", est, Conntrack, "tcp      6 431999 ESTABLISHED src=192.168.1.2 dst=192.168.1.35 sport=1031 dport=23 src=192.168.1.35 dst=192.168.1.2 sport=23 dport=1031 [ASSURED] mark=0 helper=ftp use=1"},
		{"established with helper proc", est, Proc, "ipv4     2 tcp      6 431999 ESTABLISHED src=192.168.1.2 dst=192.168.1.35 sport=1031 dport=23 src=192.168.1.35 dst=192.168.1.2 sport=23 dport=1031 [ASSURED] mark=0 zone=0 helper=ftp use=2"},
		// A master with three live data connections: one reference each.
		{"master with three children", master3, Conntrack, "tcp      6 431999 ESTABLISHED src=192.168.1.2 dst=192.168.1.35 sport=1031 dport=23 src=192.168.1.35 dst=192.168.1.2 sport=23 dport=1031 [ASSURED] mark=0 helper=ftp use=4"},
		{"master with three children proc", master3, Proc, "ipv4     2 tcp      6 431999 ESTABLISHED src=192.168.1.2 dst=192.168.1.35 sport=1031 dport=23 src=192.168.1.35 dst=192.168.1.2 sport=23 dport=1031 [ASSURED] mark=0 zone=0 helper=ftp use=5"},
		// An entry in the XDP fast path: [OFFLOAD] in place of [ASSURED]
		// in both formats (the kernel's else-if chain); conntrack -L
		// prints its (live) timeout, /proc none (ct_seq_show prints
		// the timeout only without IPS_OFFLOAD).
		{"offloaded conntrack -L", offl, Conntrack, "tcp      6 431999 ESTABLISHED src=192.168.1.2 dst=192.168.1.35 sport=1031 dport=23 src=192.168.1.35 dst=192.168.1.2 sport=23 dport=1031 [OFFLOAD] mark=0 use=1"},
		{"offloaded proc", offl, Proc, "ipv4     2 tcp      6 ESTABLISHED src=192.168.1.2 dst=192.168.1.35 sport=1031 dport=23 src=192.168.1.35 dst=192.168.1.2 sport=23 dport=1031 [OFFLOAD] mark=0 zone=0 use=2"},
		{"offloaded udp proc", offlUDP, Proc, "ipv4     2 udp      17 src=10.0.0.1 dst=10.0.0.2 sport=5000 dport=53 src=10.0.0.2 dst=10.0.0.1 sport=53 dport=5000 [OFFLOAD] mark=0 zone=0 use=2"},
		{"offloaded udp conntrack -L", offlUDP, Conntrack, "udp      17 119 src=10.0.0.1 dst=10.0.0.2 sport=5000 dport=53 src=10.0.0.2 dst=10.0.0.1 sport=53 dport=5000 [OFFLOAD] mark=0 use=1"},
		// The connection mark (CONNMARK), decimal as ct_seq_show's
		// "mark=%u" and libnetfilter_conntrack's print it.
		{"marked proc", marked, Proc, "ipv4     2 tcp      6 431999 ESTABLISHED src=192.168.1.2 dst=192.168.1.35 sport=1031 dport=23 src=192.168.1.35 dst=192.168.1.2 sport=23 dport=1031 [ASSURED] mark=42 zone=0 use=2"},
		{"marked conntrack -L", marked, Conntrack, "tcp      6 431999 ESTABLISHED src=192.168.1.2 dst=192.168.1.35 sport=1031 dport=23 src=192.168.1.35 dst=192.168.1.2 sport=23 dport=1031 [ASSURED] mark=42 use=1"},
		// conntrack -L prints a zone only when it is not the default.
		{"vlan conntrack -L", vlan, Conntrack, "tcp      6 117 SYN_SENT src=192.168.1.2 dst=192.168.1.35 sport=1031 dport=23 [UNREPLIED] src=192.168.1.35 dst=192.168.1.2 sport=23 dport=1031 mark=0 zone=7 use=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Line(&tt.es, now, tt.f); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	// ICMP tuples carry type, code and id; the reply maps the type.
	got := Line(&ping, now, Proc)
	if !strings.Contains(got, "icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=77 src=10.0.0.2 dst=10.0.0.1 type=0 code=0 id=77 mark=0") {
		t.Errorf("icmp line: %s", got)
	}
	if j := JSON(&est, now); j.State != "ESTABLISHED" || j.Helper != "ftp" || len(j.Status) != 1 || j.Status[0] != "ASSURED" || *j.Orig.SrcPort != 1031 {
		t.Errorf("json: %+v", j)
	}
	// JSON lists status bits: an offloaded entry is ASSURED and OFFLOAD,
	// with its (live) timeout.
	if j := JSON(&offl, now); strings.Join(j.Status, ",") != "ASSURED,OFFLOAD" || j.Timeout != 431999 {
		t.Errorf("json of an offloaded entry: %+v", j)
	}
}

// TestUse: use= is the table's reference plus one per live child, and
// /proc/net/nf_conntrack shows one more (the reader's own reference), as
// Linux 6.18 prints them.
func TestUse(t *testing.T) {
	tests := []struct {
		children uint32
		f        Format
		want     uint32
	}{
		{0, Conntrack, 1}, {0, Proc, 2},
		{1, Conntrack, 2}, {1, Proc, 3},
		{3, Conntrack, 4}, {3, Proc, 5},
	}
	for _, tt := range tests {
		es := flowtable.EntrySnapshot{Children: tt.children}
		if got := Use(&es, tt.f); got != tt.want {
			t.Errorf("Use(%d children, format %d): got %d, want %d", tt.children, tt.f, got, tt.want)
		}
	}
}

// TestEventLine checks the three kinds against lines `conntrack -E`
// printed for a connection through a Linux 6.x bridge.
func TestEventLine(t *testing.T) {
	const now = int64(1000e9)
	es := flowtable.EntrySnapshot{
		Orig: flowtable.Tuple{Src: addr4(198, 18, 0, 1), Dst: addr4(198, 18, 0, 2), SrcPort: 58542, DstPort: 8080, Proto: packet.ProtoTCP, L3: 4},
		Conn: statemachine.Conn{Expires: now + 120e9, Proto: packet.ProtoTCP, State: statemachine.TCPSynSent},
	}
	est := es
	est.Conn.State, est.Conn.Status, est.Conn.Expires = statemachine.TCPEstablished, statemachine.StatusSeenReply|statemachine.StatusAssured, now+432000e9
	tw := est
	tw.Conn.State = statemachine.TCPTimeWait
	offl := est
	offl.Offloaded = true
	udp := flowtable.EntrySnapshot{
		Orig: flowtable.Tuple{Src: addr4(198, 18, 0, 1), Dst: addr4(198, 18, 0, 2), SrcPort: 5000, DstPort: 53, Proto: packet.ProtoUDP, L3: 4},
		Conn: statemachine.Conn{Expires: now + 120e9, Proto: packet.ProtoUDP, Status: statemachine.StatusSeenReply | statemachine.StatusAssured},
	}
	tests := []struct {
		name, kind string
		es         flowtable.EntrySnapshot
		proto      bool
		want       string
	}{
		{"new", "NEW", es, true, "    [NEW] tcp      6 120 SYN_SENT src=198.18.0.1 dst=198.18.0.2 sport=58542 dport=8080 [UNREPLIED] src=198.18.0.2 dst=198.18.0.1 sport=8080 dport=58542"},
		{"update", "UPDATE", est, true, " [UPDATE] tcp      6 432000 ESTABLISHED src=198.18.0.1 dst=198.18.0.2 sport=58542 dport=8080 src=198.18.0.2 dst=198.18.0.1 sport=8080 dport=58542 [ASSURED]"},
		{"update without protoinfo", "UPDATE", est, false, " [UPDATE] tcp      6 432000 src=198.18.0.1 dst=198.18.0.2 sport=58542 dport=8080 src=198.18.0.2 dst=198.18.0.1 sport=8080 dport=58542 [ASSURED]"},
		{"destroy", "DESTROY", tw, true, "[DESTROY] tcp      6 TIME_WAIT src=198.18.0.1 dst=198.18.0.2 sport=58542 dport=8080 src=198.18.0.2 dst=198.18.0.1 sport=8080 dport=58542 [ASSURED]"},
		// An entry removed while in the fast path ([DESTROY] of conntrack -D).
		{"destroy offloaded", "DESTROY", offl, true, "[DESTROY] tcp      6 ESTABLISHED src=198.18.0.1 dst=198.18.0.2 sport=58542 dport=8080 src=198.18.0.2 dst=198.18.0.1 sport=8080 dport=58542 [OFFLOAD]"},
		{"udp update", "UPDATE", udp, false, " [UPDATE] udp      17 120 src=198.18.0.1 dst=198.18.0.2 sport=5000 dport=53 src=198.18.0.2 dst=198.18.0.1 sport=53 dport=5000 [ASSURED]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EventLine(tt.kind, &tt.es, now, tt.proto); got != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}
