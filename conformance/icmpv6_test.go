package conformance

import (
	"fmt"
	"strings"
	"testing"

	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/packet/packettest"
)

// TestDifferentialICMPv6Types runs a tracked IPv6 UDP flow through the
// kernel bridge and statewire, then an ICMPv6 message of every type quoting
// it, and requires the two to agree on every packet. The kernel treats every
// type below 128 as an error (nf_conntrack_icmpv6_error: "type >= 128" is
// not one), not only the assigned 1-4: an error addressed to either end of
// the flow is RELATED, one quoting a flow nobody saw is INVALID. Types from
// 128 up (echo and node information, ND and MLD, the rest) must get the
// kernel's state too.
func TestDifferentialICMPv6Types(t *testing.T) {
	lab.RequireRoot(t)
	h := newTestHarness(t, Options{})
	const rtr6 = "2001:2::fe"
	fromClient := packettest.UDP6(cli6, srv6, 5000, 6000, []byte("query"))
	fromServer := packettest.UDP6(srv6, cli6, 6000, 5000, []byte("answer"))
	stranger := packettest.UDP6(cli6, srv6, 5001, 6001, []byte("never seen"))
	frames := [][]byte{fromClient, toClient(fromServer)}
	var want []string // the labels statewire must give, besides agreeing
	want = append(want, "NEW", "ESTABLISHED")
	// what[i] names frame i in failure messages.
	what := []string{"udp client → server", "udp server → client"}
	for typ := 0; typ < 128; typ++ {
		// A router on the server's side reports on the client's packet to
		// the client, and a router on the client's side on the server's
		// packet to the server: RELATED both ways. The same error about
		// a flow the bridge never saw is INVALID.
		frames = append(frames,
			toClient(packettest.ICMP6(rtr6, cli6, uint8(typ), 0, 0, packettest.Quote(fromClient, 0))),
			packettest.ICMP6(rtr6, srv6, uint8(typ), 0, 0, packettest.Quote(fromServer, 0)),
			toClient(packettest.ICMP6(rtr6, cli6, uint8(typ), 0, 0, packettest.Quote(stranger, 0))))
		want = append(want, "RELATED", "RELATED", "INVALID")
		what = append(what,
			fmt.Sprintf("type %d to the client quoting its packet", typ),
			fmt.Sprintf("type %d to the server quoting its packet", typ),
			fmt.Sprintf("type %d quoting an unknown flow", typ))
	}
	for typ := 128; typ < 256; typ++ {
		// Not errors: whatever they carry is no quote. Same body as the
		// errors above, from the client's side.
		frames = append(frames, packettest.ICMP6(cli6, srv6, uint8(typ), 0, uint32(typ)<<16|1, packettest.Quote(fromClient, 0)))
		want = append(want, "")
		what = append(what, fmt.Sprintf("type %d client → server", typ))
	}

	r, text := compareGenerated(t, h, "icmpv6-types", frames)
	if r.Compared != len(frames) {
		t.Errorf("compared %d of %d packets, want all\n%s", r.Compared, len(frames), text)
	}
	var diffs []string
	for i := range frames {
		k, o := r.KernelLabels[i], r.OurLabels[i]
		switch {
		case k != o:
			diffs = append(diffs, fmt.Sprintf("#%d %s: kernel %s, statewire %s", i+1, what[i], k, o))
		case want[i] != "" && o != want[i]:
			diffs = append(diffs, fmt.Sprintf("#%d %s: both %s, want %s", i+1, what[i], o, want[i]))
		}
	}
	if len(diffs) > 0 {
		t.Errorf("%d of %d packets differ:\n%s", len(diffs), len(frames), strings.Join(diffs, "\n"))
	}
	for _, d := range r.TableDiffs {
		t.Errorf("table: %s", d)
	}
	if t.Failed() {
		t.Log("\n" + text)
	}
}

// TestDifferentialICMPv6Redirects runs ICMPv6 redirects quoting a tracked
// IPv6 UDP flow through the kernel bridge and statewire, with the options
// in different orders. The kernel (nf_conntrack_icmpv6_redirect) reads only
// the first option after the redirect message: the redirected header
// (type 4) first makes the redirect RELATED whatever follows, and the
// quote runs from that option's 8-byte header to the end of the packet
// whatever its length field says; a Target Link-Layer Address option first,
// as Linux routers send, or a zero-length first option leaves it INVALID
// though the quote is there.
func TestDifferentialICMPv6Redirects(t *testing.T) {
	lab.RequireRoot(t)
	h := newTestHarness(t, Options{})
	const rtr = "fe80::fe"
	fromClient := packettest.UDP6(cli6, srv6, 5000, 6000, []byte("query"))
	fromServer := packettest.UDP6(srv6, cli6, 6000, 5000, []byte("answer"))
	stranger := packettest.UDP6(cli6, srv6, 5001, 6001, []byte("never seen"))
	tlla := packettest.TargetLLAOption(packettest.DstMAC)
	// rh is a redirected header option quoting q, padded to 8 bytes.
	rh := func(q []byte) []byte {
		n := (8 + len(q) + 7) / 8 * 8
		o := make([]byte, n)
		o[0], o[1] = 4, byte(n/8)
		copy(o[8:], q)
		return o
	}
	redirect := func(before, quoted []byte) []byte {
		return toClient(packettest.Redirect6Options(rtr, cli6, "fe80::2", srv6, before, quoted))
	}
	q := packettest.Quote(fromClient, 0)
	cases := []struct {
		what, want string
		frame      []byte
	}{
		{"udp client → server", "NEW", fromClient},
		{"udp server → client", "ESTABLISHED", toClient(fromServer)},
		{"redirected header only", "RELATED", redirect(nil, q)},
		{"redirected header only, quoting an unknown flow", "INVALID", redirect(nil, packettest.Quote(stranger, 0))},
		{"target link-layer option first", "INVALID", redirect(tlla, q)},
		{"two target link-layer options first", "INVALID", redirect(append(append([]byte(nil), tlla...), tlla...), q)},
		{"redirected header first, target link-layer option after", "RELATED", redirect(append(rh(q), tlla...), nil)},
		{"redirected header of length 1, the quote after it", "RELATED", redirect(append([]byte{4, 1, 0, 0, 0, 0, 0, 0}, q...), nil)},
		{"zero-length first option", "INVALID", redirect([]byte{4, 0, 0, 0, 0, 0, 0, 0}, q)},
		{"no options", "INVALID", redirect(nil, nil)},
	}
	frames := make([][]byte, len(cases))
	for i, c := range cases {
		frames[i] = c.frame
	}
	r, text := compareGenerated(t, h, "icmpv6-redirects", frames)
	if r.Compared != len(frames) {
		t.Errorf("compared %d of %d packets, want all\n%s", r.Compared, len(frames), text)
	}
	var diffs []string
	for i, c := range cases {
		k, o := r.KernelLabels[i], r.OurLabels[i]
		switch {
		case k != o:
			diffs = append(diffs, fmt.Sprintf("#%d %s: kernel %s, statewire %s", i+1, c.what, k, o))
		case o != c.want:
			diffs = append(diffs, fmt.Sprintf("#%d %s: both %s, want %s", i+1, c.what, o, c.want))
		}
	}
	if len(diffs) > 0 {
		t.Errorf("%d of %d packets differ:\n%s", len(diffs), len(frames), strings.Join(diffs, "\n"))
	}
	for _, d := range r.TableDiffs {
		t.Errorf("table: %s", d)
	}
	if t.Failed() {
		t.Log("\n" + text)
	}
}

// TestDifferentialICMPOtherFamily: ICMP (protocol 1) over IPv6 and ICMPv6
// (58) over IPv4 are no ICMP to conntrack (nf_conntrack_handle_icmp matches
// protocol to family, and the ICMP trackers refuse the other family): an
// echo request, an error-shaped message and a message of type 0 are all
// INVALID and make no connection, in the kernel as in statewire.
func TestDifferentialICMPOtherFamily(t *testing.T) {
	lab.RequireRoot(t)
	h := newTestHarness(t, Options{})
	quote6 := packettest.Quote(packettest.UDP6(cli6, srv6, 5000, 6000, []byte("query")), 0)
	quote4 := packettest.Quote(packettest.UDP4(cli4, srv4, 5000, 6000, []byte("query")), 28)
	body := func(typ uint8, rest []byte) []byte {
		return append([]byte{typ, 0, 0, 0, 0x42, 0x42, 0, 1}, rest...)
	}
	cases := []struct {
		what  string
		frame []byte
	}{
		{"icmp echo request over ipv6", packettest.IPv6(cli6, srv6, packet.ProtoICMP, body(8, nil))},
		{"icmp type 0 over ipv6", packettest.IPv6(cli6, srv6, packet.ProtoICMP, body(0, nil))},
		{"icmp unreachable over ipv6", packettest.IPv6(cli6, srv6, packet.ProtoICMP, body(3, quote6))},
		{"icmpv6 echo request over ipv4", packettest.IPv4(cli4, srv4, packet.ProtoICMPv6, body(128, nil))},
		{"icmpv6 unreachable over ipv4", packettest.IPv4(cli4, srv4, packet.ProtoICMPv6, body(1, quote4))},
	}
	frames := make([][]byte, len(cases))
	for i, c := range cases {
		frames[i] = c.frame
	}
	r, text := compareGenerated(t, h, "icmp-other-family", frames)
	if r.Compared != len(frames) {
		t.Errorf("compared %d of %d packets, want all\n%s", r.Compared, len(frames), text)
	}
	for i, c := range cases {
		if k, o := r.KernelLabels[i], r.OurLabels[i]; k != o || o != "INVALID" {
			t.Errorf("#%d %s: kernel %s, statewire %s, want both INVALID", i+1, c.what, k, o)
		}
	}
	for _, d := range r.TableDiffs {
		t.Errorf("table: %s", d)
	}
	if t.Failed() {
		t.Log("\n" + text)
	}
}
