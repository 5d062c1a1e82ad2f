package rules

import (
	"errors"
	"strings"
	"testing"
)

func TestFromText(t *testing.T) {
	rs, err := FromText("t.rules", "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m physdev --physdev-in a -j ACCEPT\nCOMMIT\n", [2]string{"a", "b"})
	if err != nil || !strings.Contains(rs.String(), "-A FORWARD -m physdev --physdev-in a -j ACCEPT") || !strings.Contains(rs.String(), "ipv4+ipv6") {
		t.Fatalf("got %v, err %v; want the rule for both families", rs, err)
	}
	_, err = FromText("t.rules", "*filter\n-A FORWARD --frob -j ACCEPT\nCOMMIT\n", [2]string{"a", "b"})
	var pe *ParseError
	if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "t.rules:2:") {
		t.Errorf("bad text: got %v, want a ParseError at t.rules:2", err)
	}
}
