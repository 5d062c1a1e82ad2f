package hostile

import (
	"context"
	"testing"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
)

// dumpLab logs the table entries of the left host (a diagnostic for a lost
// entry) and the table size.
func (r *rig) dumpLab(t *testing.T) {
	n, lab := 0, 0
	a := packet.AddrFrom4([4]byte{198, 18, 0, 1})
	r.DP.Table().Snapshot(context.Background(), func(e *flowtable.EntrySnapshot) {
		n++
		if e.Orig.Src == a || e.Orig.Dst == a {
			lab++
			t.Logf("lab entry: %v state %v status %#x exp %d", e.Orig.String(), e.Conn.State, e.Conn.Status, e.Conn.Expires)
		}
	})
	t.Logf("snapshot: %d entries, %d lab, now %d", n, lab, r.DP.Now())
}
