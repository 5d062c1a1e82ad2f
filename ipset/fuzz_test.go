package ipset

import (
	"strings"
	"testing"
)

// FuzzParse: Parse never panics, and whatever it accepts Save writes in a
// form Parse reads back to the same text again.
func FuzzParse(f *testing.F) {
	f.Add(saved)
	for _, s := range []string{
		"create x hash:net family inet6\nadd x 2001:db8::/33 nomatch\n",
		"create x hash:ip,port\nadd x 10.0.0.0/30,udp:1-3\n",
		"create x hash:net,port\nadd x 10.0.0.0-10.0.0.9,icmp:3/4\n",
		"create x bitmap:port range 0-65535\nadd x 0-65535\n",
		"create x hash:ip netmask 8\nadd x 10.1.2.3\n",
		"create x hash:ip comment\nadd x 1.2.3.4 comment \"a b\"\n",
		"create a hash:ip\ncreate l list:set size 1\nadd l a\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		ss, err := Parse("fuzz", strings.NewReader(text))
		if err != nil {
			return
		}
		var a strings.Builder
		if err := ss.Save(&a); err != nil {
			t.Fatal(err)
		}
		ss2, err := Parse("saved", strings.NewReader(a.String()))
		if err != nil {
			t.Fatalf("saved text does not parse: %v\n%s", err, a.String())
		}
		var b strings.Builder
		ss2.Save(&b)
		if a.String() != b.String() {
			t.Fatalf("save not stable:\n%s\n---\n%s", a.String(), b.String())
		}
	})
}
