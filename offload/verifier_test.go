package offload

import (
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/statewire/statewire/internal/testenv"
)

// verifierBudget bounds the instructions the kernel's verifier may process
// for statewire_xdp (its limit is 1 000 000: above it the program does not
// load and there is no fast path). The program needed 64 431 on Linux 6.18
// with clang-14 when this was set (627 206 before lock_flow_spin and
// tcp_opt became global functions); about twice that leaves room for
// another kernel or compiler, and a change that makes the verifier's work
// explode (a bounded loop inlined where many paths meet, per-path state
// that does not prune) fails here instead of on a machine where the
// program no longer loads.
const verifierBudget = 130_000

var (
	reProcessed = regexp.MustCompile(`processed (\d+) insns`)
	reVerifyUS  = regexp.MustCompile(`verification time (\d+) usec`)
)

// TestVerifierBudget loads each port's program as Load does, with the
// verifier's statistics (ebpf.LogLevelStats), logs what the verifier did
// and how long it took, and fails when it processed more than
// verifierBudget instructions.
func TestVerifierBudget(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "loading XDP programs needs root")
	}
	p := &Program{opts: Options{Queues: DefaultQueues, MaxFlows: DefaultMaxFlows}}
	for port := range 2 {
		spec, err := p.portSpec(port)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
			Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats},
		})
		wall := time.Since(start)
		if err != nil {
			t.Fatalf("port %d: %v", port, err)
		}
		log := coll.Programs["statewire_xdp"].VerifierLog
		coll.Close()
		m := reProcessed.FindStringSubmatch(log)
		if m == nil {
			t.Fatalf("port %d: no instruction count in the verifier's log:\n%s", port, log)
		}
		n, _ := strconv.Atoi(m[1])
		verify := "?"
		if m := reVerifyUS.FindStringSubmatch(log); m != nil {
			us, _ := strconv.Atoi(m[1])
			verify = (time.Duration(us) * time.Microsecond).String()
		}
		t.Logf("port %d: verifier processed %d instructions (budget %d, kernel limit 1000000) in %s (load %s):\n%s",
			port, n, verifierBudget, verify, wall.Round(time.Millisecond), log)
		if n > verifierBudget {
			t.Errorf("port %d: the verifier processed %d instructions, budget %d: a change to offload.c made "+
				"verifying it far more work (look for a bounded loop or a branch-heavy block inlined where "+
				"many paths meet: make it a global function, see lock_flow_spin and tcp_opt)", port, n, verifierBudget)
		}
	}
}
