package control

import (
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// fakeBridge is a Backend whose single goroutine owns every shard of a
// small table, serving reads and control requests as the workers do.
type fakeBridge struct {
	t   *flowtable.Table
	ctl *bridge.Control
	// stats is what Stats returns; set it before starting a server.
	stats bridge.DatapathStats
	now   atomic.Int64
	do    chan func()
	stop  chan struct{}
	done  chan struct{}
}

func newFake(t *testing.T, shards int) *fakeBridge {
	t.Helper()
	tab, err := flowtable.New(flowtable.Config{Shards: shards, Buckets: 1024, MaxEntries: 4096, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBridge{t: tab, ctl: bridge.NewControl(bridge.DefaultSettings()),
		do: make(chan func()), stop: make(chan struct{}), done: make(chan struct{})}
	f.now.Store(int64(1000 * time.Second))
	go f.loop()
	t.Cleanup(func() { close(f.stop); <-f.done })
	return f
}

func (f *fakeBridge) loop() {
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
		for i := 0; i < f.t.NumShards(); i++ {
			s := f.t.Shard(i)
			bridge.ServeControl(f.t, s)
			s.ServeReads(4096)
		}
	}
}

// owner runs fn on the owner goroutine and waits.
func (f *fakeBridge) owner(fn func()) {
	ch := make(chan struct{})
	f.do <- func() { fn(); close(ch) }
	<-ch
}

func (f *fakeBridge) Table() *flowtable.Table     { return f.t }
func (f *fakeBridge) Control() *bridge.Control    { return f.ctl }
func (f *fakeBridge) Now() int64                  { return f.now.Load() }
func (f *fakeBridge) Stats() bridge.DatapathStats { return f.stats }

type conn struct {
	proto        uint8
	src, dst     string
	sport, dport uint16
	state        statemachine.TCPState
	status       uint8
	timeout      time.Duration
}

// add inserts c on its owning shard.
func (f *fakeBridge) add(t *testing.T, c conn) {
	t.Helper()
	src, dst := netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst)
	l3 := uint8(4)
	if src.Is6() {
		l3 = 6
	}
	tu := flowtable.Tuple{Src: packet.AddrFromNetip(src), Dst: packet.AddrFromNetip(dst),
		SrcPort: c.sport, DstPort: c.dport, Proto: c.proto, L3: l3}
	k := tu.Key()
	h := f.t.HashKey(&k)
	var res flowtable.InsertResult
	f.owner(func() {
		now := f.Now()
		e, r := f.t.Shard(f.t.ShardFor(h)).Insert(&k, h, &tu, now)
		res = r
		if e != nil {
			e.Conn.State, e.Conn.Status = c.state, c.status
			e.Conn.Expires = now + int64(c.timeout)
		}
	})
	if res != flowtable.Inserted {
		t.Fatalf("insert %+v: got %v, want Inserted", c, res)
	}
}

// serve starts a Server for f on a socket in a temporary directory.
func serve(t *testing.T, f *fakeBridge, opt Options) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sw.sock")
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := Listen(path, f, opt)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return path
}
