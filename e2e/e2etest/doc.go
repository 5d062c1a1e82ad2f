// Package e2etest holds the rig every end-to-end test of statewire builds:
// a netns/veth lab (package lab) with a bridge.Datapath running in-process on
// its bridge namespace's two ports, the checks every such test owes at its
// end (Stop within its deadline, nothing in flight, frame conservation per
// direction, UMEM accounting per socket, no XDP program left), and the
// helpers the rigs used to repeat (drop-list assertions, TCP transfers
// checked with SHA-256, interface counters).
//
// It is a non-test package because test packages cannot share _test.go
// files; only tests import it. It may import both lab and bridge (lab may
// not import bridge: bridge's own lab tests import lab).
//
// Ownership: a Rig belongs to the test goroutine that started it (Start,
// Stop, and the cleanup Start registers); the datapath's workers own their
// rings and shards (see bridge.Datapath), the test only reads published
// counters, publishes settings and stops. A PacedTransfer's goroutines own
// its sockets and report through its channel and atomics.
package e2etest
