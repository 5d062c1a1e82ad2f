package offload_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

// TestFailOpenNoWorker runs the program on frames of a queue without a
// socket (no worker registered): with fail-open it redirects them to the
// other port's DEVMAP slot and counts them per ingress port; closed, they
// get the miss action and are not counted. A frame of an offered flow is
// still taken by the fast path (counted there, not as fail-open). Slow-only
// (--offload=off) behaves the same.
func TestFailOpenNoWorker(t *testing.T) {
	lab.RequireRoot(t)
	frame := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("q"))
	for _, slow := range []bool{false, true} {
		for _, open := range []bool{false, true} {
			t.Run(fmt.Sprintf("slow-only=%v/open=%v", slow, open), func(t *testing.T) {
				prog := load(t, offload.Options{MaxFlows: 16, SlowOnly: slow, FailOpen: open})
				if err := prog.SetPorts(1, 1); err != nil {
					t.Fatal(err)
				}
				want := uint32(offload.ActionDrop)
				if open {
					want = offload.ActionRedirect
				}
				for port := range 2 {
					for range 3 {
						ret, err := prog.EBPF(port).Run(&ebpf.RunOptions{Data: frame})
						if err != nil {
							t.Fatal(err)
						}
						if ret != want {
							t.Fatalf("port %d: action got %d, want %d", port, ret, want)
						}
					}
				}
				fo, err := prog.FailOpen()
				if err != nil {
					t.Fatal(err)
				}
				var wantN uint64
				if open {
					wantN = 3
				}
				for port := range 2 {
					if fo[port].Packets != wantN || fo[port].Bytes != wantN*uint64(len(frame)) {
						t.Errorf("port %d fail-open counters got %+v, want %d frames of %d bytes", port, fo[port], wantN, len(frame))
					}
				}
				// Switching the mode at run time (the next process's
				// choice) takes effect at once.
				if err := prog.SetFailOpen(!open); err != nil {
					t.Fatal(err)
				}
				ret, _ := prog.EBPF(offload.PortA).Run(&ebpf.RunOptions{Data: frame})
				if (ret == offload.ActionRedirect) == open {
					t.Errorf("after SetFailOpen(%v): action got %d", !open, ret)
				}
				if slow {
					return
				}
				if err := prog.SetFailOpen(true); err != nil {
					t.Fatal(err)
				}
				e, vs, oc := udpFlow(t, prog, frame, offload.PortA)
				if err := prog.Offer(e, vs, oc); err != nil {
					t.Fatal(err)
				}
				before, _ := prog.FailOpen()
				if ret, _ := prog.EBPF(offload.PortA).Run(&ebpf.RunOptions{Data: frame}); ret != offload.ActionRedirect {
					t.Fatalf("offered flow: action got %d, want redirect", ret)
				}
				after, _ := prog.FailOpen()
				st, _ := prog.Stats()
				if after != before || st[offload.PortA].FastPackets != 1 {
					t.Errorf("offered flow: fail-open %+v -> %+v, fast packets %d; want the fast path to take it", before, after, st[offload.PortA].FastPackets)
				}
			})
		}
	}
}

// TestPinAdoptRevoke loads a fail-open program pinned in a lab-named
// bpffs directory, attaches it to both ports, offers a flow, and lets go
// of it as a killed process would (Close keeps the pins in fail-open
// mode): the program stays attached. A second Load with the same
// directory adopts the maps (the flow is still there, the fail-open
// counters carry over) and the links (the program is replaced in place);
// RevokeAdopted empties the flow map. Closed mode then removes every pin
// and detaches; DetachPinned finds nothing left.
func TestPinAdoptRevoke(t *testing.T) {
	l := lab.NewT(t, lab.Options{Bare: true})
	dir, err := offload.PinDir(l.Prefix + "-unit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { offload.DetachPinned(dir) })
	frame := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("q"))
	var logs []string
	logf := func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)); t.Logf(f, a...) }

	first, err := offload.Load(offload.Options{MaxFlows: 16, Pin: dir, FailOpen: true, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	var idx [2]int
	err = l.Do(l.BridgeNS, func() error {
		for i, n := range []string{l.PortA, l.PortB} {
			ifc, err := netInterface(n)
			if err != nil {
				return err
			}
			idx[i] = ifc
		}
		if err := first.SetPorts(idx[0], idx[1]); err != nil {
			return err
		}
		for i, n := range []string{l.PortA, l.PortB} {
			if err := first.Attach(i, n, offload.Native); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		first.Close()
		t.Fatal(err)
	}
	e, vs, oc := udpFlow(t, first, frame, offload.PortA)
	if err := first.Offer(e, vs, oc); err != nil {
		t.Fatal(err)
	}
	first.EBPF(offload.PortB).Run(&ebpf.RunOptions{Data: frame}) // B: no verdict for B -> slow path -> fail-open
	firstID, _ := attachedID(t, l, l.PortA)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"link_a", "link_b", "flows", "xsks_a", "fail_open_stats"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("after Close in fail-open mode: pin %s: %v", f, err)
		}
	}
	if id, att := attachedID(t, l, l.PortA); !att || id != firstID {
		t.Fatalf("after Close in fail-open mode: program on %s got %d (attached %v), want %d still attached", l.PortA, id, att, firstID)
	}

	second, err := offload.Load(offload.Options{MaxFlows: 16, Pin: dir, FailOpen: true, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if !second.Adopted() {
		t.Fatalf("second Load did not adopt the pinned maps; log %q", logs)
	}
	if fo, _ := second.FailOpen(); fo[offload.PortB].Packets != 1 {
		t.Errorf("adopted fail-open counters got %+v, want 1 frame from port B", fo)
	}
	err = l.Do(l.BridgeNS, func() error {
		for i, n := range []string{l.PortA, l.PortB} {
			if err := second.Attach(i, n, offload.Native); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if id, att := attachedID(t, l, l.PortA); !att || id == firstID {
		t.Errorf("after adoption: program on %s got %d (attached %v), want this run's, not %d", l.PortA, id, att, firstID)
	}
	n, err := second.RevokeAdopted()
	if err != nil || n != 1 {
		t.Errorf("RevokeAdopted got %d, %v; want the 1 flow the first run offered", n, err)
	}
	kb, vb := make([]byte, second.FlowMap().KeySize()), make([]byte, second.FlowMap().ValueSize())
	if it := second.FlowMap().Iterate(); it.Next(kb, vb) {
		t.Errorf("flow map not empty after RevokeAdopted")
	}

	// A closed-mode start adopts and removes the pins: nothing outlives it.
	second.Close()
	third, err := offload.Load(offload.Options{MaxFlows: 16, Pin: dir, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	err = l.Do(l.BridgeNS, func() error {
		for i, n := range []string{l.PortA, l.PortB} {
			if err := third.Attach(i, n, offload.Native); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		third.Close()
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("closed mode after attach: %s got %v, want it gone", dir, err)
	}
	if err := third.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{l.PortA, l.PortB} {
		if id, att := attachedID(t, l, n); att {
			t.Errorf("after closed-mode Close: program %d still on %s", id, n)
		}
	}
	if _, err := offload.DetachPinned(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("DetachPinned after closed mode got %v, want ErrNotExist", err)
	}
}

func netInterface(name string) (int, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return ifc.Index, nil
}

func attachedID(t *testing.T, l *lab.Lab, ifname string) (uint32, bool) {
	t.Helper()
	var att bool
	var id uint32
	err := l.Do(l.BridgeNS, func() (err error) {
		att, id, err = offload.XDPAttached(ifname)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id, att
}

// TestPinKeepAdopted: a run offers two flows, one active and one still
// pending, and goes away (fail-open Close). The next Load adopts the map
// and, as with a connection table carried over, keeps it: the active flow
// stays in the fast path (its frames are still taken), the pending one is
// cancelled (nobody would activate it); new offers get other slots, so the
// kept flow is still taken after them, and it can be taken back as usual.
func TestPinKeepAdopted(t *testing.T) {
	l := lab.NewT(t, lab.Options{Bare: true})
	dir, err := offload.PinDir(l.Prefix + "-keep")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { offload.DetachPinned(dir) })
	attach := func(p *offload.Program) {
		t.Helper()
		err := l.Do(l.BridgeNS, func() error {
			for i, n := range []string{l.PortA, l.PortB} {
				if err := p.Attach(i, n, offload.Native); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			p.Close()
			t.Fatal(err)
		}
	}
	active := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("a"))
	pending := packettest.UDP4("198.18.0.1", "198.19.0.1", 4001, 53, []byte("p"))
	later := packettest.UDP4("198.18.0.1", "198.19.0.1", 4002, 53, []byte("l"))

	first, err := offload.Load(offload.Options{MaxFlows: 4, Pin: dir, FailOpen: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
	attach(first)
	ea, vsa, oc := udpFlow(t, first, active, offload.PortA)
	if err := first.Offer(ea, vsa, oc); err != nil {
		t.Fatal(err)
	}
	ep, vsp, ocp := udpFlow(t, first, pending, offload.PortA)
	if _, err := first.OfferPending(ep, vsp, ocp); err != nil {
		t.Fatal(err)
	}
	first.Close()

	second, err := offload.Load(offload.Options{MaxFlows: 4, Pin: dir, FailOpen: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	attach(second)
	if !second.Adopted() {
		t.Fatal("the pinned maps were not adopted")
	}
	// While second runs, nobody else may take the bridge over or remove it.
	if p, err := offload.Load(offload.Options{MaxFlows: 4, Pin: dir, FailOpen: true}); err == nil || !strings.Contains(err.Error(), "served by another running statewire") {
		if p != nil {
			p.Close()
		}
		t.Errorf("Load while another run holds %s got %v, want a refusal", dir, err)
	}
	if _, err := offload.DetachPinned(dir); err == nil || !strings.Contains(err.Error(), "held by a running statewire") {
		t.Errorf("DetachPinned while a run holds %s got %v, want a refusal", dir, err)
	}
	var asked []offload.AdoptedFlow
	n, removed, err := second.KeepAdopted(func(f *offload.AdoptedFlow) bool {
		asked = append(asked, *f)
		return true
	})
	if err != nil || n != 1 || removed != 1 {
		t.Fatalf("KeepAdopted got %d kept, %d removed, %v; want the 1 active flow kept, the pending one removed", n, removed, err)
	}
	if len(asked) != 2 {
		t.Fatalf("KeepAdopted asked about %d flows; want 2 (the active one, the pending one)", len(asked))
	}
	for _, f := range asked {
		want, vs := ea.Key(), vsa
		if f.Pending {
			want, vs = ep.Key(), vsp
		}
		if f.Key != want || f.Verdicts != vs {
			t.Errorf("KeepAdopted asked about %+v (pending %v); want key %v, verdicts %v", f, f.Pending, want, vs)
		}
	}
	if fit, err := second.OfferedAs(ea, vsa, oc); fit != offload.FitSame || err != nil {
		t.Errorf("OfferedAs(the kept flow, its verdicts) = %v, %v; want FitSame", fit, err)
	}
	if fit, _ := second.OfferedAs(ea, [2]uint8{vsa[1], vsa[0]}, oc); fit != offload.FitOther {
		t.Errorf("OfferedAs with other verdicts = %v; want FitOther", fit)
	}
	// Another connection with the same key (created at another time), or
	// the entry in another state, is not the flow the map holds.
	other := *ea
	other.Conn.TCP.LastSeq++ // UDP: the creation time's high word
	if fit, _ := second.OfferedAs(&other, vsa, oc); fit != offload.FitNone {
		t.Errorf("OfferedAs of an entry created at another time = %v; want FitNone", fit)
	}
	other = *ea
	other.Conn.Status ^= statemachine.StatusSeenReply
	if fit, _ := second.OfferedAs(&other, vsa, oc); fit != offload.FitNone {
		t.Errorf("OfferedAs of an entry with another status = %v; want FitNone", fit)
	}
	strict := *oc.Conntrack
	strict.Timeouts.UDP++
	if fit, _ := second.OfferedAs(ea, vsa, offload.OfferConfig{Conntrack: &strict, VerifyChecksum: oc.VerifyChecksum}); fit != offload.FitOther {
		t.Errorf("OfferedAs under another UDP timeout = %v; want FitOther", fit)
	}
	taken := func(frame []byte) bool {
		st0, _ := second.Stats()
		second.EBPF(offload.PortA).Run(&ebpf.RunOptions{Data: frame})
		st1, _ := second.Stats()
		return st1[offload.PortA].FastPackets == st0[offload.PortA].FastPackets+1
	}
	if !taken(active) {
		t.Errorf("kept flow: its frame was not taken by the fast path")
	}
	if taken(pending) {
		t.Errorf("cancelled pending flow: its frame was taken")
	}
	// Three free slots: fill them; none may be the kept flow's.
	el, vsl, ocl := udpFlow(t, second, later, offload.PortA)
	if err := second.Offer(el, vsl, ocl); err != nil {
		t.Fatal(err)
	}
	ep2, vsp2, ocp2 := udpFlow(t, second, pending, offload.PortA)
	if err := second.Offer(ep2, vsp2, ocp2); err != nil {
		t.Fatal(err)
	}
	if !taken(active) || !taken(later) || !taken(pending) {
		t.Errorf("after new offers: kept %v, later %v, re-offered %v; want all taken", taken(active), taken(later), taken(pending))
	}
	var u offload.Usage
	if ok, err := second.TakeBackUsage(ea, &u); !ok || err != nil || u.Packets[0] != 2 {
		t.Errorf("TakeBack of the kept flow got %v, %v, %d packets; want ok with the 2 taken by this run", ok, err, u.Packets[0])
	}
}
