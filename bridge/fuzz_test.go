package bridge

import (
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// fuzzTemplates are the frames FuzzPipeline's records start from: the
// packets of a TCP connection both ways, UDP, ICMP and ICMPv6 echo and
// errors, IPv6, fragments and ARP, so that most mutated frames still parse
// and reach the tracker.
func fuzzTemplates() [][]byte {
	l, r := "198.18.0.1", "198.18.0.2"
	l6, r6 := "2001:db8::1", "2001:db8::2"
	syn := pt.TCP4(l, r, 4000, 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 1000, MSS: 1460, HasWScale: true, WScale: 7})
	udp := pt.UDP4(l, r, 5000, 53, []byte("query"))
	return [][]byte{
		syn,
		pt.TCP4(r, l, 80, 4000, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 100, Ack: 2, Window: 1000}),
		pt.TCP4(l, r, 4000, 80, pt.TCPFields{Flags: packet.TCPAck, Seq: 2, Ack: 101, Window: 1000}),
		pt.TCP4(l, r, 4000, 80, pt.TCPFields{Flags: packet.TCPAck | packet.TCPPsh, Seq: 2, Ack: 101, Window: 1000, Payload: []byte("GET /")}),
		pt.TCP4(r, l, 80, 4000, pt.TCPFields{Flags: packet.TCPFin | packet.TCPAck, Seq: 101, Ack: 7, Window: 1000}),
		pt.TCP4(l, r, 4000, 80, pt.TCPFields{Flags: packet.TCPRst, Seq: 7}),
		udp,
		pt.UDP4(r, l, 53, 5000, []byte("answer")),
		pt.ICMP4Echo(l, r, 8, 1, 1, nil),
		pt.ICMP4Echo(r, l, 0, 1, 1, nil),
		pt.ICMP4Error(r, l, 3, 3, pt.IP(udp)),
		pt.TCP6(l6, r6, 4000, 21, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 1000}),
		pt.ICMP6Echo(l6, r6, 128, 1, 1, nil),
		pt.Frag4(syn, 0, 16, true),
		pt.Frag4(syn, 16, 24, false),
		pt.NeighborSolicit(l6, r6, r6),
	}
}

// FuzzPipeline runs a sequence of frames, each a template with one byte
// changed, through one pipeline frame by frame (Process) and through a
// second one in batches (ProcessBatch). Both must give every frame the same
// result: batching is an optimisation, never a semantic. And the counters
// must account for every frame, and be the same for both: one ingress port, one verdict (accept or a
// drop reason), one parse reason and one state index each.
func FuzzPipeline(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 1, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 1, 0, 0, 5, 0, 0, 0})
	f.Add([]byte{6, 0, 0, 0, 7, 1, 0, 0, 8, 0, 0, 0, 9, 1, 0, 0, 10, 1, 0, 0})
	f.Add([]byte{13, 0, 0, 0, 14, 0, 0, 0, 11, 0, 0, 0, 12, 0, 0, 0, 15, 0, 0, 0})
	f.Add([]byte{0, 0, 30, 0xff, 0, 0x82, 47, 0x3f, 1, 1, 14, 0x01})
	templates := fuzzTemplates()
	s := DefaultSettings()
	s.Rules = loadRules(f, newOnlyFromA)
	f.Fuzz(func(t *testing.T, data []byte) {
		single := newTestPipeline(t, s, 8) // small: table-full and early drop happen
		batched := newTestPipeline(t, s, 8)
		var frames [][]byte
		var ports []Port
		var times []int64
		now := int64(1e12)
		for len(data) >= 4 && len(frames) < 3*MaxBatch {
			rec := data[:4]
			data = data[4:]
			fr := append([]byte(nil), templates[int(rec[0])%len(templates)]...)
			if rec[3] != 0 {
				fr[int(rec[2])%len(fr)] ^= rec[3]
			}
			if rec[1]&0x80 != 0 && len(fr) > 14 {
				fr = fr[:14+int(rec[2])%(len(fr)-14)] // truncated
			}
			now += int64(rec[1]&0x7e) * 1e8 // up to 12.6 s between frames
			frames = append(frames, fr)
			ports = append(ports, Port(rec[1]&1))
			times = append(times, now)
		}
		want := make([]Result, len(frames))
		for i, fr := range frames {
			want[i] = single.Process(fr, len(fr), ports[i], times[i])
		}
		// Batches hold frames of one port and one instant, as a worker's
		// RX batch does.
		out := make([]Result, MaxBatch)
		for i := 0; i < len(frames); {
			j := i + 1
			for j < len(frames) && j-i < MaxBatch && ports[j] == ports[i] && times[j] == times[i] {
				j++
			}
			batched.ProcessBatch(frames[i:j], ports[i], times[i], out[:j-i])
			for k := i; k < j; k++ {
				if got := out[k-i]; got != want[k] {
					t.Fatalf("frame %d (port %v): ProcessBatch gave %+v, Process gave %+v", k, ports[k], got, want[k])
				}
			}
			i = j
		}
		checkAccounting(t, single.Stats(), len(frames))
		checkAccounting(t, batched.Stats(), len(frames))
		// Batching must not change what is counted either (a batch's
		// lookups once counted every found entry twice).
		if got, want := *batched.Stats(), *single.Stats(); got != want {
			t.Fatalf("pipeline counters: ProcessBatch %+v, Process %+v", got, want)
		}
		if got, want := batched.Shard().Stats(), single.Shard().Stats(); got != want {
			t.Fatalf("shard counters: ProcessBatch %+v, Process %+v", got, want)
		}
	})
}

func checkAccounting(t *testing.T, st *Stats, n int) {
	t.Helper()
	sum := func(xs []uint64) (s uint64) {
		for _, x := range xs {
			s += x
		}
		return s
	}
	if got := st.Packets[0] + st.Packets[1]; got != uint64(n) {
		t.Fatalf("packets by port: %d, want %d", got, n)
	}
	if got := st.Accepted + sum(st.Drops[:]); got != uint64(n) {
		t.Fatalf("accepted %d + dropped %d = %d, want %d", st.Accepted, sum(st.Drops[:]), got, n)
	}
	if st.Drops[DropNone] != 0 {
		t.Fatalf("%d drops without a reason", st.Drops[DropNone])
	}
	if got := sum(st.Parse[:]); got != uint64(n) {
		t.Fatalf("parse reasons: %d, want %d", got, n)
	}
	if got := sum(st.States[:]); got != uint64(n) {
		t.Fatalf("states: %d, want %d", got, n)
	}
}
