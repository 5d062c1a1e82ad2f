package conformance

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

// compare returns how many labels agree and a description of the first
// few differences.
func compare(got, want []string) (agree int, diffs []string) {
	for i := range want {
		g := "<missing>"
		if i < len(got) {
			g = got[i]
		}
		if g == want[i] {
			agree++
			continue
		}
		if len(diffs) < 8 {
			diffs = append(diffs, "#"+strconv.Itoa(i+1)+": got "+g+", want "+want[i])
		}
	}
	return agree, diffs
}

// smallCaptures must match their nohelper fixtures exactly.
var smallCaptures = []string{
	"dns-udp-query-response.pcap",
	"icmp-echo-ping.pcap",
	"tcp-http-handshake-data-fin.pcap",
	"tcp-syn-ack-rst.pcap",
	"tcp-nmap-scans-null-fin-xmas.pcap",
}

func TestKernelStatesSmall(t *testing.T) {
	lab.RequireRoot(t)
	ctx := context.Background()
	o, err := NewOracle(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	for _, name := range smallCaptures {
		t.Run(name, func(t *testing.T) {
			want := testenv.KernelStates(t, "nohelper", name)
			start := time.Now()
			got, err := o.States(ctx, filepath.Join(testenv.Pcaps(t), name))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Errorf("got %d labels, want %d", len(got), len(want))
			}
			agree, diffs := compare(got, want)
			t.Logf("%d/%d agree in %v", agree, len(want), time.Since(start).Round(time.Millisecond))
			for _, d := range diffs {
				t.Error(d)
			}
		})
	}
}

// TestKernelStatesAll replays every capture, with and without helpers, and
// reports the agreement with the committed fixtures. Differences are
// logged, not failed (some depend on the exact kernel build); the test
// fails if the oracle errors or agreement drops below 99% (on Linux 6.18
// it is 100%; the margin is for a loaded machine missing a 200ms wait).
func TestKernelStatesAll(t *testing.T) {
	lab.RequireRoot(t)
	if testing.Short() {
		t.Skip("replays every capture twice; skipped with -short")
	}
	ctx := context.Background()
	pcaps, err := filepath.Glob(filepath.Join(testenv.Pcaps(t), "*.pcap*"))
	if err != nil || len(pcaps) == 0 {
		t.Fatalf("no captures in %s: %v", testenv.Pcaps(t), err)
	}
	for _, mode := range []struct {
		dir     string
		helpers bool
	}{{"nohelper", false}, {"helpers", true}} {
		t.Run(mode.dir, func(t *testing.T) {
			o, err := NewOracle(ctx, Options{Helpers: mode.helpers})
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			total, agreeAll := 0, 0
			for _, p := range pcaps {
				name := filepath.Base(p)
				want := testenv.KernelStates(t, mode.dir, name)
				start := time.Now()
				got, err := o.States(ctx, p)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					continue
				}
				agree, diffs := compare(got, want)
				total += len(want)
				agreeAll += agree
				t.Logf("%-50s %4d/%-4d %v", name, agree, len(want), time.Since(start).Round(time.Millisecond))
				for _, d := range diffs {
					t.Logf("    %s", d)
				}
			}
			t.Logf("%s: %d/%d packets agree (%.2f%%)", mode.dir, agreeAll, total, 100*float64(agreeAll)/float64(total))
			if float64(agreeAll) < 0.99*float64(total) {
				t.Errorf("agreement %d/%d, want at least 99%%", agreeAll, total)
			}
		})
	}
}

func TestKernelStatesOneShot(t *testing.T) {
	lab.RequireRoot(t)
	got, err := KernelStates(context.Background(), filepath.Join(testenv.Pcaps(t), "tcp-syn-ack-rst.pcap"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"NEW", "ESTABLISHED", "ESTABLISHED"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %v, want %v", got, want)
	}
}

// With fragments injected the kernel reassembles the NFS writes, tracks
// them, and the replies are ESTABLISHED: the difference InjectFragments
// documents.
func TestKernelStatesInjectFragments(t *testing.T) {
	lab.RequireRoot(t)
	got, err := KernelStates(context.Background(), filepath.Join(testenv.Pcaps(t), "ipv4-frag-udp-nfs.pcap"),
		Options{InjectFragments: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{29, 41, 51} {
		if got[n-1] != "ESTABLISHED" {
			t.Errorf("#%d: got %s, want ESTABLISHED (reassembled request tracked)", n, got[n-1])
		}
	}
	if got[0] != SkipFragment {
		t.Errorf("#1: got %s, want %s", got[0], SkipFragment)
	}
}
