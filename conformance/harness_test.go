package conformance

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

// knownDiff is one line of testdata/known-differences.tsv: a difference
// between the kernel and statewire that CONFORMANCE.md explains. mode is
// nohelper, helpers or * (both); item is a packet number (a state
// difference), "unseen:N" (packet N crossed the kernel bridge without
// conntrack) or "table" (then kernel is the entry's key and ours what
// differs).
type knownDiff struct {
	mode, capture, item string
	kernel, ours        string
}

func readKnownDiffs(t *testing.T) map[knownDiff]bool {
	t.Helper()
	f, err := os.Open("testdata/known-differences.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[knownDiff]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Split(line, "\t")
		if len(fs) < 5 {
			t.Fatalf("known-differences.tsv: bad line %q", line)
		}
		m[knownDiff{fs[0], fs[1], fs[2], fs[3], fs[4]}] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCorpusAgreement runs the differential harness over every capture of
// the shared corpus, without and with helpers, with fragments injected
// (the kernel reassembles them, as on a real wire). It prints the
// agreement table, requires ≥ 99.9% per-packet agreement per mode, and
// requires every remaining per-packet difference to be listed in
// testdata/known-differences.tsv (explained in CONFORMANCE.md), and every
// listed one to still occur.
func TestCorpusAgreement(t *testing.T) {
	lab.RequireRoot(t)
	shared := testenv.Shared(t)
	pcaps, err := filepath.Glob(filepath.Join(shared, "pcaps", "*.pcap*"))
	if err != nil || len(pcaps) == 0 {
		t.Fatalf("no captures in %s: %v", shared, err)
	}
	sort.Strings(pcaps)
	known := readKnownDiffs(t)
	seen := map[knownDiff]bool{}
	ctx := context.Background()
	for _, mode := range []struct {
		name    string
		helpers bool
	}{{"nohelper", false}, {"helpers", true}} {
		t.Run(mode.name, func(t *testing.T) {
			start := time.Now()
			h := newTestHarness(t, Options{Helpers: mode.helpers, InjectFragments: true})
			var equal, compared, tableDiffs int
			var out strings.Builder
			for _, p := range pcaps {
				r, err := h.CompareFile(ctx, p)
				if err != nil {
					t.Errorf("%s: %v", filepath.Base(p), err)
					continue
				}
				r.Write(&out)
				equal += r.Equal
				compared += r.Compared
				tableDiffs += len(r.TableDiffs)
				check := func(k knownDiff, what string) {
					all := k
					all.mode = "*"
					switch {
					case known[k]:
						seen[k] = true
					case known[all]:
						seen[all] = true
					default:
						t.Errorf("%s %s: not a known difference (add it to testdata/known-differences.tsv and CONFORMANCE.md, or fix it)", r.Capture, what)
					}
				}
				for _, d := range r.Diffs {
					check(knownDiff{mode.name, r.Capture, strconv.Itoa(d.Num), d.Kernel, d.Ours}, d.String())
				}
				for _, d := range r.Unseen {
					check(knownDiff{mode.name, r.Capture, "unseen:" + strconv.Itoa(d.Num), d.Kernel, d.Ours}, d.String())
				}
				for _, d := range r.TableDiffs {
					check(knownDiff{mode.name, r.Capture, "table", d.Key, d.What}, d.String())
				}
			}
			pct := 100 * float64(equal) / float64(max(compared, 1))
			t.Logf("agreement table (%s, fragments injected):\n%s%s: %d/%d packets agree (%.3f%%), %d final-table differences, %v",
				mode.name, out.String(), mode.name, equal, compared, pct, tableDiffs, time.Since(start).Round(time.Millisecond))
			if compared == 0 {
				t.Fatal("nothing compared")
			}
			if float64(equal) < 0.999*float64(compared) {
				t.Errorf("agreement %d/%d = %.3f%%, want ≥ 99.9%%", equal, compared, pct)
			}
		})
	}
	for k := range known {
		if !seen[k] {
			t.Errorf("known difference %+v no longer occurs: remove it from testdata/known-differences.tsv and CONFORMANCE.md", k)
		}
	}
}
