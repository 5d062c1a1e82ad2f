package offload_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet/packettest"
)

// TestLabForward attaches the program to both ports of a lab in native
// mode, offers a UDP flow, and sends it from the left host: every datagram
// must reach the right host through the fast path (DEVMAP redirect), with
// the L4 checksum verified. On veth the receiving end needs NAPI for an
// XDP redirect into it: GRO on the right host's interface gives it.
func TestLabForward(t *testing.T) {
	l := lab.NewT(t, lab.Options{})
	prog := load(t, offload.Options{MaxFlows: 64})
	attachLab(t, l, prog)

	const n = 20
	got := make(chan int, 1)
	var conn *net.UDPConn
	if err := l.Do(l.RightNS, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(198, 18, 0, 2), Port: 9000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		buf := make([]byte, 2048)
		k := 0
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		for k < n {
			if _, _, err := conn.ReadFromUDP(buf); err != nil {
				break
			}
			k++
		}
		got <- k
	}()

	frame := packettest.UDP4("198.18.0.1", "198.18.0.2", 40000, 9000, []byte("hello"))
	e, vs, oc := udpFlow(t, prog, frame, offload.PortA)
	if err := prog.Offer(e, vs, oc); err != nil {
		t.Fatal(err)
	}
	if err := l.Do(l.LeftNS, func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(198, 18, 0, 1), Port: 40000}, &net.UDPAddr{IP: net.IPv4(198, 18, 0, 2), Port: 9000})
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range n {
			if _, err := c.Write([]byte(fmt.Sprintf("datagram %d", i))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if k := <-got; k != n {
		st, _ := prog.Stats()
		t.Fatalf("right host received %d of %d datagrams; stats %+v", k, n, st)
	}
	st, err := prog.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var u offload.Usage
	if ok, err := prog.Peek(e, &u); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if st[offload.PortA].FastPackets != n || u.Packets[0] != n {
		t.Errorf("fast path: %d frames, flow %d packets; want %d", st[offload.PortA].FastPackets, u.Packets[0], n)
	}
	t.Logf("%d datagrams through the fast path; flow bytes %d, last seen %v ago", n, u.Bytes[0], time.Duration(prog.Now()-u.LastSeen))
}

// TestAttachReplacesStale: a program attached through netlink (a killed
// earlier run, another tool) is replaced by Attach, which logs it; Close
// leaves nothing attached.
func TestAttachReplacesStale(t *testing.T) {
	l := lab.NewT(t, lab.Options{Bare: true})
	stale := load(t, offload.Options{MaxFlows: 16})
	var logged []string
	prog := load(t, offload.Options{MaxFlows: 16, Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
	err := l.Do(l.BridgeNS, func() error {
		nl, err := netlink.LinkByName(l.PortA)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetXdpFdWithFlags(nl, stale.EBPF(offload.PortA).FD(), unix.XDP_FLAGS_DRV_MODE); err != nil {
			return err
		}
		return prog.Attach(offload.PortA, l.PortA, offload.Native)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(logged) != 1 {
		t.Errorf("logged %q, want one replacement line", logged)
	}
	if err := prog.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Do(l.BridgeNS, func() error {
		att, id, err := offload.XDPAttached(l.PortA)
		if err == nil && att {
			err = fmt.Errorf("program id %d still attached after Close", id)
		}
		return err
	}); err != nil {
		t.Error(err)
	}
}
