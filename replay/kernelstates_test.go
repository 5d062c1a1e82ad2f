package replay

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// ourLabel turns a pipeline result into the fixture's vocabulary.
func ourLabel(r bridge.Result) string {
	if r.Verdict == bridge.Drop && r.Drop == bridge.DropMalformed {
		return "DROPPED"
	}
	if r.State == 0 {
		return "NONE"
	}
	return r.State.String()
}

// compared reports whether a fixture label is a conntrack state we compare.
func compared(label string) bool {
	switch label {
	case "NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED", "DROPPED":
		return true
	}
	return false
}

// helperRules attaches helpers by rule the way the helpers/ fixtures were
// made: ftp on TCP 21, tftp on UDP 69, irc on TCP 6667.
const helperRules = `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp --dport 21 -j CT --helper ftp
-A PREROUTING -p udp --dport 69 -j CT --helper tftp
-A PREROUTING -p tcp --dport 6667 -j CT --helper irc
COMMIT
`

type diff struct {
	capture string
	num     int
	kernel  string
	ours    string
	detail  string
}

func runCorpus(t *testing.T, variant string) (agree, total int, diffs []diff) {
	return runCorpusWith(t, variant, corpusRun{})
}

// corpusRun varies runCorpusWith.
type corpusRun struct {
	// oneWay tags one direction of every capture with VLAN oneWayVID
	// (testenv.OneWay): what a capture point that tags one way records.
	oneWay bool
	// ignoreVLAN replays with flowtable.Config.IgnoreVLAN
	// (--vlan-zones=false).
	ignoreVLAN bool
}

// oneWayVID is the VLAN id runCorpusWith tags one direction with.
const oneWayVID = 100

// runCorpusWith is runCorpus with the capture's frames and the table
// configured by o. The labels are compared with the same fixtures: the
// kernel (br_netfilter, bridge-nf-filter-vlan-tagged=1, no zones) keys
// tagged and untagged frames alike, so a capture with one direction tagged
// has the labels of the untagged capture (conformance's
// TestOneWayTaggedKernel checks that on the live kernel).
func runCorpusWith(t *testing.T, variant string, o corpusRun) (agree, total int, diffs []diff) {
	shared := testenv.Shared(t)
	pcaps, _ := filepath.Glob(filepath.Join(shared, "pcaps", "*.pcap*"))
	if len(pcaps) == 0 {
		t.Fatal("no captures found")
	}
	sort.Strings(pcaps)
	for _, path := range pcaps {
		name := filepath.Base(path)
		states := testenv.KernelStates(t, variant, name)
		frames, err := ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s := bridge.DefaultSettings()
		s.VerifyChecksum = false
		if variant == "helpers" {
			rs, err := rules.FromText("helpers.rules", helperRules, [2]string{"A", "B"})
			if err != nil {
				t.Fatal(err)
			}
			s.Rules = rs
		}
		rp, err := New(Options{Settings: s, NoTimestamps: true, Table: flowtable.Config{IgnoreVLAN: o.ignoreVLAN}})
		if err != nil {
			t.Fatal(err)
		}
		if o.oneWay {
			data := make([][]byte, len(frames))
			for i := range frames {
				data[i] = frames[i].Data
			}
			data, tagged := testenv.OneWay(data, oneWayVID)
			for i := range frames {
				if tagged[i] {
					frames[i].Data, frames[i].WireLen = data[i], frames[i].WireLen+4
				}
			}
		}
		a, n := 0, 0
		for _, f := range frames {
			// The fixtures were made with snaplen-truncated frames padded
			// with zeros to their wire length.
			if len(f.Data) < f.WireLen {
				f.Data = append(f.Data, make([]byte, f.WireLen-len(f.Data))...)
			}
			pk := rp.Step(f)
			var want string
			if pk.Num <= len(states) {
				want = states[pk.Num-1]
			}
			if !compared(want) {
				continue
			}
			n++
			got := ourLabel(pk.Result)
			if got == want {
				a++
				continue
			}
			d := diff{capture: name, num: pk.Num, kernel: want, ours: got}
			if pk.Result.State == statemachine.StateInvalid {
				d.detail = pk.Result.Invalid.String() + "/" + pk.Result.Parse.String()
			}
			diffs = append(diffs, d)
		}
		t.Logf("%-52s %4d/%4d", name, a, n)
		agree += a
		total += n
	}
	return agree, total, diffs
}

// TestKernelStates replays every capture of the shared corpus with no
// timestamps and compares each packet's state with the one Linux gave it.
func TestKernelStates(t *testing.T) {
	for _, variant := range []string{"nohelper", "helpers"} {
		t.Run(variant, func(t *testing.T) {
			agree, total, diffs := runCorpus(t, variant)
			for _, d := range diffs {
				t.Logf("diff %s #%d: kernel %s, ours %s %s", d.capture, d.num, d.kernel, d.ours, d.detail)
			}
			t.Logf("agreement %d/%d = %.4f", agree, total, float64(agree)/float64(total))
			if total == 0 {
				t.Fatal("nothing compared")
			}
			known := readKnown(t)
			seen := map[string]bool{}
			for _, d := range diffs {
				k := d.capture + "#" + strconv.Itoa(d.num) + ":" + d.kernel + ">" + d.ours
				seen[k] = true
				if !known[k] {
					t.Errorf("%s #%d: kernel %s, statewire %s (%s): not a known difference", d.capture, d.num, d.kernel, d.ours, d.detail)
				}
			}
			for k := range known {
				if !seen[k] {
					t.Errorf("known difference %s no longer differs: remove it from testdata/known-differences.tsv and CONFORMANCE.md", k)
				}
			}
		})
	}
}

// readKnown reads testdata/known-differences.tsv: the differences from the
// kernel that CONFORMANCE.md explains.
func readKnown(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("testdata/known-differences.tsv")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) < 4 {
			t.Fatalf("known-differences.tsv: bad line %q", line)
		}
		m[f[0]+"#"+f[1]+":"+f[2]+">"+f[3]] = true
	}
	return m
}

// TestKernelStatesOneWayTagged is the asymmetric-VLAN case of issue 13:
// every capture of the corpus with one direction tagged (VLAN 100) and the
// other not. With --vlan-zones=false (IgnoreVLAN) each packet gets the
// state the kernel gave the untagged capture, exactly as without tags: the
// same differences, all known. With the default (the VLAN id is the zone)
// the two directions are two connections and the states split.
func TestKernelStatesOneWayTagged(t *testing.T) {
	key := func(d diff) string { return d.capture + "#" + strconv.Itoa(d.num) + ":" + d.kernel + ">" + d.ours }
	for _, variant := range []string{"nohelper", "helpers"} {
		t.Run(variant, func(t *testing.T) {
			_, _, plain := runCorpus(t, variant)
			want := map[string]bool{}
			for _, d := range plain {
				want[key(d)] = true
			}
			agree, total, diffs := runCorpusWith(t, variant, corpusRun{oneWay: true, ignoreVLAN: true})
			t.Logf("--vlan-zones=false, one way tagged: agreement %d/%d", agree, total)
			got := map[string]bool{}
			for _, d := range diffs {
				got[key(d)] = true
				if !want[key(d)] {
					t.Errorf("--vlan-zones=false, one way tagged: %s #%d: kernel %s, statewire %s (%s); untagged it agrees",
						d.capture, d.num, d.kernel, d.ours, d.detail)
				}
			}
			for k := range want {
				if !got[k] {
					t.Errorf("--vlan-zones=false, one way tagged: difference %s of the untagged capture is gone", k)
				}
			}

			// The default keeps the tag in the key: the tagged direction
			// and the untagged one are two connections, so the replies of
			// a handshake are not ESTABLISHED.
			zagree, ztotal, zdiffs := runCorpusWith(t, variant, corpusRun{oneWay: true})
			t.Logf("--vlan-zones=true, one way tagged: agreement %d/%d (%d differences)", zagree, ztotal, len(zdiffs))
			split := map[string]int{}
			for _, d := range zdiffs {
				if !want[key(d)] {
					split[d.capture]++
				}
			}
			for _, c := range []string{"tcp-http-handshake-data-fin.pcap", "dns-udp-query-response.pcap", "ftp-passive-pasv-download.pcap"} {
				if split[c] == 0 {
					t.Errorf("--vlan-zones=true, one way tagged: %s agrees with the kernel; want its directions split (is a direction tagged?)", c)
				}
			}
		})
	}
}
