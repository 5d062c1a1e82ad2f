package conformance

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/replay"
)

// oneWayTagged reads a capture of the shared corpus and tags one
// direction (testenv.OneWay, VLAN 100); it fails the test when nothing was
// tagged or everything was (no asymmetry to show).
func oneWayTagged(t *testing.T, path string) (plain, tagged []replay.Frame) {
	t.Helper()
	plain, err := replay.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data := make([][]byte, len(plain))
	for i := range plain {
		data[i] = plain[i].Data
	}
	data, was := testenv.OneWay(data, 100)
	tagged = slices.Clone(plain)
	n := 0
	for i := range tagged {
		if was[i] {
			tagged[i].Data, tagged[i].WireLen = data[i], tagged[i].WireLen+4
			n++
		}
	}
	if n == 0 || n == len(tagged) {
		t.Fatalf("%s: %d of %d frames tagged, want one direction", filepath.Base(path), n, len(tagged))
	}
	return plain, tagged
}

// TestOneWayTaggedKernel is the asymmetric-VLAN must-show of issue 13 with
// the live kernel as the oracle: captures with one direction tagged (VLAN
// 100) and the other not. The kernel bridge (br_netfilter with
// bridge-nf-filter-vlan-tagged=1, no zones) tracks the tagged frames and
// gives every packet the label it gives the untagged capture; statewire
// with --vlan-zones=false agrees with it on every packet and on the final
// table, as it does untagged; with the default (the VLAN id is the zone)
// it splits each connection in two and disagrees.
func TestOneWayTaggedKernel(t *testing.T) {
	lab.RequireRoot(t)
	pcaps := testenv.Pcaps(t)
	ctx := context.Background()
	for _, mode := range []struct {
		name     string
		helpers  bool
		captures []string
	}{
		{"nohelper", false, []string{"tcp-http-handshake-data-fin.pcap", "dns-udp-query-response.pcap", "icmp-echo-ping.pcap", "tcp-ipv6-smtp.pcap"}},
		{"helpers", true, []string{"ftp-passive-pasv-download.pcap", "ftp-active-port-download.pcap"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			h := newTestHarness(t, Options{Helpers: mode.helpers})
			for _, name := range mode.captures {
				t.Run(name, func(t *testing.T) {
					plain, tagged := oneWayTagged(t, filepath.Join(pcaps, name))
					h.opts.IgnoreVLAN = true
					base, err := h.Compare(ctx, name, plain)
					if err != nil {
						t.Fatal(err)
					}
					r, err := h.Compare(ctx, name+" (one way tagged)", tagged)
					if err != nil {
						t.Fatal(err)
					}
					var out strings.Builder
					r.Write(&out)
					t.Logf("--vlan-zones=false:\n%s", out.String())
					if !slices.Equal(r.KernelLabels, base.KernelLabels) {
						t.Errorf("kernel labels one way tagged:\n%v\nuntagged:\n%v\nwant the same (the kernel has no zones)", r.KernelLabels, base.KernelLabels)
					}
					if r.Compared == 0 || r.Equal != r.Compared || len(r.Unseen) != 0 {
						t.Errorf("--vlan-zones=false, one way tagged: %d/%d packets agree, %d unseen, want all", r.Equal, r.Compared, len(r.Unseen))
					}
					if len(r.TableDiffs) != 0 || len(r.OurTable) != len(r.KernelTable) {
						t.Errorf("--vlan-zones=false, one way tagged: %d final-table differences, %d entries against the kernel's %d, want none",
							len(r.TableDiffs), len(r.OurTable), len(r.KernelTable))
					}
					if base.Equal != base.Compared {
						t.Errorf("untagged: %d/%d packets agree, want all (the control)", base.Equal, base.Compared)
					}

					h.opts.IgnoreVLAN = false
					z, err := h.Compare(ctx, name+" (one way tagged, zones)", tagged)
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("--vlan-zones=true: %d/%d packets agree, statewire %d entries, kernel %d",
						z.Equal, z.Compared, len(z.OurTable), len(z.KernelTable))
					if z.Equal == z.Compared && len(z.OurTable) == len(z.KernelTable) {
						t.Errorf("--vlan-zones=true, one way tagged: agrees with the kernel (%d/%d, %d entries); want the directions split",
							z.Equal, z.Compared, len(z.OurTable))
					}
				})
			}
		})
	}
}
