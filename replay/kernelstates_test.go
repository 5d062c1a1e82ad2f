package replay

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/statewire/statewire/bridge"
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
		rp, err := New(Options{Settings: s, NoTimestamps: true})
		if err != nil {
			t.Fatal(err)
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
