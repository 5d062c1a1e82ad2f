package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func saveString(t testing.TB, rs *RuleSet, f Family) string {
	t.Helper()
	var b strings.Builder
	if err := rs.Save(&b, f); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return b.String()
}

// TestRoundTrip loads each example file, saves it, loads the output again
// and checks the second save is identical and the rule count unchanged.
func TestRoundTrip(t *testing.T) {
	files := []struct {
		path string
		fam  Family
	}{
		{"testdata/bridge.rules", FamilyIPv4},
		{"testdata/bridge6.rules", FamilyIPv6},
		{"testdata/bridge.rules", FamilyBoth},
	}
	for _, f := range files {
		t.Run(filepath.Base(f.path)+"/"+f.fam.String(), func(t *testing.T) {
			text, err := os.ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			rs1 := mustLoad(t, string(text), f.fam)
			s1 := saveString(t, rs1, f.fam)
			rs2 := mustLoad(t, s1, f.fam)
			s2 := saveString(t, rs2, f.fam)
			if s1 != s2 {
				t.Errorf("second save differs:\n%s\nfirst:\n%s", s2, s1)
			}
			if rs1.NumRules() != rs2.NumRules() {
				t.Errorf("got %d rules after round trip, want %d", rs2.NumRules(), rs1.NumRules())
			}
			if rs1.Generation() == rs2.Generation() {
				t.Errorf("two compiles share generation %d", rs1.Generation())
			}
		})
	}
}

// TestSaveCanonical: a file already in canonical iptables-save form (zero
// counters, no comment lines) saves back byte for byte.
func TestSaveCanonical(t *testing.T) {
	text, err := os.ReadFile("testdata/bridge6.rules")
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.SplitAfter(string(text), "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	want := strings.Join(keep, "")
	if got := saveString(t, mustLoad(t, want, FamilyIPv6), FamilyIPv6); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestString(t *testing.T) {
	var l Loader
	if err := l.Load("v4.rules", strings.NewReader(wrap("filter", "-A FORWARD -p tcp -j DROP")), FamilyIPv4); err != nil {
		t.Fatal(err)
	}
	if err := l.Load("v6.rules", strings.NewReader(wrap("filter", "-A FORWARD -p udp -j DROP")), FamilyIPv6); err != nil {
		t.Fatal(err)
	}
	rs, err := l.Compile(testPorts)
	if err != nil {
		t.Fatal(err)
	}
	s := rs.String()
	for _, want := range []string{"# v4.rules (ipv4)\n*filter\n", "-A FORWARD -p tcp -j DROP\n", "# v6.rules (ipv6)\n", "-A FORWARD -p udp -j DROP\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %q, want it to contain %q", s, want)
		}
	}
	if err := rs.Save(&strings.Builder{}, FamilyBoth); err == nil {
		t.Errorf("Save(FamilyBoth) of two files: got no error")
	}
	if got := rs.RuleText(PolicyRule); got != "policy" {
		t.Errorf("RuleText(PolicyRule) = %q, want %q", got, "policy")
	}
	if got, want := rs.RuleText(0), "v4.rules:6: -A FORWARD -p tcp -j DROP"; got != want {
		t.Errorf("RuleText(0) = %q, want %q", got, want)
	}
}
