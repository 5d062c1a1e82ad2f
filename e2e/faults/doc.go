// Package faults holds statewire's fault tests, run through the real AF_XDP
// datapath in a lab of network namespaces and veth pairs (package lab):
//
//   - kill -9 of a `statewire run` process while traffic flows, then a
//     restart on the same ports over a stale netlink XDP program;
//   - a bridge port or a host interface going down and up while running;
//   - the fill ring running empty under a burst (tiny rings and UMEM);
//   - the TX ring full (a TX ring smaller than an RX batch), a peer that
//     stops taking frames and a receiver that stops reading.
//
// Every test ends with the frame accounting: each frame taken from an RX
// ring was forwarded or dropped with a counted reason, every forwarded frame
// was submitted on the other port's TX ring and every submitted frame came
// back through the completion ring; and, where the test controls all the
// traffic, the frames the sender put on the wire equal the frames the bridge
// received plus those the kernel counted as dropped on the way. Nothing may
// hang: every wait has a deadline, and Stop must return within one.
//
// Ownership: each test owns its lab and datapath; the datapath's workers own
// their rings (see bridge.Datapath); the test goroutine starts, reads
// published counters, flips links and stops. Traffic goroutines own their
// sockets and report through atomics.
//
// The tests need root; they skip without it, and fail in CI (CI=true).
package faults
