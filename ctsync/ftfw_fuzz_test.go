package ctsync

import (
	"testing"
)

// FuzzLinkReceive: the link's datagram handler takes anything a peer (or
// anyone who can reach the port) sends. It never panics; it delivers only
// decoded data messages; its queues stay consistent and bounded whatever
// ACKs, NACKs and sequence numbers it is fed.
func FuzzLinkReceive(f *testing.F) {
	f.Add(unhex(f, conntrackdCTNew), uint8(0))
	f.Add(append(unhex(f, conntrackdUDPNew), unhex(f, conntrackdICMPNew)...), uint8(1))
	f.Add(AppendControl(nil, FlagNack, 1_700_000_001, 1_700_000_000, 1_700_000_010), uint8(2))
	f.Add(AppendControl(nil, FlagAck|FlagHello, 5, 0, 0xffffffff), uint8(3))
	f.Add(AppendControl(AppendControl(nil, FlagResync, 7, 0, 0), FlagAlive|FlagHelloBack, 9, 0, 0), uint8(4))
	f.Add([]byte{0x10, 0, 0, 8, 0, 0, 0, 1}, uint8(5))
	f.Fuzz(func(t *testing.T, b []byte, mode uint8) {
		w := &wire{t: t, now: 1_700_000_000e9, got: map[*ftfw][]Msg{}, sent: map[*ftfw]int{}}
		mut := func(c *LinkConfig) {
			c.ResendQueueSize, c.ACKWindowSize = 6, 3
			if mode&1 != 0 {
				c.Mode = "notrack"
			}
		}
		w.a, w.b = newTestFTFW(t, mut), newTestFTFW(t, mut)
		for i := 0; i < 8; i++ {
			queueCT(t, w.a, TypeCTNew, testCT(i))
		}
		w.flush(w.a, func(i int) bool { return mode&2 != 0 })
		for round := 0; round < 3; round++ {
			out := w.a.receiveDatagram(b, w.now, nil)
			for _, m := range out {
				if m.CT == nil && m.Exp == nil || !m.IsData() {
					t.Fatalf("delivered %+v, not a decoded data message", m.Header)
				}
			}
			w.now += 1e9
			w.a.tick(w.now)
			buf := make([]byte, 0, 1500)
			for d := w.a.nextDatagram(buf, w.now); len(d) > 0; d = w.a.nextDatagram(buf, w.now) {
				if len(d) > w.a.maxDgram && len(d) > 2000 {
					t.Fatalf("datagram of %d bytes", len(d))
				}
				if _, err := Decode(d); err != nil {
					t.Fatalf("we sent a datagram we cannot decode: %v\n% x", err, d)
				}
			}
			checkQueues(t, w.a)
		}
	})
}

// checkQueues verifies the lists' counts, links and key map.
func checkQueues(t *testing.T, f *ftfw) {
	t.Helper()
	keyed := 0
	for _, l := range []*nodeList{&f.tx, &f.rs} {
		n := 0
		for nd := l.head.next; nd != &l.head; nd = nd.next {
			if nd.in != l || nd.next.prev != nd {
				t.Fatalf("broken list at node %+v", nd)
			}
			if nd.keyed {
				keyed++
				if f.objs[nd.key] != nd {
					t.Fatalf("key map does not point at its node")
				}
			}
			n++
		}
		if n != l.n {
			t.Fatalf("list counts %d, holds %d", l.n, n)
		}
	}
	if keyed != len(f.objs) {
		t.Fatalf("key map has %d entries, lists %d keyed nodes", len(f.objs), keyed)
	}
	if f.rs.n > f.rsMax {
		t.Fatalf("resend queue %d over its bound %d", f.rs.n, f.rsMax)
	}
}
