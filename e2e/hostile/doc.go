// Package hostile holds statewire's hostile-traffic tests (issue 8): frames
// an attacker can send, injected with AF_PACKET into the netns/veth lab and
// carried through the real AF_XDP datapath (bridge.Datapath in the bridge
// namespace): a SYN flood from spoofed sources at more than ten times the
// table's size while established connections carry data, every TCP flag
// combination, tiny and overlapping fragments, ICMP errors quoting other
// flows, truncated and oversized frames, and IPv6 extension header chains
// that never end. The hash-bucket flood is measured in package flowtable.
//
// Each test compares what it sent with what arrived on the far host (an
// AF_PACKET sniffer, exact bytes) and with the datapath's counters by
// reason, and every rig checks frame conservation when it stops.
//
// Ownership: each test owns its lab, datapath, injector and sniffer. The
// datapath's workers own their rings; the test goroutine only starts the
// datapath, reads its published counters and table snapshots, and stops it.
// A sniffer's reader goroutine owns its socket until Close.
//
// The tests need root; they skip without it, and fail in CI (CI=true).
package hostile
