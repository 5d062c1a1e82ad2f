// Package e2e holds statewire's end-to-end tests: each builds a lab of
// network namespaces and veth pairs (package lab), runs bridge.Datapath
// in-process on the bridge namespace's two ports (the rig of package
// e2etest, which also owns the end-of-test checks), drives real traffic between
// the left and right hosts (ping, TCP, UDP, ARP, 802.1Q-tagged frames, a
// stateful rule set) and checks, at the end of every test, that the frame
// accounting balances per direction and that no XDP program and no namespace
// is left behind. A flood test compares statewire with the kernel bridge with
// conntrack, counted at the receiving host.
//
// Ownership: each test owns its lab and datapath; the datapath's workers own
// their rings (see bridge.Datapath), the test goroutine only starts, reads
// published counters and stops.
//
// The tests need root; they skip without it, and fail in CI (CI=true).
package e2e
