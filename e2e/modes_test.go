package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/ring"
)

// TestGenericAttach: the datapath works with the XDP program in generic
// (skb) mode too.
func TestGenericAttach(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores, Attach: offload.Generic})
		for _, tc := range []struct{ ns, to string }{{r.Lab.LeftNS, rightIP.String()}, {r.Lab.RightNS, leftIP.String()}} {
			if ok, out := pingAccounted(t, r.Lab, tc.ns, tc.to, 2); !ok {
				t.Errorf("ping from %s got %q, want 2 received", tc.ns, out)
			}
		}
	})
}

// TestZeroCopyRefused: veth has no zero-copy AF_XDP, so --xdp-mode zerocopy
// must fail at Start with ring.ErrZeroCopy and leave nothing attached.
func TestZeroCopyRefused(t *testing.T) {
	l := lab.NewT(t, lab.Options{Queues: 2})
	cfg := bridge.DefaultDatapathConfig()
	cfg.PortA, cfg.PortB = l.PortA, l.PortB
	cfg.Queues = 2
	cfg.XDPMode = ring.ModeZeroCopy
	dp, err := bridge.NewDatapath(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = l.Do(l.BridgeNS, dp.Start)
	if !errors.Is(err, ring.ErrZeroCopy) {
		t.Fatalf("Start with zerocopy on veth got %v, want ring.ErrZeroCopy", err)
	}
	if err := l.CheckNoXDP(); err != nil {
		t.Errorf("after a failed Start: %v", err)
	}
}

// threadsPinnedTo counts this process's threads whose affinity is exactly
// the CPU list want (as /proc prints it, e.g. "1").
func threadsPinnedTo(t *testing.T, want string) int {
	t.Helper()
	dirs, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", d.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok && strings.TrimSpace(v) == want {
				n++
			}
		}
	}
	return n
}

// TestPinnedWorkers: with CPUs set, each worker's thread runs on its CPU
// only, and traffic flows.
func TestPinnedWorkers(t *testing.T) {
	if runtime.NumCPU() < 2 {
		testenv.Unavailable(t, "needs 2 CPUs")
	}
	forEachCores(t, func(t *testing.T, cores int) {
		cpus := []int{1, 0}[:cores]
		r := e2etest.Start(t, e2etest.Options{Cores: cores, CPUs: cpus})
		if ok, out := r.Lab.Ping(r.Lab.LeftNS, rightIP.String(), 2); !ok {
			t.Fatalf("ping got %q, want 2 received", out)
		}
		for _, cpu := range cpus {
			if n := threadsPinnedTo(t, strconv.Itoa(cpu)); n != 1 {
				t.Errorf("threads pinned to CPU %d got %d, want 1 (its worker)", cpu, n)
			}
		}
		r.Stop(t)
		// The runtime ends the threads of goroutines that exited locked
		// soon after, not at once: wait for them to go.
		testenv.WaitFor(5*time.Second, func() bool {
			for _, cpu := range cpus {
				if threadsPinnedTo(t, strconv.Itoa(cpu)) != 0 {
					return false
				}
			}
			return true
		})
		for _, cpu := range cpus {
			if n := threadsPinnedTo(t, strconv.Itoa(cpu)); n != 0 {
				t.Errorf("after Stop: threads pinned to CPU %d got %d, want 0 (no pinned thread back in the pool)", cpu, n)
			}
		}
	})
}
