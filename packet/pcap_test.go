package packet_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// capture is one frame of a capture file.
type capture struct {
	file    string
	num     int // 1-based, as in kernel-states
	data    []byte
	wireLen int
}

// readCaptures reads every frame of every pcap and pcapng file of the
// shared corpus (testenv.Pcaps: missing fails in CI, skips elsewhere).
func readCaptures(tb testing.TB) []capture {
	tb.Helper()
	dir := testenv.Pcaps(tb)
	files, err := filepath.Glob(filepath.Join(dir, "*.pcap*"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no captures in %s: %v", dir, err)
	}
	var out []capture
	for _, f := range files {
		out = append(out, readCapture(tb, f)...)
	}
	return out
}

func readCapture(tb testing.TB, path string) []capture {
	tb.Helper()
	var out []capture
	for i, c := range pt.ReadPcap(tb, path) {
		out = append(out, capture{file: filepath.Base(path), num: i + 1, data: c.Data, wireLen: c.WireLen})
	}
	return out
}

// TestPcapsAgainstGopacket parses every frame of every capture and checks
// the fields against gopacket's own decoding of the same bytes.
func TestPcapsAgainstGopacket(t *testing.T) {
	caps := readCaptures(t)
	var p packet.Packet
	checked := map[string]int{}
	for _, c := range caps {
		r := packet.Parse(c.data, c.wireLen, packet.Options{}, &p)
		name := c.file + "#" + strconv.Itoa(c.num)
		g := gopacket.NewPacket(c.data, layers.LayerTypeEthernet, gopacket.Default)
		var gsrc, gdst net.IP
		if ip4, ok := g.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
			gsrc, gdst = ip4.SrcIP, ip4.DstIP
		} else if ip6, ok := g.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
			gsrc, gdst = ip6.SrcIP, ip6.DstIP
		}
		if gsrc == nil {
			if r == packet.ReasonOK {
				t.Errorf("%s: Parse ok (IPv%d) but gopacket found no IP layer", name, p.IPVersion)
			}
			continue
		}
		if r != packet.ReasonOK {
			t.Errorf("%s: got %v, want ok (gopacket decodes it)", name, r)
			continue
		}
		checked[c.file]++
		eqAddr(t, name+" src", p.Src, gsrc)
		eqAddr(t, name+" dst", p.Dst, gdst)
		if d := g.Layer(layers.LayerTypeDot1Q); d != nil {
			if p.VLANTags == 0 {
				t.Errorf("%s: no VLAN tag parsed, gopacket has one", name)
			}
		}
		if p.FragOffset != 0 {
			continue // no L4 header; gopacket decodes none either
		}
		if tcp, ok := g.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			checkTCP(t, name, &p, tcp)
		}
		if udp, ok := g.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && !p.HasInner {
			eq(t, name+" udp sport", p.SrcPort, uint16(udp.SrcPort))
			eq(t, name+" udp dport", p.DstPort, uint16(udp.DstPort))
		}
		if ic, ok := g.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
			eq(t, name+" icmp type", p.ICMP.Type, ic.TypeCode.Type())
			eq(t, name+" icmp code", p.ICMP.Code, ic.TypeCode.Code())
			eq(t, name+" icmp id", p.ICMP.ID, ic.Id)
			eq(t, name+" icmp seq", p.ICMP.Seq, ic.Seq)
			if packet.IsICMPError(4, p.ICMP.Type) {
				checkInner(t, name, &p, ic.Payload, layers.LayerTypeIPv4)
			}
		}
		if ic, ok := g.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
			eq(t, name+" icmp6 type", p.ICMP.Type, ic.TypeCode.Type())
			eq(t, name+" icmp6 code", p.ICMP.Code, ic.TypeCode.Code())
			if e, ok := g.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo); ok {
				eq(t, name+" icmp6 id", p.ICMP.ID, e.Identifier)
				eq(t, name+" icmp6 seq", p.ICMP.Seq, e.SeqNumber)
			}
			if p.ICMP.Type >= 1 && p.ICMP.Type <= 4 && len(ic.Payload) >= 4 {
				// gopacket leaves the 4 unused/MTU/pointer bytes in Payload.
				checkInner(t, name, &p, ic.Payload[4:], layers.LayerTypeIPv6)
			}
		}
	}
	for _, f := range []string{
		"tcp-http-handshake-data-fin.pcap", "tcp-ipv6-smtp.pcap", "icmp-frag-needed-for-tcp-smtp.pcap",
		"icmpv6-nd-traceroute6-errors.pcap", "vlan-same-flow-multiple-vlans.pcap", "ipv6-udp-dns-fragmented.pcap",
		"icmp-port-unreach-for-udp-stun.pcapng", "tcp-options-truncated-snaplen.pcap",
	} {
		if checked[f] == 0 {
			t.Errorf("%s: no IP packet cross-checked", f)
		}
	}
	total := 0
	for _, n := range checked {
		total += n
	}
	t.Logf("cross-checked %d IP packets in %d files", total, len(checked))
}

func checkTCP(t *testing.T, name string, p *packet.Packet, tcp *layers.TCP) {
	t.Helper()
	eq(t, name+" sport", p.SrcPort, uint16(tcp.SrcPort))
	eq(t, name+" dport", p.DstPort, uint16(tcp.DstPort))
	eq(t, name+" seq", p.TCP.Seq, tcp.Seq)
	eq(t, name+" ack", p.TCP.Ack, tcp.Ack)
	eq(t, name+" window", p.TCP.Window, tcp.Window)
	eq(t, name+" data offset", p.TCP.DataOff, tcp.DataOffset*4)
	var flags uint8
	for _, f := range []struct {
		set bool
		bit uint8
	}{{tcp.FIN, packet.TCPFin}, {tcp.SYN, packet.TCPSyn}, {tcp.RST, packet.TCPRst}, {tcp.PSH, packet.TCPPsh},
		{tcp.ACK, packet.TCPAck}, {tcp.URG, packet.TCPUrg}, {tcp.ECE, packet.TCPEce}, {tcp.CWR, packet.TCPCwr}} {
		if f.set {
			flags |= f.bit
		}
	}
	eq(t, name+" flags", p.TCP.Flags, flags)
	if p.TCP.OptsBroken {
		// gopacket drops every option of a header cut by the snaplen;
		// Parse keeps those it could read (TestParse checks them).
		return
	}
	wscale, mss, sackPerm, ts := packet.WScaleAbsent, uint16(0), false, false
	for _, o := range tcp.Options {
		switch {
		case o.OptionType == layers.TCPOptionKindWindowScale && len(o.OptionData) == 1:
			wscale = o.OptionData[0]
		case o.OptionType == layers.TCPOptionKindMSS && len(o.OptionData) == 2:
			mss = uint16(o.OptionData[0])<<8 | uint16(o.OptionData[1])
		case o.OptionType == layers.TCPOptionKindSACKPermitted:
			sackPerm = true
		case o.OptionType == layers.TCPOptionKindTimestamps && len(o.OptionData) == 8:
			ts = true
			eq(t, name+" tsval", p.TCP.TSVal, binary.BigEndian.Uint32(o.OptionData))
			eq(t, name+" tsecr", p.TCP.TSEcr, binary.BigEndian.Uint32(o.OptionData[4:]))
		case o.OptionType == layers.TCPOptionKindSACK:
			eq(t, name+" sack blocks", int(p.TCP.NumSACK), min(len(o.OptionData)/8, packet.MaxSACKBlocks))
			for i := 0; i < int(p.TCP.NumSACK) && 8*i+8 <= len(o.OptionData); i++ {
				eq(t, name+" sack left", p.TCP.SACK[i].Left, binary.BigEndian.Uint32(o.OptionData[8*i:]))
				eq(t, name+" sack right", p.TCP.SACK[i].Right, binary.BigEndian.Uint32(o.OptionData[8*i+4:]))
			}
		}
	}
	eq(t, name+" wscale", p.TCP.WScale, wscale)
	eq(t, name+" mss", p.TCP.MSS, mss)
	eq(t, name+" sackperm", p.TCP.SACKPerm, sackPerm)
	eq(t, name+" timestamps", p.TCP.HasTS, ts)
}

// checkInner decodes the quoted packet of an ICMP error with gopacket and
// compares it with p.Inner.
func checkInner(t *testing.T, name string, p *packet.Packet, quoted []byte, first gopacket.LayerType) {
	t.Helper()
	if !p.HasInner {
		t.Errorf("%s: ICMP error without inner packet (%v)", name, p.InnerReason)
		return
	}
	g := gopacket.NewPacket(quoted, first, gopacket.Default)
	if ip4, ok := g.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		eqAddr(t, name+" inner src", p.Inner.Src, ip4.SrcIP)
		eqAddr(t, name+" inner dst", p.Inner.Dst, ip4.DstIP)
		eq(t, name+" inner proto", p.Inner.Proto, uint8(ip4.Protocol))
	} else if ip6, ok := g.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		eqAddr(t, name+" inner src", p.Inner.Src, ip6.SrcIP)
		eqAddr(t, name+" inner dst", p.Inner.Dst, ip6.DstIP)
	} else {
		t.Errorf("%s: gopacket decodes no inner IP header", name)
		return
	}
	// Ports straight from the quoted bytes after the IP header: gopacket
	// refuses a UDP/TCP layer cut at 8 bytes in some versions.
	if l := g.Layer(layers.LayerTypeUDP); l != nil {
		u := l.(*layers.UDP)
		eq(t, name+" inner sport", p.Inner.SrcPort, uint16(u.SrcPort))
		eq(t, name+" inner dport", p.Inner.DstPort, uint16(u.DstPort))
	} else if l := g.Layer(layers.LayerTypeTCP); l != nil {
		u := l.(*layers.TCP)
		eq(t, name+" inner sport", p.Inner.SrcPort, uint16(u.SrcPort))
		eq(t, name+" inner dport", p.Inner.DstPort, uint16(u.DstPort))
	}
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

func eqAddr(t *testing.T, what string, got packet.Addr, want net.IP) {
	t.Helper()
	w, ok := netip.AddrFromSlice(want)
	if !ok {
		t.Errorf("%s: gopacket address %v unusable", what, want)
		return
	}
	if got.Netip() != w.Unmap() {
		t.Errorf("%s: got %v, want %v", what, got, w)
	}
}

// TestPcapChecksums verifies checksums on every fully captured frame. The
// bad ones were confirmed with tcpdump -vv ("incorrect"/"bad udp cksum"):
// offloaded captures and one deliberately bad SYN. The frames of the two
// captures taken on a sender that offloads checksums carry the
// pseudo-header sum (CHECKSUM_PARTIAL): ReasonOK with ChecksumPartial.
func TestPcapChecksums(t *testing.T) {
	wantBad := map[string]int{
		"tcp-sack-fast-retransmit.pcap": 18,
		"tcp-syn-bad-checksum.pcap":     1,
	}
	wantPartial := map[string]int{
		"tcp-ssh-retransmissions-dupacks.pcap":   152,
		"icmpv6-port-unreach-for-udp-doq.pcapng": 14,
	}
	gotBad, gotPartial := map[string]int{}, map[string]int{}
	verified := 0
	var p packet.Packet
	for _, c := range readCaptures(t) {
		r := packet.Parse(c.data, c.wireLen, packet.Options{VerifyChecksum: true}, &p)
		if p.ChecksumChecked {
			verified++
			if p.ChecksumOK != (r != packet.ReasonBadChecksum && !p.ChecksumPartial) {
				t.Errorf("%s#%d: ChecksumOK %v with reason %v", c.file, c.num, p.ChecksumOK, r)
			}
		}
		if r == packet.ReasonBadChecksum {
			gotBad[c.file]++
		}
		if p.ChecksumPartial {
			gotPartial[c.file]++
		}
		if p.Truncated && p.ChecksumChecked {
			t.Errorf("%s#%d: checksum checked on a truncated capture", c.file, c.num)
		}
	}
	for f, n := range wantBad {
		eq(t, f+" bad checksums", gotBad[f], n)
	}
	for f, n := range gotBad {
		if wantBad[f] == 0 {
			t.Errorf("%s: got %d bad checksums, want 0", f, n)
		}
	}
	for f, n := range wantPartial {
		eq(t, f+" partial checksums", gotPartial[f], n)
	}
	for f, n := range gotPartial {
		if wantPartial[f] == 0 {
			t.Errorf("%s: got %d partial checksums, want 0", f, n)
		}
	}
	if verified < 1000 {
		t.Errorf("verified %d checksums, want at least 1000", verified)
	}
}

// TestPcapsAgainstKernelStates checks that every packet Linux gave a
// conntrack state to parses: a parse failure there would make statewire
// call INVALID what the kernel tracked. Checksums are not verified
// (the reference ran with nf_conntrack_checksum=0).
func TestPcapsAgainstKernelStates(t *testing.T) {
	// The kernel saw this frame zero-padded to its wire length; the capture
	// holds 6 bytes of IPv4 header, so the parser cannot recover it.
	known := map[string]packet.Reason{"ipv4-header-truncated.pcap#1": packet.ReasonTruncatedIPv4}
	states := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(testenv.Pcaps(t), "kernel-states", "nohelper", "*.tsv"))
	for _, f := range files {
		base := strings.TrimSuffix(filepath.Base(f), ".tsv")
		for i, state := range testenv.KernelStates(t, "nohelper", base) {
			states[base+"#"+strconv.Itoa(i+1)] = state
		}
	}
	if len(states) == 0 {
		t.Fatal("no kernel states in the corpus")
	}
	var p packet.Packet
	compared := 0
	for _, c := range readCaptures(t) {
		name := c.file + "#" + strconv.Itoa(c.num)
		st := states[name]
		r := packet.Parse(c.data, c.wireLen, packet.Options{}, &p)
		switch st {
		case "NEW", "ESTABLISHED", "RELATED", "UNTRACKED":
			compared++
			if want, ok := known[name]; ok {
				eq(t, name, r, want)
			} else if r != packet.ReasonOK {
				t.Errorf("%s: kernel state %s, got %v, want ok", name, st, r)
			}
		case "SKIP:non-ip":
			eq(t, name, r, packet.ReasonNotIP)
		case "SKIP:fragment":
			if !p.Fragment {
				t.Errorf("%s: kernel saw a fragment, Parse did not (%v)", name, r)
			}
		}
	}
	t.Logf("%d packets with a kernel state parsed", compared)
}
