package offload_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet/packettest"
)

// runMarked runs frame on port A and returns the action and the Mark the
// program wrote in front of it (BPF_PROG_RUN's output starts at the XDP
// metadata).
func runMarked(t *testing.T, prog *offload.Program, frame []byte) (uint32, offload.Mark) {
	t.Helper()
	out := make([]byte, len(frame)+offload.MarkLen+64)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := prog.EBPF(offload.PortA).Run(opts)
	if err != nil {
		t.Fatal(err)
	}
	out = opts.DataOut
	// DataOut is resliced to what the kernel wrote: metadata, then frame.
	meta := len(out) - len(frame)
	switch meta {
	case 0:
		return ret, offload.Mark{}
	case offload.MarkLen:
		return ret, offload.ReadMark(out[:meta])
	}
	t.Fatalf("output of %d bytes for a frame of %d", len(out), len(frame))
	return 0, offload.Mark{}
}

// TestOfferPending: a frame run before the offer is punted unmarked
// (miss); after OfferPending every frame is punted and numbered; Activate
// succeeds only with the count the program reached, and only then does
// the program take frames. TakeBack of a pending offer leaves the entry
// as it was.
func TestOfferPending(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 16, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	frame := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("q"))
	e, vs, oc := udpFlow(t, prog, frame, offload.PortA)

	if ret, m := runMarked(t, prog, frame); ret != offload.ActionPass || m.Seq != 0 {
		t.Fatalf("before the offer: action %d, mark %+v; want pass, unmarked", ret, m)
	}
	pd, err := prog.OfferPending(e, vs, oc)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint32(1); i <= 3; i++ {
		ret, m := runMarked(t, prog, frame)
		if ret != offload.ActionPass || m != (offload.Mark{Pending: pd, Seq: i}) {
			t.Fatalf("pending frame %d: action %d, mark %+v; want pass, %+v seq %d", i, ret, m, pd, i)
		}
	}
	if n, ok := prog.Punted(pd); !ok || n != 3 {
		t.Fatalf("Punted = %d, %v; want 3, true", n, ok)
	}
	if ok, err := prog.Activate(e, vs, oc, pd, 2); ok || err != nil {
		t.Fatalf("Activate with a stale count: %v %v", ok, err)
	}
	if ret, _ := runMarked(t, prog, frame); ret != offload.ActionPass {
		t.Fatal("taken before activation")
	}
	if ok, err := prog.Activate(e, vs, oc, pd, 4); !ok || err != nil {
		t.Fatalf("Activate: %v %v", ok, err)
	}
	if _, ok := prog.Punted(pd); ok {
		t.Fatal("still pending after Activate")
	}
	if ret, m := runMarked(t, prog, frame); ret != offload.ActionRedirect || m.Seq != 0 {
		t.Fatalf("after activation: action %d mark %+v; want redirect", ret, m)
	}
	st, err := prog.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got := st[offload.PortA].Punts[offload.PuntPending]; got != 4 {
		t.Errorf("pending punts %d, want 4", got)
	}
	var u offload.Usage
	if ok, err := prog.TakeBackUsage(e, &u); !ok || err != nil || u.Packets[0] != 1 {
		t.Fatalf("TakeBack: %v %v %+v", ok, err, u)
	}

	// A pending offer taken back (cancelled) changes nothing in e.
	pd, err = prog.OfferPending(e, vs, oc)
	if err != nil {
		t.Fatal(err)
	}
	before := e.Conn
	before.Expires++
	e.Conn.Expires = before.Expires
	if _, m := runMarked(t, prog, frame); m.Seq != 1 || m.Pending != pd {
		t.Fatalf("mark %+v", m)
	}
	if ok, err := prog.TakeBack(e); !ok || err != nil {
		t.Fatalf("TakeBack pending: %v %v", ok, err)
	}
	if e.Conn != before {
		t.Fatal("TakeBack of a pending offer changed the entry")
	}
	if ret, m := runMarked(t, prog, frame); ret != offload.ActionPass || m.Seq != 0 {
		t.Fatalf("after cancel: action %d mark %+v", ret, m)
	}
}
