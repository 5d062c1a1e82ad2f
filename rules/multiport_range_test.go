package rules

import (
	"errors"
	"strings"
	"testing"
)

// TestMultiportRangeAsIptables: libxt_multiport refuses a range whose
// ends are equal or missing ("invalid portrange specified", found by the
// random differential, e2e/rulediff_test.go), where --dport takes them;
// statewire read them, accepting files iptables-restore refuses.
func TestMultiportRangeAsIptables(t *testing.T) {
	for _, tc := range []struct {
		list string
		ok   bool
	}{
		{"80:81", true}, {"1:65535", true}, {"22,80:81,443", true},
		{"80:80", false}, {"22,5002:5002", false}, {"80:", false}, {":80", false}, {"81:80", false},
	} {
		var l Loader
		err := l.Load("t.rules", strings.NewReader(wrap("filter", "-A FORWARD -p tcp -m multiport --dports "+tc.list+" -j ACCEPT")), FamilyIPv4)
		if tc.ok && err != nil {
			t.Errorf("--dports %s: got %v, want no error", tc.list, err)
		}
		if !tc.ok && !errors.Is(err, ErrSyntax) {
			t.Errorf("--dports %s: got %v, want a syntax error", tc.list, err)
		}
	}
	var l Loader
	if err := l.Load("t.rules", strings.NewReader(wrap("filter", "-A FORWARD -p tcp -m tcp --dport 80:80 -j ACCEPT")), FamilyIPv4); err != nil {
		t.Errorf("--dport 80:80: got %v, want no error (libxt_tcp takes it)", err)
	}
}
