package perf

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
)

// TestThreadNAPI: the CPS endpoints' veths get NAPI threads pinned to the
// CPU asked, so their XDP work does not run on the device's CPU.
func TestThreadNAPI(t *testing.T) {
	lab.RequireRoot(t)
	l := lab.NewT(t, lab.Options{})
	p, err := openCPS(testAddrsOf(l), l.LeftNS, l.LeftIf, l.RightNS, l.RightIf, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	for _, cpu := range []int{1, 0} {
		if err := threadNAPI(l, l.LeftNS, l.LeftIf, cpu, 0); err != nil {
			t.Fatal(err)
		}
		pids, err := napiThreads(l.LeftIf)
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) == 0 {
			t.Fatalf("no napi/%s-* thread after threadNAPI", l.LeftIf)
		}
		for _, pid := range pids {
			if got := allowedCPUs(t, pid); got != strconv.Itoa(cpu) {
				t.Errorf("NAPI thread %d of %s may run on CPUs %q, want %d", pid, l.LeftIf, got, cpu)
			}
		}
	}
	// The right host's veth was not asked: no thread of its own.
	if pids, err := napiThreads(l.RightIf); err != nil || len(pids) != 0 {
		t.Errorf("NAPI threads %v (%v) for %s, which was not threaded", pids, err, l.RightIf)
	}
	if err := threadNAPI(l, l.LeftNS, "sw-no-such", 0, 0); err == nil {
		t.Error("threadNAPI of a missing interface: no error")
	}
}

func testAddrsOf(l *lab.Lab) cpsAddrs {
	return cpsAddrs{clientMAC: l.LeftMAC, serverMAC: l.RightMAC, client: lab.LeftIPv4.Addr(), server: lab.RightIPv4.Addr()}
}

// allowedCPUs returns Cpus_allowed_list of pid.
func allowedCPUs(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Cpus_allowed_list for pid %d", pid)
	return ""
}

func TestAddDrops(t *testing.T) {
	sum := map[string]uint64{}
	for _, line := range []string{
		"cpu=0    found=1 new=2 invalid=0",
		"drops port=sw1-a malformed=0 rule=727 tx_ring_full=338532 handoff_full=0",
		"drops port=sw1-b malformed=1 rule=6136 tx_ring_full=23806 handoff_full=0",
		"drops port=",
		"drops port=sw1-c broken=x",
	} {
		addDrops(sum, line)
	}
	want := map[string]uint64{"malformed": 1, "rule": 727 + 6136, "tx_ring_full": 338532 + 23806, "handoff_full": 0}
	if len(sum) != len(want) {
		t.Errorf("got %v, want %v", sum, want)
	}
	for k, v := range want {
		if sum[k] != v {
			t.Errorf("%s = %d, want %d", k, sum[k], v)
		}
	}
}

// TestReportTableCPSOnly: a CPS-only report has no floods' header and no
// latency line, and says where the time and the drops went per trial.
func TestReportTableCPSOnly(t *testing.T) {
	r := &Report{
		Date: time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), Kernel: "6.18", CPUs: 2, TrialSeconds: 1,
		LatencyIntervalUs: 100, CPSComplete: 0.995, CPSTrialSeconds: 1,
		CPSGenerator: &CPSTrial{Completed: 1e6, Ratio: 1},
		CPS: []CPSResult{
			{Device: "statewire-offload-off",
				Overload: CPSTrial{Offered: 2e5, Completed: 7e4, Ratio: 0.35, CPUs: []CPUSplit{{CPU: 0, Softirq: 0.2}, {CPU: 1, Idle: 0.05}},
					DeviceDrops: map[string]uint64{"kernel_rx_ring_full": 12, "rule": 3}},
				Best: CPSTrial{Completed: 5e4, Ratio: 0.999, CPUs: []CPUSplit{{CPU: 0, Idle: 0.5}, {CPU: 1, Idle: 0.25}}}},
			{Device: KernelBridgeCT, Best: CPSTrial{Completed: 2.5e4, Ratio: 1}},
		},
	}
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, bad := range []string{"frame   flows", "latency trials"} {
		if strings.Contains(out, bad) {
			t.Errorf("CPS-only table has %q:\n%s", bad, out)
		}
	}
	for _, want := range []string{
		"statewire-offload-off     200000      70000     0.9990      50000        -   2.00x\n",
		"kernel-bridge-ct               0          0     1.0000      25000        -   1.00x\n",
		"  statewire-offload-off at CPS   cpu0 busy  50% (softirq  0%) cpu1 busy  75% (softirq  0%)\n",
		"  statewire-offload-off overload cpu0 busy 100% (softirq 20%) cpu1 busy  95% (softirq  0%); statewire dropped kernel_rx_ring_full=12 rule=3\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q; got:\n%s", want, out)
		}
	}
}
