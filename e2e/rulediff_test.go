package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/rules/rulegen"
)

// A random step waits barrierStepGap before its frame (the fast-path
// wire offers a flow 10 ms after it became eligible; the wait lets some
// flows reach the XDP program) and, once the barrier behind the frame is
// through, barrierGrace for the frame itself.
const (
	barrierStepGap = 12 * time.Millisecond
	barrierGrace   = 30 * time.Millisecond
)

// ruleDiffEnv reads a non-negative integer from the environment, or def.
func ruleDiffEnv(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative number", name, s)
	}
	return n
}

// TestRandomRuleSetsAgainstKernel is issue 16's random differential: for
// each seed, package rulegen writes an iptables-save file for IPv4 and one
// for IPv6 (every match and target the generator covers, with negations,
// user chains, -g, RETURN, policies, NOTRACK) and a few hundred frames in
// conversations; the kernel bridge with br_netfilter (iptables-legacy-
// restore, ip6tables-legacy-restore) and `statewire run` on the slow path
// and with the XDP fast path load the files, and every frame must meet on
// statewire the fate it met in the kernel. Seeds 1..3 by default;
// STATEWIRE_RULEDIFF_SEEDS=N runs N seeds from STATEWIRE_RULEDIFF_FIRST
// (default 1), STATEWIRE_RULEDIFF_FRAMES sets the frames per seed (120).
func TestRandomRuleSetsAgainstKernel(t *testing.T) {
	lab.RequireRoot(t)
	restore, err := exec.LookPath("iptables-legacy-restore")
	restore6, err6 := exec.LookPath("ip6tables-legacy-restore")
	if err != nil || err6 != nil {
		testenv.Unavailable(t, "iptables-legacy-restore or ip6tables-legacy-restore not found (Debian package iptables; scripts/setup.sh installs it)")
	}
	bin := lab.StatewireBinary(t)
	first := ruleDiffEnv(t, "STATEWIRE_RULEDIFF_FIRST", 1)
	seeds := ruleDiffEnv(t, "STATEWIRE_RULEDIFF_SEEDS", 3)
	frames := ruleDiffEnv(t, "STATEWIRE_RULEDIFF_FRAMES", 120)
	// STATEWIRE_RULEDIFF_FAST=0 leaves the fast-path wire out (a long run
	// on a loaded machine: about half the setup time per seed).
	fast := ruleDiffEnv(t, "STATEWIRE_RULEDIFF_FAST", 1) != 0
	var total, agree [2]int
	var failed []int
	for seed := first; seed < first+seeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			c := rulegen.Generate(rulegen.Options{Seed: uint64(seed), Frames: frames,
				HostMAC: [2][6]byte{spoofLeftMAC, spoofRightMAC}, DstMAC: spoofDstMAC})
			t.Logf("seed %d: %d frames\nIPv4 rules:\n%s\nIPv6 rules:\n%s", seed, len(c.Frames), c.Rules4, c.Rules6)
			start := time.Now()
			wires := []*spoofWire{
				kernelWire46(t, restore, c.Rules4, restore6, c.Rules6),
				statewireWire46(t, bin, c.Rules4, c.Rules6, 1, false),
			}
			if fast {
				wires = append(wires, statewireWire46(t, bin, c.Rules4, c.Rules6, 1, true))
			}
			for _, w := range wires {
				pinHostTxQueues(t, w.lab)
			}
			up := time.Since(start)
			steps := make([]spoofStep, 0, len(c.Frames)+6)
			var o fateOpts
			for i, f := range c.Frames {
				steps = append(steps, spoofStep{what: f.What, from: f.From, frame: f.Bytes})
				o.anyFate = append(o.anyFate, true)
				o.barrier = append(o.barrier, barrierFrame(f.From, uint32(seed)<<16|uint32(i)))
			}
			steps = append(steps, warmFlow()...)
			got := runFateStepsWith(t, wires, steps, fmt.Sprintf("seed %d", seed), o)
			var n, ok [2]int
			for si := range c.Frames {
				for wi := range len(wires) - 1 {
					n[wi]++
					if got[wi+1][si] == got[0][si] {
						ok[wi]++
					}
				}
			}
			for wi := range 2 {
				total[wi] += n[wi]
				agree[wi] += ok[wi]
			}
			if ok != n {
				failed = append(failed, seed)
			}
			t.Logf("seed %d: slow path %d/%d frames agree with the kernel, fast path %d/%d (wires up in %v, frames sent in %v)",
				seed, ok[0], n[0], ok[1], n[1], up.Round(time.Millisecond), (time.Since(start) - up).Round(time.Millisecond))
		})
	}
	pct := func(a, b int) float64 {
		if b == 0 {
			return 100
		}
		return 100 * float64(a) / float64(b)
	}
	t.Logf("%d seeds from %d: slow path %d/%d frames agree (%.3f%%), fast path %d/%d (%.3f%%); seeds with a difference: %v",
		seeds, first, agree[0], total[0], pct(agree[0], total[0]), agree[1], total[1], pct(agree[1], total[1]), failed)
}

// barrierFrame is a frame of an EtherType no firewall reads (0x88b5, local
// experimental): both bridges forward it untouched, and its arrival says
// the frame sent before it from the same side was judged.
func barrierFrame(side int, n uint32) []byte {
	fr := make([]byte, 60)
	copy(fr[0:6], spoofDstMAC[:])
	src := [2][6]byte{spoofLeftMAC, spoofRightMAC}[side]
	copy(fr[6:12], src[:])
	fr[12], fr[13] = 0x88, 0xb5
	copy(fr[14:], fmt.Sprintf("rulediff barrier %08x", n))
	return fr
}

// warmFlow is a UDP flow of the lab's own addresses, which the generated
// IPv4 file accepts at its first rule (cacheable): its later frames take
// the XDP fast path on the fast-path wire, which must have forwarded
// frames by the end.
func warmFlow() []spoofStep {
	var s []spoofStep
	for i := range 6 {
		fr := pt.UDP4("198.18.0.101", "198.18.0.102", 4000, 4001, []byte(fmt.Sprintf("rulediff warm %d", i)))
		copy(fr[0:6], spoofDstMAC[:])
		copy(fr[6:12], spoofLeftMAC[:])
		fr[18], fr[19] = 0x77, byte(i)
		s = append(s, spoofStep{what: fmt.Sprintf("udp 198.18.0.101:4000>198.18.0.102:4001 from A (cacheable) %d", i+1),
			frame: pt.FixChecksums(fr), leftOnly: forwarded})
	}
	return s
}

// pinHostTxQueues sends every frame a host injects through its veth's TX
// queue 0 (XPS: every CPU on tx-0, none on the others). Without it an
// AF_PACKET frame takes the queue of the CPU the sender runs on, so a
// frame and the barrier behind it could reach statewire on two RX queues
// and be judged in either order.
func pinHostTxQueues(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, h := range []struct{ ns, ifc string }{{l.LeftNS, l.LeftIf}, {l.RightNS, l.RightIf}} {
		all := (uint64(1) << runtime.NumCPU()) - 1 // this lab's hosts: NumCPU < 64
		// One TX queue (the kernel wire's hosts): nothing to pin, and the
		// kernel refuses XPS there.
		script := fmt.Sprintf(`[ -e /sys/class/net/%[1]s/queues/tx-1 ] || exit 0
		for q in /sys/class/net/%[1]s/queues/tx-*; do
			if [ "${q##*tx-}" = 0 ]; then m=%[2]x; else m=0; fi
			echo $m > $q/xps_cpus || exit 1
		done`, h.ifc, all)
		if out, err := l.Run(context.Background(), h.ns, "sh", "-c", script); err != nil {
			t.Fatalf("pin %s's TX to queue 0 (XPS): %v %s", h.ifc, err, out)
		}
	}
}
