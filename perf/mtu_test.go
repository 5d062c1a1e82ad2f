package perf

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

func TestCheckFrames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       Options
		wantErr string // "" for valid
		wantGen string
		wantMTU int
	}{
		{"default MTU, live", Options{Mode: ModeAll, FrameSizes: []int{64, 1518, IMIX}}, "", GenLive, 1500},
		{"1519 at MTU 1500", Options{Mode: ModeFlood, FrameSizes: []int{1519}}, "frame size 1519 exceeds MTU 1500: the largest frame it allows is 1518", "", 0},
		{"jumbo needs the MTU", Options{Mode: ModeFlood, FrameSizes: []int{1518, 9018}, MTU: 1500}, "use MTU 9000 or more", "", 0},
		{"jumbo: packet generator for every size", Options{Mode: ModeFlood, FrameSizes: []int{1518, 9018}, MTU: 9000}, "", GenPacket, 9000},
		{"9019 at MTU 9000", Options{Mode: ModeFlood, FrameSizes: []int{9019}, MTU: 9000}, "frame size 9019 exceeds MTU 9000", "", 0},
		{"live refuses jumbo", Options{Mode: ModeFlood, FrameSizes: []int{9018}, MTU: 9000, Generator: GenLive}, "need the packet generator", "", 0},
		{"live at its limit", Options{Mode: ModeFlood, FrameSizes: []int{LiveMaxFrame}, MTU: 9000}, "", GenLive, 9000},
		{"packet chosen", Options{Mode: ModeFlood, FrameSizes: []int{64}, Generator: GenPacket}, "", GenPacket, 1500},
		{"IMIX below MTU 1500", Options{Mode: ModeFlood, FrameSizes: []int{IMIX}, MTU: 1400}, "IMIX (frames up to 1500) exceeds MTU 1400", "", 0},
		{"IMIX with jumbo", Options{Mode: ModeFlood, FrameSizes: []int{IMIX, 9018}, MTU: 9000}, "IMIX needs the live-frames generator", "", 0},
		{"MTU too small", Options{Mode: ModeFlood, FrameSizes: []int{64}, MTU: 1000}, "MTU 1000 out of range", "", 0},
		{"MTU too large", Options{Mode: ModeFlood, FrameSizes: []int{64}, MTU: MaxMTU + 1}, "out of range", "", 0},
		{"jumbo with CPS", Options{Mode: ModeAll, FrameSizes: []int{9018}, MTU: 9000}, "connections per second are measured at MTU 1500 only", "", 0},
		{"unknown generator", Options{Mode: ModeFlood, FrameSizes: []int{64}, Generator: "pktgen"}, `generator "pktgen"`, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			err := o.checkFrames()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if o.Generator != tc.wantGen || o.MTU != tc.wantMTU {
				t.Errorf("got generator %q MTU %d, want %q MTU %d", o.Generator, o.MTU, tc.wantGen, tc.wantMTU)
			}
		})
	}
}

// xdpStats returns the sum of a veth's per-queue XDP counters named name
// ("xdp_packets", "xdp_bytes": every frame its XDP program saw, bytes of
// all its buffers) from ethtool -S.
func xdpStat(t *testing.T, l *lab.Lab, ns, ifname, name string) uint64 {
	t.Helper()
	out, err := l.Run(context.Background(), ns, "ethtool", "-S", ifname)
	if err != nil {
		t.Fatalf("ethtool -S %s: %v %s", ifname, err, out)
	}
	var sum uint64
	found := false
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasSuffix(k, "_"+name) || !strings.HasPrefix(k, "rx_queue_") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			t.Fatalf("ethtool -S %s: %q: %v", ifname, line, err)
		}
		sum += n
		found = true
	}
	if !found {
		t.Fatalf("ethtool -S %s: no rx_queue_*_%s in %s", ifname, name, out)
	}
	return sum
}

// TestJumboFrame: with MTU 9000 on every link, the packet generator sends
// 9018-byte frames (9014 bytes without FCS, an IPv4 packet of 9000) and
// statewire (fast path off: every frame a chain of AF_XDP buffers)
// forwards every one of them whole to the sink on the right host, whose
// veth counts their bytes.
func TestJumboFrame(t *testing.T) {
	lab.RequireRoot(t)
	o := QuickOptions()
	o.Mode, o.MTU, o.FrameSizes = ModeFlood, 9000, []int{MaxFrame(9000)}
	o.Statewire = lab.StatewireBinary(t)
	if err := o.checkFrames(); err != nil {
		t.Fatal(err)
	}
	if o.Generator != GenPacket {
		t.Fatalf("generator %q for 9018-byte frames, want %q", o.Generator, GenPacket)
	}
	d, err := newDevice(context.Background(), StatewireOff, &o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.close(); err != nil {
			t.Error(err)
		}
	}()
	l := d.lab
	g, err := NewGenerator(GenConfig{NS: l.LeftNS, Ifname: l.LeftIf, Src: l.LeftMAC, Dst: l.RightMAC,
		FrameSize: 9018, Flows: 4, CPU: -1, Kind: o.Generator})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// statewire attaches and starts its workers: until then frames are lost.
	if !testenv.WaitFor(20*time.Second, func() bool {
		if _, _, err := g.SendCount(10e3, 8); err != nil {
			t.Fatal(err)
		}
		c, _ := d.sink.Count()
		return c > 0
	}) {
		t.Fatalf("statewire forwarded no jumbo frame: %s", tail(d.out.String(), 800))
	}
	// Let the readiness probe's frames land before counting.
	var c0 uint64
	testenv.WaitFor(time.Second, func() bool {
		c, _ := d.sink.Count()
		stable := c == c0
		c0 = c
		return stable
	})
	p0 := xdpStat(t, l, l.RightNS, l.RightIf, "xdp_packets")
	b0 := xdpStat(t, l, l.RightNS, l.RightIf, "xdp_bytes")
	const n = 200
	sent, _, err := g.SendCount(20e3, n)
	if err != nil || sent != n {
		t.Fatalf("sent %d, %v; want %d", sent, err, n)
	}
	var c1 uint64
	testenv.WaitFor(2*time.Second, func() bool {
		c1, _ = d.sink.Count()
		return c1-c0 >= n
	})
	p := xdpStat(t, l, l.RightNS, l.RightIf, "xdp_packets") - p0
	b := xdpStat(t, l, l.RightNS, l.RightIf, "xdp_bytes") - b0
	t.Logf("sink counted %d frames; right veth's XDP saw %d frames, %d bytes", c1-c0, p, b)
	if c1-c0 != n {
		t.Errorf("sink counted %d of %d jumbo frames, want all", c1-c0, n)
	}
	// The right veth receives skbs (statewire transmits in copy mode)
	// and counts skb->len past the Ethernet header: the IPv4 packet,
	// 9000 bytes, the MTU.
	if p != n || b != n*9000 {
		t.Errorf("right host received %d frames of %s bytes past the Ethernet header, want %d frames of 9000 bytes", p, fmt.Sprint(float64(b)/float64(max(p, 1))), n)
	}
}
