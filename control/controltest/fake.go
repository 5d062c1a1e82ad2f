// Package controltest provides a fake running bridge for tests of the
// control server and its clients: a small flow table whose shards are all
// owned by one goroutine that serves reads and control requests the way the
// datapath workers do.
package controltest

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// Fake implements control.Backend. Its owner goroutine is the single writer
// of every shard; Add and Owner run code on it.
type Fake struct {
	T   *flowtable.Table
	Ctl *bridge.Control
	// DPStats is what Stats returns; set it before starting a server.
	DPStats bridge.DatapathStats

	now  atomic.Int64
	pls  []*bridge.Pipeline // by shard; used on the owner goroutine only
	do   chan func()
	stop chan struct{}
	done chan struct{}
}

// New returns a running Fake with shards shards, stopped at t's cleanup.
func New(t testing.TB, shards int) *Fake {
	t.Helper()
	tab, err := flowtable.New(flowtable.Config{Shards: shards, Buckets: 1024, MaxEntries: 4096, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	f := &Fake{T: tab, Ctl: bridge.NewControl(bridge.DefaultSettings()),
		do: make(chan func()), stop: make(chan struct{}), done: make(chan struct{})}
	f.now.Store(int64(1000 * time.Second))
	frags := bridge.NewFragCache(64, 1)
	for i := range shards {
		f.pls = append(f.pls, bridge.NewPipeline(tab, i, f.Ctl, frags))
	}
	go f.loop()
	t.Cleanup(func() { close(f.stop); <-f.done })
	return f
}

func (f *Fake) loop() {
	defer close(f.done)
	tick := time.NewTicker(100 * time.Microsecond)
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			return
		case fn := <-f.do:
			fn()
		case <-tick.C:
		}
		for i := 0; i < f.T.NumShards(); i++ {
			s := f.T.Shard(i)
			f.pls[i].WatchEvents(f.Now()) // as a worker does once per loop
			s.ServeRequests(4096)
		}
	}
}

// Owner runs fn on the owner goroutine and waits for it.
func (f *Fake) Owner(fn func()) {
	ch := make(chan struct{})
	f.do <- func() { fn(); close(ch) }
	<-ch
}

// Table implements control.Backend.
func (f *Fake) Table() *flowtable.Table { return f.T }

// Control implements control.Backend.
func (f *Fake) Control() *bridge.Control { return f.Ctl }

// Now implements control.Backend: a clock that starts at 1000 s and moves
// only by Advance.
func (f *Fake) Now() int64 { return f.now.Load() }

// Stats implements control.Backend.
func (f *Fake) Stats() bridge.DatapathStats { return f.DPStats }

// Process runs frame, received on port in, through the pipeline of the
// shard that owns its flow, on the owner goroutine, at the fake's clock.
func (f *Fake) Process(frame []byte, in bridge.Port) bridge.Result {
	var r bridge.Result
	f.Owner(func() {
		shard := 0
		var p packet.Packet
		if packet.Parse(frame, 0, packet.Options{}, &p) == packet.ReasonOK {
			if k, ok := flowtable.KeyOf(&p); ok {
				shard = f.T.ShardFor(f.T.HashKey(&k))
			}
		}
		r = f.pls[shard].Process(frame, 0, in, f.Now())
	})
	return r
}

// Advance moves the fake's clock forward by d and runs an expiry sweep
// of every shard on the owner goroutine.
func (f *Fake) Advance(d time.Duration) {
	now := f.now.Add(int64(d))
	f.Owner(func() {
		for i := 0; i < f.T.NumShards(); i++ {
			f.pls[i].WatchEvents(now)
			f.T.Shard(i).Expire(now, 1<<20)
		}
	})
}

// Conn describes an entry to Add.
type Conn struct {
	Proto        uint8
	Src, Dst     string
	SPort, DPort uint16
	State        statemachine.TCPState
	Status       uint8
	Timeout      time.Duration
	// Offloaded marks the entry offered to the XDP fast path (no fast
	// path runs: copies keep the table's Expires).
	Offloaded bool
}

// Add inserts c on its owning shard.
func (f *Fake) Add(t testing.TB, c Conn) {
	t.Helper()
	src, dst := netip.MustParseAddr(c.Src), netip.MustParseAddr(c.Dst)
	l3 := uint8(4)
	if src.Is6() {
		l3 = 6
	}
	tu := flowtable.Tuple{Src: packet.AddrFromNetip(src), Dst: packet.AddrFromNetip(dst),
		SrcPort: c.SPort, DstPort: c.DPort, Proto: c.Proto, L3: l3}
	k := tu.Key()
	h := f.T.HashKey(&k)
	var res flowtable.InsertResult
	f.Owner(func() {
		now := f.Now()
		e, r := f.T.Shard(f.T.ShardFor(h)).Insert(&k, h, &tu, now)
		res = r
		if e != nil {
			e.Conn.State, e.Conn.Status = c.State, c.Status
			e.Conn.Expires = now + int64(c.Timeout)
			e.SetOffloaded(c.Offloaded)
		}
	})
	if res != flowtable.Inserted {
		t.Fatalf("insert %+v: got %v, want Inserted", c, res)
	}
}
