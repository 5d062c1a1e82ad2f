package offload_test

import (
	"testing"

	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet/packettest"
)

// BenchmarkProgram measures the program per frame under BPF_PROG_RUN
// (kernel time per run, as the kernel reports it): a taken 64-byte UDP
// frame, a taken 1500-byte one with and without checksum verification, and
// a punted frame (flow not offered).
func BenchmarkProgram(b *testing.B) {
	for _, bc := range []struct {
		name    string
		payload int
		verify  bool
		offer   bool
	}{
		{"taken-64B", 18, true, true},
		{"taken-1500B-csum", 1472, true, true},
		{"taken-1500B-nocsum", 1472, false, true},
		{"punted-miss-64B", 18, true, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			prog := loadB(b, offload.Options{MaxFlows: 1024, PassOnMiss: true})
			if err := prog.SetPorts(1, 1); err != nil {
				b.Fatal(err)
			}
			frame := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, make([]byte, bc.payload))
			if bc.offer {
				e, vs, oc := udpFlowB(b, prog, frame)
				oc.VerifyChecksum = bc.verify
				if err := prog.Offer(e, vs, oc); err != nil {
					b.Fatal(err)
				}
			}
			ret, d, err := prog.EBPF(offload.PortA).Benchmark(frame, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			want := uint32(offload.ActionRedirect)
			if !bc.offer {
				want = offload.ActionPass
			}
			if ret != want {
				b.Fatalf("action %d, want %d", ret, want)
			}
			b.ReportMetric(float64(d.Nanoseconds()), "ns/frame")
			b.ReportMetric(1e9/float64(d.Nanoseconds())/1e6, "Mpps")
		})
	}
}
