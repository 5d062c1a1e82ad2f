package control

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/helpers"
	"github.com/statewire/statewire/packet"
)

// entryOf finds c's live entry and its shard. Owner goroutine only.
func entryOf(t *testing.T, f *fakeBridge, c conn) (*flowtable.Shard, *flowtable.Entry) {
	t.Helper()
	tu := flowtable.Tuple{Src: packet.AddrFromNetip(netip.MustParseAddr(c.Src)), Dst: packet.AddrFromNetip(netip.MustParseAddr(c.Dst)),
		SrcPort: c.SPort, DstPort: c.DPort, Proto: c.Proto, L3: 4}
	k := tu.Key()
	h := f.T.HashKey(&k)
	s := f.T.Shard(f.T.ShardFor(h))
	e := s.Lookup(&k, h, f.Now())
	if e == nil {
		t.Fatalf("no entry for %+v", c)
	}
	return s, e
}

// TestListUseOfMasters: conntrack -L and the proc format print a master's
// use= as the kernel does, one reference per live data connection
// (children on either shard), one more in the proc format; a deleted
// child no longer counts.
func TestListUseOfMasters(t *testing.T) {
	f := newFake(t, 2)
	ctrl := conn{Proto: 6, Src: "198.18.0.1", Dst: "198.18.1.1", SPort: 40000, DPort: 21, State: established, Status: assured, Timeout: 300 * time.Second}
	f.add(t, ctrl)
	var data []conn
	for i := range 3 {
		c := conn{Proto: 6, Src: "198.18.0.1", Dst: "198.18.1.1", SPort: uint16(40100 + i), DPort: uint16(50000 + 7*i), State: established, Status: assured, Timeout: 300 * time.Second}
		f.add(t, c)
		data = append(data, c)
	}
	shards := map[int]bool{}
	f.owner(func() {
		ms, m := entryOf(t, f, ctrl)
		m.Helper = uint8(helpers.IDFTP)
		for _, c := range data {
			s, e := entryOf(t, f, c)
			s.LinkChild(e, ms.Ref(m))
			shards[s.ID()] = true
		}
	})
	if len(shards) < 2 {
		t.Logf("children on shards %v (one shard only: the cross-shard case is flowtable's TestChildCounts)", shards)
	}
	path := serve(t, f, Options{})
	check := func(name, format, masterUse, childUse string) {
		t.Run(name, func(t *testing.T) {
			lines, _, err := call(t, path, Request{Op: OpList, Format: format})
			if err != nil {
				t.Fatal(err)
			}
			masters, children := 0, 0
			for _, l := range lines {
				switch {
				case strings.Contains(l, "dport=21 "):
					masters++
					if !strings.HasSuffix(l, " helper=ftp "+masterUse) {
						t.Errorf("master: got %q, want it to end with %q", l, "helper=ftp "+masterUse)
					}
				default:
					children++
					if !strings.HasSuffix(l, " "+childUse) {
						t.Errorf("data connection: got %q, want it to end with %q", l, childUse)
					}
				}
			}
			if masters != 1 || children != len(data) {
				t.Errorf("got %d masters and %d data connections, want 1 and %d", masters, children, len(data))
			}
		})
	}
	check("conntrack three children", "", "use=4", "use=1")
	check("proc three children", FormatProc, "use=5", "use=2")
	f.owner(func() {
		s, e := entryOf(t, f, data[1])
		s.Delete(e)
	})
	data = append(data[:1], data[2:]...)
	check("conntrack one child deleted", "", "use=3", "use=1")
}
