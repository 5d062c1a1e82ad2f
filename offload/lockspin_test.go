package offload_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet/packettest"
)

// TestLockHeldPuntsBusy: a frame of an offered flow whose lock another
// holder keeps (here userspace, as Peek's fallback) makes all LOCK_TRIES
// attempts (the first in lock_flow, the rest in the global lock_flow_spin)
// and is punted with PuntBusy, the only punt counted; the flow's counters
// do not move. Once the lock is free the next frame is taken.
func TestLockHeldPuntsBusy(t *testing.T) {
	prog := load(t, offload.Options{MaxFlows: 16, PassOnMiss: true})
	if err := prog.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	frame := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, make([]byte, 18))
	e, vs, oc := udpFlow(t, prog, frame, offload.PortA)
	if err := prog.Offer(e, vs, oc); err != nil {
		t.Fatal(err)
	}
	run := func(name string, want uint32) (fast uint64, punts [offload.NumPuntReasons]uint64) {
		t.Helper()
		before, err := prog.Stats()
		if err != nil {
			t.Fatal(err)
		}
		ret, err := prog.EBPF(offload.PortA).Run(&ebpf.RunOptions{Data: frame})
		if err != nil {
			t.Fatal(err)
		}
		if ret != want {
			t.Fatalf("%s: action %d, want %d", name, ret, want)
		}
		after, err := prog.Stats()
		if err != nil {
			t.Fatal(err)
		}
		for i := range punts {
			punts[i] = after[offload.PortA].Punts[i] - before[offload.PortA].Punts[i]
		}
		return after[offload.PortA].FastPackets - before[offload.PortA].FastPackets, punts
	}
	if fast, _ := run("lock free", offload.ActionRedirect); fast != 1 {
		t.Fatalf("lock free: fast-path counter moved by %d, want 1", fast)
	}
	release, ok := prog.HoldLock(e)
	if !ok {
		t.Fatal("HoldLock: the flow is not offered")
	}
	fast, punts := run("lock held", offload.ActionPass)
	release()
	var want [offload.NumPuntReasons]uint64
	want[offload.PuntBusy] = 1
	if fast != 0 || punts != want {
		t.Fatalf("lock held: fast-path counter moved by %d, punts %v; want 0 and one PuntBusy (%v)", fast, punts, want)
	}
	if fast, _ := run("lock released", offload.ActionRedirect); fast != 1 {
		t.Fatalf("lock released: fast-path counter moved by %d, want 1", fast)
	}
	var u offload.Usage
	if ok, err := prog.TakeBackUsage(e, &u); !ok || err != nil || u.Packets[0] != 2 {
		t.Fatalf("TakeBack: %v %v, %d packets taken; want 2", ok, err, u.Packets[0])
	}
}
