package ring

import (
	"errors"
	"sync/atomic"
	"testing"
)

// fakeRing is ring memory as the kernel would map it, with the kernel's side
// played by the test.
type fakeRing struct {
	prod, cons, flags uint32
	descs             []Desc
	addrs             []uint64
	from, to          int64
}

func newFake(size uint32, start uint32) *fakeRing {
	return &fakeRing{prod: start, cons: start, descs: make([]Desc, size), addrs: make([]uint64, size)}
}

func (f *fakeRing) idx(size uint32) idx {
	return newIdx(&f.prod, &f.cons, &f.flags, size, &f.from, &f.to)
}

func TestConsumerWraparound(t *testing.T) {
	const size = 8
	// Start 5 short of the uint32 wrap so batches cross it.
	f := newFake(size, ^uint32(0)-4)
	rx := RXRing{idx: f.idx(size), descs: f.descs}
	kernelProduce := func(n uint32) {
		for i := uint32(0); i < n; i++ {
			p := f.prod + i
			f.descs[p&(size-1)] = Desc{Addr: uint64(p), Len: 60}
		}
		atomic.StoreUint32(&f.prod, f.prod+n)
	}
	var want uint32 = f.prod
	for round, tc := range []struct{ produce, peek, wantN uint32 }{
		{3, 8, 3}, {8, 4, 4}, {0, 8, 4}, {6, 2, 2}, {0, 16, 4}, {0, 1, 0}, {8, 8, 8},
	} {
		kernelProduce(tc.produce)
		n, start := rx.Peek(tc.peek)
		if n != tc.wantN {
			t.Fatalf("round %d: Peek(%d) got n=%d, want %d", round, tc.peek, n, tc.wantN)
		}
		if start != want {
			t.Fatalf("round %d: Peek start got %d, want %d", round, start, want)
		}
		for i := uint32(0); i < n; i++ {
			if d := rx.Desc(start + i); d.Addr != uint64(want+i) {
				t.Fatalf("round %d: Desc(%d).Addr got %d, want %d", round, start+i, d.Addr, want+i)
			}
		}
		rx.Release(n)
		want += n
		if got := atomic.LoadUint32(&f.cons); got != want {
			t.Fatalf("round %d: consumer index got %d, want %d", round, got, want)
		}
	}
	if f.prod >= 1<<31 {
		t.Fatalf("test did not cross the wrap: prod %d", f.prod)
	}
	if f.from != -int64(rx.moved) || f.to != int64(rx.moved) {
		t.Fatalf("accounting got from %d to %d, want %d/%d", f.from, f.to, -int64(rx.moved), rx.moved)
	}
}

func TestReleaseMoreThanPeekedIsClamped(t *testing.T) {
	f := newFake(4, 0)
	rx := RXRing{idx: f.idx(4), descs: f.descs}
	atomic.StoreUint32(&f.prod, 2)
	rx.Peek(4)
	rx.Release(10)
	if f.cons != 2 {
		t.Fatalf("consumer got %d, want 2", f.cons)
	}
}

func TestProducerWraparound(t *testing.T) {
	const size = 4
	f := newFake(size, ^uint32(0)-1)
	tx := TXRing{idx: f.idx(size), descs: f.descs}
	kernelConsume := func(n uint32) { atomic.StoreUint32(&f.cons, f.cons+n) }
	next := uint64(0)
	for round, tc := range []struct{ consume, want, wantN uint32 }{
		{0, 3, 3}, {0, 3, 1}, {0, 1, 0}, {2, 8, 2}, {4, 4, 4}, {1, 2, 1},
	} {
		kernelConsume(tc.consume)
		n, start := tx.Reserve(tc.want)
		if n != tc.wantN {
			t.Fatalf("round %d: Reserve(%d) got %d, want %d", round, tc.want, n, tc.wantN)
		}
		if start != f.prod {
			t.Fatalf("round %d: Reserve start got %d, want producer %d", round, start, f.prod)
		}
		for i := uint32(0); i < n; i++ {
			tx.Set(start+i, Desc{Addr: next})
			next++
		}
		before := f.prod
		tx.Submit(n)
		if f.prod != before+n {
			t.Fatalf("round %d: producer got %d, want %d", round, f.prod, before+n)
		}
		// The kernel reads what we wrote, in order.
		for i := uint32(0); i < n; i++ {
			if d := f.descs[(before+i)&(size-1)]; d.Addr != next-uint64(n)+uint64(i) {
				t.Fatalf("round %d: slot got addr %d, want %d", round, d.Addr, next-uint64(n)+uint64(i))
			}
		}
	}
	if f.prod > 100 {
		t.Fatalf("test did not cross the wrap: prod %d", f.prod)
	}
}

func TestSubmitMoreThanFreeIsClamped(t *testing.T) {
	f := newFake(4, 7)
	fill := FillRing{idx: f.idx(4), addrs: f.addrs}
	fill.Submit(9)
	if f.prod != 11 {
		t.Fatalf("producer got %d, want 11 (one lap at most)", f.prod)
	}
}

func TestNeedWakeupFlag(t *testing.T) {
	f := newFake(4, 0)
	tx := TXRing{idx: f.idx(4), descs: f.descs}
	if tx.NeedWakeup() {
		t.Fatal("NeedWakeup got true with flags 0")
	}
	atomic.StoreUint32(&f.flags, xdpRingNeedWakeup)
	if !tx.NeedWakeup() {
		t.Fatal("NeedWakeup got false with XDP_RING_NEED_WAKEUP set")
	}
}

func TestRingBatchNoAlloc(t *testing.T) {
	f := newFake(64, 0)
	rx := RXRing{idx: f.idx(64), descs: f.descs}
	a := testing.AllocsPerRun(100, func() {
		atomic.AddUint32(&f.prod, 8)
		n, s := rx.Peek(16)
		for i := uint32(0); i < n; i++ {
			_ = rx.Desc(s + i)
		}
		rx.Release(n)
	})
	if a != 0 {
		t.Fatalf("allocs got %v, want 0", a)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	for _, tc := range []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"default", func(*Config) {}, true},
		{"frame 4096", func(c *Config) { c.FrameSize = 4096 }, true},
		{"frame 1024", func(c *Config) { c.FrameSize = 1024 }, false},
		{"frame 3000", func(c *Config) { c.FrameSize = 3000 }, false},
		{"frames not pow2", func(c *Config) { c.Frames = 3000 }, false},
		{"frames 0", func(c *Config) { c.Frames = 0 }, false},
		{"fill not pow2", func(c *Config) { c.FillSize = 1000 }, false},
		{"comp not pow2", func(c *Config) { c.CompletionSize = 6 }, false},
		{"rx negative", func(c *Config) { c.RXSize = -8 }, false},
		{"tx huge", func(c *Config) { c.TXSize = 1 << 24 }, false},
		{"frames < fill", func(c *Config) { c.Frames = 512 }, false},
		{"headroom ok", func(c *Config) { c.Headroom = 64 }, true},
		{"headroom too big", func(c *Config) { c.Headroom = 1024 }, false},
		{"mode bad", func(c *Config) { c.Mode = 7 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate got %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"auto": ModeAuto, "zerocopy": ModeZeroCopy, "copy": ModeCopy} {
		got, err := ParseMode(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseMode(%q) got %v, %v, want %v", in, got, err, want)
		}
	}
	if _, err := ParseMode("fast"); !errors.Is(err, ErrConfig) {
		t.Errorf("ParseMode(fast) got %v, want ErrConfig", err)
	}
}

// fakeSocket wires a Socket's four rings to fake memory so the UMEM's
// accounting can be exercised without the kernel.
func fakeSocket(u *UMEM) (*Socket, map[string]*fakeRing) {
	s := &Socket{umem: u, fd: -1}
	c := u.cfg
	fs := map[string]*fakeRing{
		"fill": newFake(uint32(c.FillSize), 0), "comp": newFake(uint32(c.CompletionSize), 0),
		"rx": newFake(uint32(c.RXSize), 0), "tx": newFake(uint32(c.TXSize), 0),
	}
	r := fs["fill"]
	s.fill = FillRing{idx: newIdx(&r.prod, &r.cons, &r.flags, uint32(c.FillSize), &u.app, &s.acct.fill), addrs: r.addrs}
	r = fs["comp"]
	s.comp = CompletionRing{idx: newIdx(&r.prod, &r.cons, &r.flags, uint32(c.CompletionSize), &s.acct.tx, &u.app), addrs: r.addrs}
	r = fs["rx"]
	s.rx = RXRing{idx: newIdx(&r.prod, &r.cons, &r.flags, uint32(c.RXSize), &s.acct.fill, &u.app), descs: r.descs}
	r = fs["tx"]
	s.tx = TXRing{idx: newIdx(&r.prod, &r.cons, &r.flags, uint32(c.TXSize), &u.app, &s.acct.tx), descs: r.descs}
	u.sockets = append(u.sockets, s)
	return s, fs
}

func smallConfig() Config {
	return Config{Frames: 32, FrameSize: 2048, FillSize: 16, CompletionSize: 16, RXSize: 16, TXSize: 16}
}

// TestFrameAccountingForward plays the kernel on fake rings: frames go
// free -> fill(A) -> RX(A) -> app -> TX(B) -> completion(B) -> free, and
// Check must hold at every step.
func TestFrameAccountingForward(t *testing.T) {
	cfg := smallConfig()
	u := newUMEMOn(cfg, make([]byte, cfg.Frames*cfg.FrameSize))
	a, fa := fakeSocket(u)
	b, fb := fakeSocket(u)
	check := func(step string, want Counts) {
		t.Helper()
		if err := u.Check(); err != nil {
			t.Fatalf("%s: Check: %v", step, err)
		}
		if got := u.Counts(); got != want {
			t.Fatalf("%s: Counts got %+v, want %+v", step, got, want)
		}
	}
	check("start", Counts{Frames: 32, Free: 32})
	if n := a.Refill(16); n != 16 {
		t.Fatalf("Refill A got %d, want 16", n)
	}
	b.Refill(8)
	check("refilled", Counts{Frames: 32, Free: 8, Fill: 24})

	// Kernel on A: consume 5 fill entries, produce 5 RX descriptors.
	for i := uint32(0); i < 5; i++ {
		fa["rx"].descs[i] = Desc{Addr: fa["fill"].addrs[i] + 256, Len: 64}
	}
	fa["fill"].cons += 5
	fa["rx"].prod += 5
	n, start := a.RX().Peek(16)
	if n != 5 {
		t.Fatalf("RX Peek got %d, want 5", n)
	}
	got, ts := b.TX().Reserve(n)
	for i := uint32(0); i < got; i++ {
		b.TX().Set(ts+i, a.RX().Desc(start+i))
	}
	a.RX().Release(n)
	check("received", Counts{Frames: 32, Free: 8, Fill: 19, App: 5})
	b.TX().Submit(got)
	check("forwarded", Counts{Frames: 32, Free: 8, Fill: 19, TX: 5})

	// Kernel on B: transmit and complete 5 (addresses keep the offset).
	for i := uint32(0); i < 5; i++ {
		fb["comp"].addrs[i] = fb["tx"].descs[i].Addr
	}
	fb["tx"].cons += 5
	fb["comp"].prod += 5
	if n := b.Complete(16); n != 5 {
		t.Fatalf("Complete got %d, want 5", n)
	}
	check("completed", Counts{Frames: 32, Free: 13, Fill: 19})

	// A drop path: Alloc, Free.
	addr, ok := u.Alloc()
	if !ok {
		t.Fatal("Alloc failed with free frames")
	}
	check("alloc", Counts{Frames: 32, Free: 12, Fill: 19, App: 1})
	if !u.Free(addr + 100) {
		t.Fatal("Free of an inner address failed")
	}
	check("free", Counts{Frames: 32, Free: 13, Fill: 19})
}

func TestCheckCatchesErrors(t *testing.T) {
	cfg := smallConfig()
	for _, tc := range []struct {
		name string
		do   func(u *UMEM, s *Socket, f map[string]*fakeRing)
	}{
		{"double free", func(u *UMEM, s *Socket, f map[string]*fakeRing) {
			a, _ := u.Alloc()
			u.Alloc()
			u.free = append(u.free, a, a) // counts balance, but a is there twice
			u.app -= 2
		}},
		{"lost frame", func(u *UMEM, s *Socket, f map[string]*fakeRing) {
			u.Alloc()
			u.app-- // the app forgot about it
		}},
		{"kernel ring overfull", func(u *UMEM, s *Socket, f map[string]*fakeRing) {
			s.Refill(2)
			f["rx"].prod += 5 // kernel claims 5 received with 2 in fill
		}},
		{"misaligned free entry", func(u *UMEM, s *Socket, f map[string]*fakeRing) {
			u.free[0] = 3
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUMEMOn(cfg, make([]byte, cfg.Frames*cfg.FrameSize))
			s, f := fakeSocket(u)
			tc.do(u, s, f)
			if err := u.Check(); err == nil {
				t.Fatalf("Check got nil, want an error; counts %+v", u.Counts())
			}
		})
	}
}

func TestFreeAndFrameBounds(t *testing.T) {
	cfg := smallConfig()
	u := newUMEMOn(cfg, make([]byte, cfg.Frames*cfg.FrameSize))
	if u.Free(0) {
		t.Error("Free with a full stack got true, want false (double free)")
	}
	if _, ok := u.Alloc(); !ok {
		t.Fatal("Alloc failed")
	}
	if u.Free(uint64(cfg.Frames * cfg.FrameSize)) {
		t.Error("Free past the area got true, want false")
	}
	for _, tc := range []struct {
		addr uint64
		n    uint32
		ok   bool
	}{
		{256, 64, true}, {0, 2048, true}, {2000, 100, false}, {^uint64(0) - 10, 20, false},
		{uint64(cfg.Frames*cfg.FrameSize) - 10, 10, true}, {uint64(cfg.Frames * cfg.FrameSize), 1, false},
	} {
		if got := u.Frame(tc.addr, tc.n); (got != nil) != tc.ok || (got != nil && len(got) != int(tc.n)) {
			t.Errorf("Frame(%#x, %d) got len %d nil=%v, want ok=%v", tc.addr, tc.n, len(got), got == nil, tc.ok)
		}
	}
}

func TestUMEMAllocDrains(t *testing.T) {
	cfg := smallConfig()
	u, err := NewUMEM(cfg)
	if err != nil {
		t.Fatalf("NewUMEM: %v", err)
	}
	defer u.Close()
	seen := map[uint64]bool{}
	for i := 0; i < cfg.Frames; i++ {
		a, ok := u.Alloc()
		if !ok || seen[a] || a%uint64(cfg.FrameSize) != 0 {
			t.Fatalf("Alloc %d got %#x ok=%v (dup=%v)", i, a, ok, seen[a])
		}
		seen[a] = true
		u.FrameBuf(a)[0] = 1 // the mapping is writable
	}
	if _, ok := u.Alloc(); ok {
		t.Fatal("Alloc on empty stack got ok")
	}
	if c := u.Counts(); c.App != int64(cfg.Frames) || c.Free != 0 {
		t.Fatalf("Counts got %+v, want all in App", c)
	}
}

func TestRefillCompleteNoAlloc(t *testing.T) {
	cfg := smallConfig()
	u := newUMEMOn(cfg, make([]byte, cfg.Frames*cfg.FrameSize))
	s, f := fakeSocket(u)
	a := testing.AllocsPerRun(100, func() {
		n := s.Refill(4)
		// Kernel: take the fill entries straight to RX; app forwards to TX;
		// kernel completes them.
		for i := uint32(0); i < n; i++ {
			f["rx"].descs[(f["rx"].prod+i)&15] = Desc{Addr: f["fill"].addrs[(f["fill"].cons+i)&15]}
		}
		f["fill"].cons += n
		f["rx"].prod += n
		m, start := s.RX().Peek(16)
		got, ts := s.TX().Reserve(m)
		for i := uint32(0); i < got; i++ {
			s.TX().Set(ts+i, s.RX().Desc(start+i))
		}
		s.RX().Release(m)
		s.TX().Submit(got)
		for i := uint32(0); i < got; i++ {
			f["comp"].addrs[(f["comp"].prod+i)&15] = f["tx"].descs[(f["tx"].cons+i)&15].Addr
		}
		f["tx"].cons += got
		f["comp"].prod += got
		s.Complete(16)
	})
	if a != 0 {
		t.Fatalf("allocs got %v, want 0", a)
	}
	if err := u.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if c := u.Counts(); c.Free != int64(cfg.Frames) {
		t.Fatalf("Counts got %+v, want all frames free after the round trips", c)
	}
}

// TestMultiBufferChainAccounting plays a multi-buffer kernel on fake rings:
// a frame of three buffers (Contd on the first two) and a frame of one
// arrive on A and are forwarded to B as they are. The rings count frames
// (RX, TX), the UMEM and the completion ring count buffers, and Check
// holds throughout.
func TestMultiBufferChainAccounting(t *testing.T) {
	cfg := smallConfig()
	cfg.MultiBuffer = true
	u := newUMEMOn(cfg, make([]byte, cfg.Frames*cfg.FrameSize))
	a, fa := fakeSocket(u)
	b, fb := fakeSocket(u)
	a.Refill(8)
	lens := []uint32{1792, 1792, 400, 60}
	opts := []uint32{Contd, Contd, 0, 0}
	for i := range lens {
		fa["rx"].descs[i] = Desc{Addr: fa["fill"].addrs[i] + 256, Len: lens[i], Options: opts[i]}
	}
	fa["fill"].cons += 4
	fa["rx"].prod += 4
	n, start := a.RX().Peek(16)
	if n != 4 {
		t.Fatalf("RX Peek got %d, want 4 descriptors", n)
	}
	frames := 0
	for i := uint32(0); i < n; i++ {
		if !a.RX().Desc(start + i).More() {
			frames++
		}
	}
	if frames != 2 {
		t.Fatalf("frames ending in the batch got %d, want 2", frames)
	}
	got, ts := b.TX().Reserve(n)
	for i := uint32(0); i < got; i++ {
		b.TX().Set(ts+i, a.RX().Desc(start+i))
	}
	a.RX().Release(n)
	b.TX().Submit(got)
	if err := u.Check(); err != nil {
		t.Fatal(err)
	}
	if c := u.Counts(); c.TX != 4 || c.Fill != 4 {
		t.Fatalf("Counts got %+v, want 4 buffers on TX and 4 in fill", c)
	}
	for i := uint32(0); i < 4; i++ {
		if d := fb["tx"].descs[i]; d.Options != opts[i] {
			t.Errorf("TX descriptor %d options got %#x, want %#x (Contd kept on all but the last)", i, d.Options, opts[i])
		}
		fb["comp"].addrs[i] = fb["tx"].descs[i].Addr
	}
	fb["tx"].cons += 4
	fb["comp"].prod += 4
	if n := b.Complete(16); n != 4 {
		t.Fatalf("Complete got %d, want 4 buffers", n)
	}
	if err := u.Check(); err != nil {
		t.Fatal(err)
	}
	if a.rx.frames != 2 || a.rx.moved != 4 || b.tx.frames != 2 || b.tx.moved != 4 || b.comp.moved != 4 {
		t.Errorf("RX frames %d buffers %d, TX frames %d buffers %d, completed %d: want 2, 4, 2, 4, 4",
			a.rx.frames, a.rx.moved, b.tx.frames, b.tx.moved, b.comp.moved)
	}
}
