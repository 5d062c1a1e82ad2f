package ring

import (
	"errors"
	"fmt"
)

// UMEM is one mmap'd area of Config.Frames frames of Config.FrameSize bytes,
// shared by every socket opened on it (normally the two ports of one queue),
// with a frame allocator and strict accounting: every frame is in exactly
// one place at any time:
//
//   - Free: on the UMEM's free stack;
//   - Fill: given to a socket's fill ring, held by the kernel, or waiting
//     on that socket's RX ring;
//   - App: held by the application (received and released from RX, reaped
//     from a completion ring, or taken with Alloc);
//   - TX: submitted on a socket's TX ring, held by the kernel, or waiting on
//     that socket's completion ring.
//
// The UMEM and its sockets belong to one goroutine (see the package doc).
type UMEM struct {
	cfg       Config
	area      []byte
	frameMask uint64 // FrameSize-1
	free      []uint64
	app       int64
	sockets   []*Socket
	fd        int // fd of the socket that registered the area, -1 before
	closed    bool
}

// ErrClosed is returned by operations on a closed UMEM or Socket.
var ErrClosed = errors.New("ring: closed")

// NewUMEM validates cfg and maps the frame area. Nothing is registered with
// the kernel until the first Open.
func NewUMEM(cfg Config) (*UMEM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	area, err := mmapArea(cfg.Frames * cfg.FrameSize)
	if err != nil {
		return nil, fmt.Errorf("ring: mmap UMEM of %d frames of %d bytes: %w", cfg.Frames, cfg.FrameSize, err)
	}
	u := newUMEMOn(cfg, area)
	return u, nil
}

// newUMEMOn builds the allocator over area (unit tests pass a plain slice).
func newUMEMOn(cfg Config, area []byte) *UMEM {
	u := &UMEM{
		cfg:       cfg,
		area:      area,
		frameMask: uint64(cfg.FrameSize - 1),
		free:      make([]uint64, cfg.Frames),
		fd:        -1,
	}
	// Stack order: frame 0 on top, so tests see low addresses first.
	for i := range u.free {
		u.free[i] = uint64(cfg.Frames-1-i) * uint64(cfg.FrameSize)
	}
	return u
}

// Config returns the configuration the UMEM was made with.
func (u *UMEM) Config() Config { return u.cfg }

// Frame returns the bytes of the packet at addr with length n, as found in
// an RX descriptor (Frame(d.Addr, d.Len)). It returns nil, never panics,
// when the range is outside the area or crosses a frame boundary.
func (u *UMEM) Frame(addr uint64, n uint32) []byte {
	end := addr + uint64(n)
	if end < addr || end > uint64(len(u.area)) || (addr&^u.frameMask) != ((end-1)&^u.frameMask) && n > 0 {
		return nil
	}
	return u.area[addr:end:end]
}

// FrameBuf returns the whole frame that contains addr (for building frames
// to transmit), or nil when addr is outside the area.
func (u *UMEM) FrameBuf(addr uint64) []byte {
	base := addr &^ u.frameMask
	if base >= uint64(len(u.area)) {
		return nil
	}
	end := base + u.frameMask + 1
	return u.area[base:end:end]
}

// Alloc takes a frame off the free stack; the frame is then the
// application's. ok is false when the stack is empty.
func (u *UMEM) Alloc() (addr uint64, ok bool) {
	n := len(u.free)
	if n == 0 {
		return 0, false
	}
	addr = u.free[n-1]
	u.free = u.free[:n-1]
	u.app++
	return addr, true
}

// Free returns a frame held by the application to the free stack. addr may
// point anywhere inside the frame. It returns false (and changes nothing)
// for an address outside the area or when the stack is already full, which
// means a double free.
func (u *UMEM) Free(addr uint64) bool {
	base := addr &^ u.frameMask
	if base >= uint64(len(u.area)) || len(u.free) == cap(u.free) {
		return false
	}
	u.free = append(u.free, base)
	u.app--
	return true
}

// Counts is a snapshot of where the frames are.
type Counts struct {
	Frames int64 // total frames in the UMEM
	Free   int64 // on the free stack
	App    int64 // held by the application
	Fill   int64 // in fill rings, the kernel, or RX rings (all sockets)
	TX     int64 // in TX rings, the kernel, or completion rings (all sockets)
}

// Counts returns where the frames are now.
func (u *UMEM) Counts() Counts {
	c := Counts{Frames: int64(u.cfg.Frames), Free: int64(len(u.free)), App: u.app}
	for _, s := range u.sockets {
		c.Fill += s.acct.fill
		c.TX += s.acct.tx
	}
	return c
}

// Check verifies the accounting: the places add up to the number of frames,
// none is negative, the free stack holds distinct, aligned, in-range frames,
// and no kernel ring holds more entries than its place accounts for. It
// allocates and walks the free stack: call it off the hot path.
func (u *UMEM) Check() error {
	c := u.Counts()
	if sum := c.Free + c.App + c.Fill + c.TX; sum != c.Frames {
		return fmt.Errorf("ring: frame accounting: free %d + app %d + fill %d + tx %d = %d, want %d frames",
			c.Free, c.App, c.Fill, c.TX, sum, c.Frames)
	}
	if c.App < 0 || c.Fill < 0 || c.TX < 0 {
		return fmt.Errorf("ring: frame accounting: negative place: app %d fill %d tx %d", c.App, c.Fill, c.TX)
	}
	seen := make([]bool, u.cfg.Frames)
	for _, a := range u.free {
		if a&u.frameMask != 0 || a >= uint64(len(u.area)) {
			return fmt.Errorf("ring: free stack holds bad address %#x", a)
		}
		i := a / uint64(u.cfg.FrameSize)
		if seen[i] {
			return fmt.Errorf("ring: frame %#x is on the free stack twice", a)
		}
		seen[i] = true
	}
	for _, s := range u.sockets {
		if err := s.checkRings(); err != nil {
			return err
		}
	}
	return nil
}

// Close unmaps the area. Sockets opened on it must be closed first.
func (u *UMEM) Close() error {
	if u.closed {
		return nil
	}
	for _, s := range u.sockets {
		if !s.closed {
			return fmt.Errorf("ring: UMEM close with socket on ifindex %d queue %d still open", s.ifindex, s.queue)
		}
	}
	u.closed = true
	if u.area == nil {
		return nil
	}
	err := munmap(u.area)
	u.area = nil
	return err
}
