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

// fixtureDifference is a packet whose label from the live kernel may
// differ from the committed kernel-states fixture, for a reason
// CONFORMANCE.md gives in Section.
type fixtureDifference struct {
	Inject  bool   // with Options.InjectFragments
	Capture string // file name in shared/pcaps
	Packet  int    // 1-based
	Fixture string // the fixture's label
	Kernel  string // the live kernel's
	Section string // the CONFORMANCE.md section that explains it
}

// kernelFixtureDifferences are all the differences TestKernelStatesAll
// accepts, in both helper modes. The fixtures were made without injecting
// fragments, as the oracle runs by default: that method must reproduce
// them exactly. Injected, the kernel reassembles the fragmented NFS writes
// and tracks them, so the server's replies are ESTABLISHED, not NEW.
var kernelFixtureDifferences = []fixtureDifference{
	{true, "ipv4-frag-udp-nfs.pcap", 29, "NEW", "ESTABLISHED", "Known differences › Fragments"},
	{true, "ipv4-frag-udp-nfs.pcap", 41, "NEW", "ESTABLISHED", "Known differences › Fragments"},
	{true, "ipv4-frag-udp-nfs.pcap", 51, "NEW", "ESTABLISHED", "Known differences › Fragments"},
}

// TestKernelStatesAll replays every capture through the kernel, with and
// without helpers, as the fixtures were made and with fragments injected,
// and compares every packet's label with the committed fixtures. Any
// difference not in kernelFixtureDifferences fails, and so does a listed
// one that no longer occurs. A capture that differs is replayed once more
// with a 2 s wait per packet before it counts, so that a packet a loaded
// machine forwarded after the 200 ms wait is not taken for a DROPPED one.
func TestKernelStatesAll(t *testing.T) {
	lab.RequireRoot(t)
	if testing.Short() {
		t.Skip("replays every capture four times; skipped with -short")
	}
	ctx := context.Background()
	pcaps, err := filepath.Glob(filepath.Join(testenv.Pcaps(t), "*.pcap*"))
	if err != nil || len(pcaps) == 0 {
		t.Fatalf("no captures in %s: %v", testenv.Pcaps(t), err)
	}
	for _, mode := range []struct {
		dir             string
		helpers, inject bool
	}{{"nohelper", false, false}, {"helpers", true, false}, {"nohelper", false, true}, {"helpers", true, true}} {
		name := mode.dir
		if mode.inject {
			name += "/inject-fragments"
		}
		t.Run(name, func(t *testing.T) {
			o, err := NewOracle(ctx, Options{Helpers: mode.helpers, InjectFragments: mode.inject})
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			seen := map[fixtureDifference]bool{}
			total, agreeAll := 0, 0
			for _, p := range pcaps {
				capture := filepath.Base(p)
				want := testenv.KernelStates(t, mode.dir, capture)
				start := time.Now()
				got, err := o.States(ctx, p)
				if n := unlisted(mode.inject, capture, got, want); err == nil && n > 0 {
					wait := o.opts.Wait
					o.opts.Wait = 2 * time.Second
					t.Logf("%s: %d packets differ unexpectedly; replaying with a %v wait", capture, n, o.opts.Wait)
					got, err = o.States(ctx, p)
					o.opts.Wait = wait
				}
				if err != nil {
					t.Errorf("%s: %v", capture, err)
					continue
				}
				diffs := differences(got, want)
				total += len(want)
				agreeAll += len(want) - len(diffs)
				t.Logf("%-50s %4d/%-4d %v", capture, len(want)-len(diffs), len(want), time.Since(start).Round(time.Millisecond))
				for _, i := range diffs {
					d := fixtureDifference{mode.inject, capture, i + 1, want[i], labelAt(got, i), ""}
					if sec, ok := listedDifference(d); ok {
						d.Section = sec
						seen[d] = true
						t.Logf("    #%d: kernel %s, fixture %s (CONFORMANCE.md, %s)", d.Packet, d.Kernel, d.Fixture, sec)
						continue
					}
					t.Errorf("%s #%d: kernel %s, fixture %s: a difference CONFORMANCE.md does not list (kernelFixtureDifferences)", capture, d.Packet, d.Kernel, d.Fixture)
				}
				if len(got) != len(want) {
					t.Errorf("%s: got %d labels, want %d", capture, len(got), len(want))
				}
			}
			t.Logf("%s: %d/%d packets agree with the fixtures", name, agreeAll, total)
			for _, d := range kernelFixtureDifferences {
				if d.Inject == mode.inject && !seen[d] {
					t.Errorf("%s #%d: listed difference (kernel %s, fixture %s; CONFORMANCE.md, %s) no longer occurs: remove it from kernelFixtureDifferences and CONFORMANCE.md",
						d.Capture, d.Packet, d.Kernel, d.Fixture, d.Section)
				}
			}
		})
	}
}

// differences returns the indexes of want whose label in got differs (or
// is missing).
func differences(got, want []string) []int {
	var out []int
	for i := range want {
		if labelAt(got, i) != want[i] {
			out = append(out, i)
		}
	}
	return out
}

// unlisted counts the packets whose labels differ and are not in
// kernelFixtureDifferences.
func unlisted(inject bool, capture string, got, want []string) int {
	n := 0
	for _, i := range differences(got, want) {
		if _, ok := listedDifference(fixtureDifference{inject, capture, i + 1, want[i], labelAt(got, i), ""}); !ok {
			n++
		}
	}
	return n
}

// labelAt returns got[i], or "<missing>".
func labelAt(got []string, i int) string {
	if i < len(got) {
		return got[i]
	}
	return "<missing>"
}

// listedDifference reports whether d (Section ignored) is in
// kernelFixtureDifferences, and its section.
func listedDifference(d fixtureDifference) (string, bool) {
	for _, l := range kernelFixtureDifferences {
		if l.Inject == d.Inject && l.Capture == d.Capture && l.Packet == d.Packet && l.Fixture == d.Fixture && l.Kernel == d.Kernel {
			return l.Section, true
		}
	}
	return "", false
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
