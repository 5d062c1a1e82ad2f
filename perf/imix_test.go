package perf

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/statewire/statewire/lab"
)

func TestIMIXMix(t *testing.T) {
	for _, tc := range []struct {
		size int
		mean float64
		gbps float64 // at 1 Mpps
		lbl  string
	}{
		{64, 64, 0.512, "64"},
		{1518, 1518, 12.144, "1518"},
		{IMIX, (7*64 + 4*576 + 1500) / 12.0, (7*64 + 4*576 + 1500) / 12.0 * 8 / 1e3, "imix"},
	} {
		t.Run(tc.lbl, func(t *testing.T) {
			if got := MeanFrameBytes(tc.size); math.Abs(got-tc.mean) > 1e-9 {
				t.Errorf("MeanFrameBytes = %v, want %v", got, tc.mean)
			}
			if got := Gbps(1e6, tc.size); math.Abs(got-tc.gbps) > 1e-9 {
				t.Errorf("Gbps(1 Mpps) = %v, want %v", got, tc.gbps)
			}
			if got := SizeLabel(tc.size); got != tc.lbl {
				t.Errorf("SizeLabel = %q, want %q", got, tc.lbl)
			}
		})
	}
}

// TestIMIXGenerator runs the IMIX generator program 24 times and checks
// that the frames come out 7:4:1 at 64/576/1500 B with IPv4 and UDP
// lengths and a valid IPv4 checksum for their size.
func TestIMIXGenerator(t *testing.T) {
	lab.RequireRoot(t)
	_, prog := testGenerator(t, 10, false, udpLayout, newIMIXFields(macL, macR))
	in := Frame(macL, macR, 1500)
	count := map[int]int{}
	var order []int
	onCPU0(t, func() {
		for i := range 2 * imixCycle {
			// Dirty input, as a recycled live-frames page would be: the
			// program must write every length field itself.
			dirty := append([]byte(nil), in...)
			binary.BigEndian.PutUint16(dirty[offIPLen:], 0xdead)
			binary.BigEndian.PutUint16(dirty[offUDPLen:], 0xbeef)
			out := make([]byte, len(in)+256)
			opts := ebpf.RunOptions{Data: dirty, DataOut: out, Repeat: 1}
			ret, err := prog.Run(&opts)
			if err != nil {
				t.Errorf("run %d: %v", i, err)
				return
			}
			if ret != xdpTX {
				t.Errorf("run %d: action %d, want XDP_TX", i, ret)
			}
			f := opts.DataOut
			size := len(f) + 4
			count[size]++
			order = append(order, size)
			if got, want := int(binary.BigEndian.Uint16(f[offIPLen:])), len(f)-14; got != want {
				t.Errorf("run %d (%d B): IPv4 total length %d, want %d", i, size, got, want)
			}
			if got, want := int(binary.BigEndian.Uint16(f[offUDPLen:])), len(f)-34; got != want {
				t.Errorf("run %d (%d B): UDP length %d, want %d", i, size, got, want)
			}
			if fold(sum16(f[14:34], 0)) != 0xffff {
				t.Errorf("run %d (%d B): IPv4 checksum does not verify", i, size)
			}
			if !bytes.Equal(f[offMagic:offMagic+4], in[offMagic:offMagic+4]) {
				t.Errorf("run %d: magic lost", i)
			}
		}
	})
	for i, s := range IMIXSizes {
		if got, want := count[s], 2*int(imixWeights[i]); got != want {
			t.Errorf("%d B frames: %d of 24, want %d (order %v)", s, got, want, order)
		}
	}
}

func TestReportCPSAndIMIX(t *testing.T) {
	r := testReport()
	r.Results = append(r.Results, Result{Device: Statewire, FrameSize: IMIX, Flows: 1, Searched: true,
		Throughput: Trial{Offered: 2e6, Delivered: 1e6}, NDR: Trial{Delivered: 0.5e6}})
	r.CPSComplete, r.CPSTrialSeconds = 0.995, 0.2
	r.CPSGenerator = &CPSTrial{Completed: 100e3, Ratio: 1}
	r.CPS = []CPSResult{
		{Device: Statewire, Overload: CPSTrial{Target: 100e3, Offered: 100e3, Completed: 40e3, Ratio: 0.4, Done: 1},
			Best: CPSTrial{Target: 30e3, Completed: 30e3, Ratio: 1, Done: 6000}},
		{Device: KernelBridgeCT, Overload: CPSTrial{Target: 100e3, Offered: 100e3, Completed: 20e3, Ratio: 0.2, Done: 1},
			Best: CPSTrial{Target: 15e3, Completed: 15e3, Ratio: 0.996, Done: 3000}},
		{Device: KernelBridge, Overload: CPSTrial{Target: 100e3, Offered: 100e3, Completed: 99e3, Ratio: 0.999, Done: 19800},
			Best: CPSTrial{Target: 100e3, Offered: 100e3, Completed: 99e3, Ratio: 0.999, Done: 19800}},
	}
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		" imix       1  statewire ",
		"2.835", // 1 Mpps of IMIX: 354.33 B x 8 = 2.835 Gbit/s
		"mean 354.33 B",
		"endpoint ceiling (client and server directly connected, no device): 100000 conn/s",
		"statewire                 100000      40000     1.0000      30000    0.30x   2.00x",
		"kernel-bridge             100000      99000     0.9990     ≥99000",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q; got:\n%s", want, out)
		}
	}
	var s bytes.Buffer
	if err := r.WriteSVG(&s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.String(), "connections per second") || !strings.Contains(s.String(), "imix B") {
		t.Errorf("SVG lacks the CPS panel or the imix group")
	}
}
