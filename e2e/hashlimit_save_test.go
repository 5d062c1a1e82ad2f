package e2e

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/rules"
)

// TestHashlimitSaveAgainstIptables restores each -m hashlimit rule with
// iptables-legacy-restore (ip6tables for the IPv6 ones) into a lab
// namespace, where the kernel checks it and truncates what it truncates,
// and requires iptables-legacy-save's line to be statewire's saved line
// for the same input, and statewire to read that line back to itself.
func TestHashlimitSaveAgainstIptables(t *testing.T) {
	lab.RequireRoot(t)
	restore, err := exec.LookPath("iptables-legacy-restore")
	restore6, err6 := exec.LookPath("ip6tables-legacy-restore")
	if err != nil || err6 != nil {
		testenv.Unavailable(t, "iptables-legacy-restore or ip6tables-legacy-restore not found (Debian package iptables; scripts/setup.sh installs it)")
	}
	l := lab.NewT(t, lab.Options{Mode: lab.KernelBridge})
	wrap := func(rule string) string {
		return "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD " + rule + " -j DROP\nCOMMIT\n"
	}
	forward := func(save string) string {
		var out []string
		for _, line := range strings.Split(save, "\n") {
			if strings.HasPrefix(line, "-A FORWARD ") {
				out = append(out, line)
			}
		}
		return strings.Join(out, "\n")
	}
	statewireSave := func(text string, fam rules.Family) (string, error) {
		var ld rules.Loader
		if err := ld.Load("h.rules", strings.NewReader(text), fam); err != nil {
			return "", err
		}
		rs, err := ld.Compile([2]string{"a", "b"})
		if err != nil {
			return "", err
		}
		var b strings.Builder
		if err := rs.Save(&b, fam); err != nil {
			return "", err
		}
		return b.String(), nil
	}
	for _, tc := range []struct {
		rule string
		v6   bool
	}{
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-name h1", false},
		{"-m hashlimit --hashlimit-above 10/min --hashlimit-burst 3 --hashlimit-mode srcip --hashlimit-name h2", false},
		{"-m hashlimit --hashlimit 100/hour --hashlimit-mode dstport,srcip --hashlimit-srcmask 24 --hashlimit-name h3", false},
		{"-m hashlimit --hashlimit-upto 1/day --hashlimit-burst 1 --hashlimit-mode dstip,srcport,srcip,dstport --hashlimit-dstmask 16 --hashlimit-name h4", false},
		{"-m hashlimit --hashlimit-upto 3/s --hashlimit-name h5 --hashlimit-htable-size 100 --hashlimit-htable-max 50 --hashlimit-htable-expire 5000 --hashlimit-htable-gcinterval 500", false},
		{"-m hashlimit --hashlimit-upto 7/second --hashlimit-name h6 --hashlimit-htable-size 2000000 --hashlimit-htable-max 3000000", false},
		{"-m hashlimit --hashlimit-above 512kb/s --hashlimit-burst 1mb --hashlimit-mode srcip --hashlimit-name h8", false},
		{"-m hashlimit --hashlimit-upto 100b/s --hashlimit-burst 150 --hashlimit-name h9", false},
		{"-m hashlimit --hashlimit-upto 10/min --hashlimit-rate-match --hashlimit-rate-interval 5 --hashlimit-name h12", false},
		{"-m hashlimit --hashlimit-upto 1kb/s --hashlimit-rate-match --hashlimit-name h13", false},
		{"-m hashlimit ! --hashlimit-upto 5/sec --hashlimit-name h14", false},
		{"-m hashlimit --hashlimit-upto 3/sec --hashlimit-srcmask 32 --hashlimit-dstmask 0 --hashlimit-mode srcip --hashlimit-name h16", false},
		{"-m hashlimit --hashlimit-upto 5/min --hashlimit-htable-expire 1000 --hashlimit-name h20", false},
		{"-m hashlimit --hashlimit-upto 64kb/s --hashlimit-burst 100kb --hashlimit-name h24", false},
		{"-p udp -m udp --dport 53 -m hashlimit --hashlimit-upto 5/sec --hashlimit-name h26", false},
		{"-m hashlimit --hashlimit-upto 5/sec --hashlimit-mode srcip --hashlimit-srcmask 64 --hashlimit-name h6a", true},
		{"-m hashlimit --hashlimit-above 2/min --hashlimit-mode dstip,dstport --hashlimit-dstmask 128 --hashlimit-name h6b", true},
	} {
		rst, save, fam := restore, "iptables-legacy-save", rules.FamilyIPv4
		if tc.v6 {
			rst, save, fam = restore6, "ip6tables-legacy-save", rules.FamilyIPv6
		}
		cmd := l.Command(l.BridgeNS, rst)
		cmd.Stdin = strings.NewReader(wrap(tc.rule))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%q: %s: %v\n%s", tc.rule, rst, err, out)
			continue
		}
		out, err := l.Command(l.BridgeNS, save).Output()
		if err != nil {
			t.Fatalf("%s: %v", save, err)
		}
		kernel := forward(string(out))
		if !strings.Contains(kernel, " -m hashlimit ") {
			t.Fatalf("%q: %s printed no hashlimit rule:\n%s", tc.rule, save, out)
		}
		sw, err := statewireSave(wrap(tc.rule), fam)
		if err != nil {
			t.Errorf("%q: statewire: %v", tc.rule, err)
			continue
		}
		if got := forward(sw); got != kernel {
			t.Errorf("%q:\n%s printed %q\nstatewire saved   %q", tc.rule, save, kernel, got)
		} else if again, err := statewireSave(sw, fam); err != nil || forward(again) != got {
			t.Errorf("%q: statewire read its save back as %q (%v)", tc.rule, forward(again), err)
		}
	}
}
