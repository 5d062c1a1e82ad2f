package perf

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

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
		pids := napiThreads(t, l.LeftIf)
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
	if pids := napiThreads(t, l.RightIf); len(pids) != 0 {
		t.Errorf("NAPI threads %v for %s, which was not threaded", pids, l.RightIf)
	}
	if err := threadNAPI(l, l.LeftNS, "sw-no-such", 0, 0); err == nil {
		t.Error("threadNAPI of a missing interface: no error")
	}
}

func testAddrsOf(l *lab.Lab) cpsAddrs {
	return cpsAddrs{clientMAC: l.LeftMAC, serverMAC: l.RightMAC, client: lab.LeftIPv4.Addr(), server: lab.RightIPv4.Addr()}
}

// napiThreads returns the pids of the kernel threads napi/IFNAME-*.
func napiThreads(t *testing.T, ifname string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	prefix := "napi/" + ifname + "-"
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		if comm := strings.TrimSpace(string(b)); strings.HasPrefix(comm, "napi/") && strings.HasPrefix(prefix, comm) || strings.HasPrefix(comm, prefix) {
			pids = append(pids, pid)
		}
	}
	return pids
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
