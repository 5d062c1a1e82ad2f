package offload_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet/packettest"
)

// attachLab attaches prog to both ports of l in native mode (DEVMAP: A,
// B), gives the right host NAPI for the redirects (GRO) and the left host
// a static neighbour (ARP would go to the absent AF_XDP socket).
func attachLab(t *testing.T, l *lab.Lab, prog *offload.Program) {
	t.Helper()
	ctx := context.Background()
	err := l.Do(l.BridgeNS, func() error {
		a, err := net.InterfaceByName(l.PortA)
		if err != nil {
			return err
		}
		b, err := net.InterfaceByName(l.PortB)
		if err != nil {
			return err
		}
		if err := prog.SetPorts(a.Index, b.Index); err != nil {
			return err
		}
		if err := prog.Attach(offload.PortA, l.PortA, offload.Native); err != nil {
			return err
		}
		return prog.Attach(offload.PortB, l.PortB, offload.Native)
	})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := l.Run(ctx, l.RightNS, "ethtool", "-K", l.RightIf, "gro", "on"); err != nil {
		t.Fatalf("gro on: %v %s", err, out)
	}
	if out, err := l.Run(ctx, l.LeftNS, "ip", "neigh", "replace", "198.18.0.2", "lladdr", l.RightMAC.String(), "dev", l.LeftIf); err != nil {
		t.Fatalf("neigh: %v %s", err, out)
	}
}

// sendUDP sends n datagrams 198.18.0.1:40000 -> 198.18.0.2:9000 from l's
// left host.
func sendUDP(t *testing.T, l *lab.Lab, n int) {
	t.Helper()
	if err := l.Do(l.LeftNS, func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(198, 18, 0, 1), Port: 40000}, &net.UDPAddr{IP: net.IPv4(198, 18, 0, 2), Port: 9000})
		if err != nil {
			return err
		}
		defer c.Close()
		for range n {
			if _, err := c.Write([]byte("datagram")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// foreignRedirector is another tool's XDP program: it counts every frame
// (counter[0]) and redirects it to slot 1 of its own DEVMAP, the slot
// number statewire's port B has in its own.
func foreignRedirector(t *testing.T) (prog *ebpf.Program, devmap, counter *ebpf.Map) {
	t.Helper()
	var err error
	devmap, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.DevMap, KeySize: 4, ValueSize: 4, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { devmap.Close() })
	counter, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { counter.Close() })
	prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.XDP,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, counter.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "redirect"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.LoadMapPtr(asm.R1, devmap.FD()).WithSymbol("redirect"),
			asm.Mov.Imm(asm.R2, 1),
			asm.Mov.Imm(asm.R3, 0),
			asm.FnRedirectMap.Call(),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog, devmap, counter
}

// TestRedirectErrorsOnlyOurs: the tracing programs that count the fast
// path's redirects the kernel then dropped (PortStats.RedirectErrors) see
// every XDP redirect error of the machine, and must count only ours.
// Another tool's XDP program, in another lab (namespaces of its own),
// redirects every frame to slot 1 of its own DEVMAP, whose device is down
// (the kernel drops each: ENETDOWN, the xdp_redirect_err tracepoint, slot
// 1 as for statewire's port A -> B): statewire's counters do not move.
// Then statewire's own port B goes down: each datagram of the offered flow
// is one redirect error of port A, so the tracer was live all along.
func TestRedirectErrorsOnlyOurs(t *testing.T) {
	l := lab.NewT(t, lab.Options{})
	prog := load(t, offload.Options{MaxFlows: 64})
	if !prog.Tracing() {
		testenv.Unavailable(t, "the redirect-error tracers did not load (no kernel BTF): nothing to test")
	}
	attachLab(t, l, prog)
	frame := packettest.UDP4("198.18.0.1", "198.18.0.2", 40000, 9000, []byte("datagram"))
	e, vs, oc := udpFlow(t, prog, frame, offload.PortA)
	if err := prog.Offer(e, vs, oc); err != nil {
		t.Fatal(err)
	}
	stats := func() offload.PortStats {
		t.Helper()
		st, err := prog.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st[offload.PortA]
	}

	// Another tool, elsewhere.
	other := lab.NewT(t, lab.Options{})
	fprog, devmap, counter := foreignRedirector(t)
	if err := other.Do(other.BridgeNS, func() error {
		b, err := net.InterfaceByName(other.PortB)
		if err != nil {
			return err
		}
		for slot := range uint32(2) {
			if err := devmap.Put(slot, uint32(b.Index)); err != nil {
				return err
			}
		}
		ln, err := offload.AttachLink(fprog, other.PortA, false, nil)
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := other.Run(context.Background(), other.BridgeNS, "ip", "link", "set", other.PortB, "down"); err != nil {
		t.Fatalf("foreign port B down: %v %s", err, out)
	}
	if out, err := other.Run(context.Background(), other.LeftNS, "ip", "neigh", "replace", "198.18.0.2", "lladdr", other.RightMAC.String(), "dev", other.LeftIf); err != nil {
		t.Fatalf("neigh: %v %s", err, out)
	}
	const n = 200
	sendUDP(t, other, n)
	var redirected uint64
	if !testenv.WaitFor(5*time.Second, func() bool {
		counter.Lookup(uint32(0), &redirected)
		return redirected >= n
	}) {
		t.Fatalf("the foreign program saw %d of %d frames", redirected, n)
	}
	if ps := stats(); ps.RedirectErrors != 0 || ps.FastPackets != 0 {
		t.Fatalf("after %d redirect errors of another program: port A counts %d redirect errors, %d fast-path frames; want 0, 0",
			redirected, ps.RedirectErrors, ps.FastPackets)
	}

	// Ours: port B down, every datagram of the flow is taken by the fast
	// path and then dropped by the kernel.
	if out, err := l.Run(context.Background(), l.BridgeNS, "ip", "link", "set", l.PortB, "down"); err != nil {
		t.Fatalf("port B down: %v %s", err, out)
	}
	const k = 50
	sendUDP(t, l, k)
	var ps offload.PortStats
	testenv.WaitFor(5*time.Second, func() bool {
		ps = stats()
		return ps.RedirectErrors >= k
	})
	if ps.FastPackets != k || ps.RedirectErrors != k {
		t.Fatalf("our port B down: %d fast-path frames, %d redirect errors; want %d, %d", ps.FastPackets, ps.RedirectErrors, k, k)
	}
	t.Logf("another program's %d redirect errors not counted; our %d counted", redirected, ps.RedirectErrors)
}
