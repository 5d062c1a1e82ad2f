package offload_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/replay"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// TestVLANZonesKey runs the program (BPF_PROG_RUN) on one flow offered by
// a table with and without VLAN zones (Options.IgnoreVLAN, the table's
// Config.IgnoreVLAN: --vlan-zones). The flow was made by a frame tagged
// VLAN 100. With zones only that VLAN's frames find it in the map; without
// (vlan_mask 0) the program builds the table's key, VLAN 0, for the
// untagged frame and for any tag, and takes them all.
func TestVLANZonesKey(t *testing.T) {
	plain := packettest.UDP4("198.18.0.1", "198.19.0.1", 4000, 53, []byte("q"))
	tagged := func(vid uint16) []byte { return packettest.VLAN(plain, 0x8100, vid) }
	for _, tc := range []struct {
		name   string
		ignore bool
		want   map[string]uint32 // frame -> action
	}{
		{"zones", false, map[string]uint32{"vlan 100": offload.ActionRedirect, "untagged": offload.ActionPass, "vlan 200": offload.ActionPass}},
		{"vlan-zones=false", true, map[string]uint32{"vlan 100": offload.ActionRedirect, "untagged": offload.ActionRedirect, "vlan 200": offload.ActionRedirect}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prog := load(t, offload.Options{MaxFlows: 16, PassOnMiss: true, IgnoreVLAN: tc.ignore})
			if err := prog.DevMap().Put(uint32(offload.PortB), uint32(1)); err != nil {
				t.Fatal(err)
			}
			s := bridge.DefaultSettings()
			rp, err := replay.New(replay.Options{Settings: s, Table: flowtable.Config{IgnoreVLAN: tc.ignore}})
			if err != nil {
				t.Fatal(err)
			}
			first := tagged(100)
			for range 2 { // the first creates the entry, the second caches the verdict
				if r := rp.Pipeline.Process(first, 0, bridge.PortA, prog.Now()); r.Verdict != bridge.Accept || r.State != statemachine.StateNew {
					t.Fatalf("packet: %+v", r)
				}
			}
			var p packet.Packet
			packet.Parse(first, 0, packet.Options{}, &p)
			flowtable.ZoneOf(&p, rp.Table.Config().VLANMask())
			k, _ := flowtable.KeyOf(&p)
			e := rp.Pipeline.Shard().Lookup(&k, rp.Table.HashKey(&k), 0)
			if e == nil {
				t.Fatalf("no entry for key %+v", k)
			}
			v, ok := e.CachedVerdict(statemachine.Original, s.Rules.Generation())
			if !ok {
				t.Fatal("no cached verdict")
			}
			fp := rules.CachedVerdict(v).FastPath()
			if err := prog.Offer(e, [2]uint8{fp, 0}, offload.OfferConfig{Conntrack: &s.Conntrack, VerifyChecksum: true}); err != nil {
				t.Fatal(err)
			}
			for name, frame := range map[string][]byte{"vlan 100": first, "untagged": plain, "vlan 200": tagged(200)} {
				ret, err := prog.EBPF(offload.PortA).Run(&ebpf.RunOptions{Data: frame})
				if err != nil {
					t.Fatal(err)
				}
				if ret != tc.want[name] {
					t.Errorf("%s: got action %d, want %d (%d: taken, %d: missed)", name, ret, tc.want[name], offload.ActionRedirect, offload.ActionPass)
				}
			}
		})
	}
}
