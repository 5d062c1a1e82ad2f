package flowtable

import (
	"errors"
	"testing"

	"github.com/statewire/statewire/packet"
)

// ftpData is the expectation an FTP PORT command creates: from the server,
// any port, to the client's announced port.
func ftpData(master EntryRef, port uint16, expires int64) Expect {
	return Expect{
		L3: 4, Proto: packet.ProtoTCP,
		Dst: addr("198.18.0.1"), DstPort: port,
		Src: addr("198.18.1.1"), SrcMask: true,
		Master: master, HelperID: 1, Expires: expires,
	}
}

func TestExpectMatch(t *testing.T) {
	m := EntryRef{Shard: 0, Index: 3, Gen: 1}
	tests := []struct {
		name string
		x    Expect
		p    *packet.Packet
		want bool
	}{
		{"exact", ftpData(m, 5001, 100), pkt(packet.ProtoTCP, "198.18.1.1", 20, "198.18.0.1", 5001), true},
		{"any source port", ftpData(m, 5001, 100), pkt(packet.ProtoTCP, "198.18.1.1", 33333, "198.18.0.1", 5001), true},
		{"wrong source address", ftpData(m, 5001, 100), pkt(packet.ProtoTCP, "198.18.1.2", 20, "198.18.0.1", 5001), false},
		{"wrong destination port", ftpData(m, 5001, 100), pkt(packet.ProtoTCP, "198.18.1.1", 20, "198.18.0.1", 5002), false},
		{"wrong protocol", ftpData(m, 5001, 100), pkt(packet.ProtoUDP, "198.18.1.1", 20, "198.18.0.1", 5001), false},
		{"expired", ftpData(m, 5001, 10), pkt(packet.ProtoTCP, "198.18.1.1", 20, "198.18.0.1", 5001), false},
		{"any source address (irc dcc)", func() Expect { x := ftpData(m, 5001, 100); x.SrcMask = false; return x }(),
			pkt(packet.ProtoTCP, "203.0.113.5", 20, "198.18.0.1", 5001), true},
		{"source port given", func() Expect { x := ftpData(m, 5001, 100); x.SrcPort = 69; return x }(),
			pkt(packet.ProtoTCP, "198.18.1.1", 70, "198.18.0.1", 5001), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := NewExpectations(16)
			if err := x.Add(tt.x, 1); err != nil {
				t.Fatalf("Add: %v", err)
			}
			got, ok := x.Match(tt.p, 10)
			if ok != tt.want {
				t.Fatalf("Match: got %v, want %v", ok, tt.want)
			}
			if !ok {
				return
			}
			if got.Master != m || got.DstPort != tt.x.DstPort {
				t.Errorf("matched %+v, want master %+v port %d", got, m, tt.x.DstPort)
			}
			if x.Len() != 0 {
				t.Errorf("Len after match: got %d, want 0 (a match removes the expectation)", x.Len())
			}
			if _, again := x.Match(tt.p, 10); again {
				t.Error("second Match: got a match, want none")
			}
			if st := x.Stats(); st.New != 1 || st.Create != 1 {
				t.Errorf("stats: got %+v, want New 1, Create 1", st)
			}
		})
	}
}

func TestExpectLimits(t *testing.T) {
	m1, m2 := EntryRef{Index: 1, Gen: 1}, EntryRef{Index: 2, Gen: 1}
	t.Run("per master: oldest evicted", func(t *testing.T) {
		x := NewExpectations(16)
		for port := uint16(1); port <= 3; port++ {
			if err := x.Add(ftpData(m1, port, 100), 2); err != nil {
				t.Fatalf("Add %d: %v", port, err)
			}
		}
		var ports []uint16
		x.Range(func(e Expect) bool { ports = append(ports, e.DstPort); return true })
		if len(ports) != 2 || ports[0] != 2 || ports[1] != 3 {
			t.Errorf("ports left: got %v, want [2 3]", ports)
		}
		if got := x.Stats().Delete; got != 1 {
			t.Errorf("Delete: got %d, want 1", got)
		}
	})
	t.Run("global max", func(t *testing.T) {
		x := NewExpectations(2)
		if err := x.Add(ftpData(m1, 1, 100), 0); err != nil {
			t.Fatal(err)
		}
		if err := x.Add(ftpData(m2, 2, 100), 0); err != nil {
			t.Fatal(err)
		}
		if err := x.Add(ftpData(m2, 3, 100), 0); !errors.Is(err, ErrExpectTableFull) {
			t.Errorf("Add to full table: got %v, want ErrExpectTableFull", err)
		}
		if x.Len() != 2 {
			t.Errorf("Len: got %d, want 2", x.Len())
		}
	})
	t.Run("same tuple: replace or clash", func(t *testing.T) {
		x := NewExpectations(8)
		if err := x.Add(ftpData(m1, 1, 100), 0); err != nil {
			t.Fatal(err)
		}
		if err := x.Add(ftpData(m1, 1, 200), 0); err != nil {
			t.Fatalf("re-add by the same master: %v", err)
		}
		if err := x.Add(ftpData(m2, 1, 300), 0); !errors.Is(err, ErrExpectClash) {
			t.Errorf("same tuple from another master: got %v, want ErrExpectClash", err)
		}
		var exp []int64
		x.Range(func(e Expect) bool { exp = append(exp, e.Expires); return true })
		if len(exp) != 1 || exp[0] != 200 {
			t.Errorf("expectations: got expiries %v, want [200]", exp)
		}
	})
	t.Run("timeout and master death", func(t *testing.T) {
		x := NewExpectations(8)
		x.Add(ftpData(m1, 1, 100), 0)
		x.Add(ftpData(m1, 2, 300), 0)
		x.Add(ftpData(m2, 3, 300), 0)
		if got := x.Expire(99); got != 0 {
			t.Errorf("Expire(99): removed %d, want 0", got)
		}
		if got := x.Expire(100); got != 1 {
			t.Errorf("Expire(100): removed %d, want 1", got)
		}
		if got := x.RemoveMaster(m1); got != 1 {
			t.Errorf("RemoveMaster: removed %d, want 1", got)
		}
		if x.Len() != 1 {
			t.Errorf("Len: got %d, want 1", x.Len())
		}
	})
}

// TestMasterDeleteRemovesExpectations: a helper's master entry takes its
// expectations with it when the shard deletes it.
func TestMasterDeleteRemovesExpectations(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 16, Buckets: 16, Shards: 1})
	s := tb.Shard(0)
	ctrl := pkt(packet.ProtoTCP, "198.18.0.1", 40000, "198.18.1.1", 21)
	e := insertPkt(t, tb, ctrl, 0, 1000)
	e.Helper = 1
	if err := tb.Expect.Add(ftpData(s.Ref(e), 5001, 500), 1); err != nil {
		t.Fatal(err)
	}
	other := ftpData(EntryRef{Shard: 0, Index: 9, Gen: 1}, 6000, 500)
	tb.Expect.Add(other, 1)
	s.Delete(e)
	if got := tb.Expect.Len(); got != 1 {
		t.Errorf("expectations after master delete: got %d, want 1", got)
	}
}

func TestExpectConcurrentMatchOneWinner(t *testing.T) {
	x := NewExpectations(8)
	x.Add(ftpData(EntryRef{Index: 1, Gen: 1}, 5001, 100), 1)
	p := pkt(packet.ProtoTCP, "198.18.1.1", 20, "198.18.0.1", 5001)
	const n = 8
	wins := make(chan bool, n)
	for range n {
		go func() {
			_, ok := x.Match(p, 1)
			wins <- ok
		}()
	}
	won := 0
	for range n {
		if <-wins {
			won++
		}
	}
	if won != 1 {
		t.Errorf("matches: got %d winners, want 1", won)
	}
}
