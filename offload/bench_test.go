package offload_test

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/statewire/statewire/internal/testenv"
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

// BenchmarkSlowPath compares, per frame under BPF_PROG_RUN, what
// --offload=off runs now (the program loaded slow-only) with the retired
// bridge/xdpprog program (its five instructions rebuilt here:
// bpf_redirect_map(&xsks, rx_queue_index, XDP_PASS)) and with the full
// program punting a frame of a flow not offered. The XSKMAP is empty (a
// run cannot redirect into a socket), so all three take the miss.
func BenchmarkSlowPath(b *testing.B) {
	frame := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, make([]byte, 18))
	bench := func(b *testing.B, p *ebpf.Program) {
		ret, d, err := p.Benchmark(frame, b.N, nil)
		if err != nil {
			b.Fatal(err)
		}
		if ret != offload.ActionPass {
			b.Fatalf("action %d, want pass", ret)
		}
		b.ReportMetric(float64(d.Nanoseconds()), "ns/frame")
	}
	b.Run("xdpprog", func(b *testing.B) {
		if os.Geteuid() != 0 {
			testenv.Unavailable(b, "loading XDP programs needs root")
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 64})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		insns := asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // rx_queue_index
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Imm(asm.R3, offload.ActionPass),
			asm.FnRedirectMap.Call(),
			asm.Return(),
		}
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: insns, License: "Dual MIT/GPL"})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		bench(b, p)
	})
	for _, slow := range []bool{true, false} {
		name := "slow-only"
		if !slow {
			name = "full-miss"
		}
		b.Run(name, func(b *testing.B) {
			prog := loadB(b, offload.Options{MaxFlows: 1024, PassOnMiss: true, SlowOnly: slow})
			bench(b, prog.EBPF(offload.PortA))
		})
	}
}
