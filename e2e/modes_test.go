package e2e

import (
	"errors"
	"testing"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/bridge/xdpprog"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/ring"
)

// TestGenericAttach: the datapath works with the XDP program in generic
// (skb) mode too.
func TestGenericAttach(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := newRig(t, rigOptions{cores: cores, attach: xdpprog.Generic})
		for _, tc := range []struct{ ns, to string }{{r.l.LeftNS, rightIP.String()}, {r.l.RightNS, leftIP.String()}} {
			if ok, out := r.ping(t, tc.ns, tc.to, 2); !ok {
				t.Errorf("ping from %s got %q, want 2 received", tc.ns, out)
			}
		}
	})
}

// TestZeroCopyRefused: veth has no zero-copy AF_XDP, so --xdp-mode zerocopy
// must fail at Start with ring.ErrZeroCopy and leave nothing attached.
func TestZeroCopyRefused(t *testing.T) {
	l := lab.NewT(t, lab.Options{Queues: 2})
	cfg := bridge.DefaultDatapathConfig()
	cfg.PortA, cfg.PortB = l.PortA, l.PortB
	cfg.Queues = 2
	cfg.XDPMode = ring.ModeZeroCopy
	dp, err := bridge.NewDatapath(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = l.Do(l.BridgeNS, dp.Start)
	if !errors.Is(err, ring.ErrZeroCopy) {
		t.Fatalf("Start with zerocopy on veth got %v, want ring.ErrZeroCopy", err)
	}
	err = l.Do(l.BridgeNS, func() error {
		for _, ifc := range []string{l.PortA, l.PortB} {
			if att, id, err := xdpprog.XDPAttached(ifc); err != nil || att {
				t.Errorf("after a failed Start: XDP on %s got attached=%v id %d err %v, want none", ifc, att, id, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
