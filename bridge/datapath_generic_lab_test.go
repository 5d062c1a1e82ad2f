package bridge

import (
	"context"
	"strings"
	"testing"

	"github.com/statewire/statewire/lab"
)

// TestCheckGenericSegments: on a lab with the kernel's default offloads
// (the hosts' veths have TSO and GSO on) the generic-mode check names the
// peer of each port and the ethtool command; with TSO and GSO off on the
// peer it is quiet.
func TestCheckGenericSegments(t *testing.T) {
	l := lab.NewT(t, lab.Options{})
	for _, p := range []struct{ port, ns, peer string }{{l.PortA, l.LeftNS, l.LeftIf}, {l.PortB, l.RightNS, l.RightIf}} {
		var err error
		if derr := l.Do(l.BridgeNS, func() error { err = checkGenericSegments(p.port); return nil }); derr != nil {
			t.Fatal(derr)
		}
		want := "ethtool -K " + p.peer + " tso off gso off"
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), p.port) {
			t.Errorf("%s with TSO/GSO on its peer: got %v, want an error naming %s and %q", p.port, err, p.port, want)
		}
		if out, err := l.Run(context.Background(), p.ns, "ethtool", "-K", p.peer, "tso", "off", "gso", "off"); err != nil {
			t.Fatalf("ethtool: %v %s", err, out)
		}
		if derr := l.Do(l.BridgeNS, func() error { err = checkGenericSegments(p.port); return nil }); derr != nil {
			t.Fatal(derr)
		}
		if err != nil {
			t.Errorf("%s with TSO/GSO off on its peer: got %v, want nil", p.port, err)
		}
	}
}
