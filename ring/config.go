package ring

import (
	"errors"
	"fmt"
)

// Mode selects how a socket is bound to its device queue.
type Mode int

const (
	// ModeAuto tries XDP_ZEROCOPY and falls back to XDP_COPY when the
	// driver refuses it (veth, most virtual devices).
	ModeAuto Mode = iota
	// ModeZeroCopy requires XDP_ZEROCOPY; Open fails if the driver
	// cannot do it.
	ModeZeroCopy
	// ModeCopy forces XDP_COPY: the kernel copies each frame between the
	// driver's buffers and the UMEM.
	ModeCopy
)

// String returns "auto", "zerocopy" or "copy".
func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeZeroCopy:
		return "zerocopy"
	case ModeCopy:
		return "copy"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode turns a flag value ("auto", "zerocopy", "copy") into a Mode.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "auto", "":
		return ModeAuto, nil
	case "zerocopy", "zc":
		return ModeZeroCopy, nil
	case "copy":
		return ModeCopy, nil
	}
	return 0, fmt.Errorf("%w: mode %q (want auto, zerocopy or copy)", ErrConfig, s)
}

// ErrConfig is wrapped by every Config validation error.
var ErrConfig = errors.New("ring: invalid config")

// Config sizes a UMEM and the rings of every socket opened on it. All ring
// sizes and Frames must be powers of two, because ring positions are
// computed with a mask.
type Config struct {
	// Frames is the number of frames in the UMEM, shared by all sockets
	// opened on it. It must cover every ring that can hold frames at
	// once: the sum over sockets of FillSize + TXSize, plus what the
	// application holds, is a good lower bound.
	Frames int
	// FrameSize is the size of one frame in bytes: 2048 or 4096.
	FrameSize int
	// Headroom is reserved in front of each received frame by the kernel
	// (in addition to XDP_PACKET_HEADROOM); 0 unless the application
	// needs to prepend headers.
	Headroom int
	// FillSize and CompletionSize are the sizes of each socket's fill and
	// completion rings; RXSize and TXSize of its RX and TX rings.
	FillSize, CompletionSize, RXSize, TXSize int
	// Mode is the bind mode asked for.
	Mode Mode
	// NoNeedWakeup disables XDP_USE_NEED_WAKEUP (then every TX batch is
	// kicked with sendto). For comparisons only.
	NoNeedWakeup bool
	// MultiBuffer binds with XDP_USE_SG: a frame longer than one buffer
	// (FrameSize - headroom) arrives as a chain of RX descriptors, all
	// but the last with Contd in Options, and is sent as such a chain
	// (Documentation/networking/af_xdp.rst, "Multi-Buffer Support").
	// Without it the kernel drops such frames. The application must then
	// treat every descriptor with Contd as a part of the next frame.
	MultiBuffer bool
}

// Contd is XDP_PKT_CONTD in Desc.Options: the frame continues in the next
// descriptor of the same ring.
const Contd = 0x1

// MaxChain is the most buffers the kernel puts in one frame (MAX_SKB_FRAGS
// + 1 with the default MAX_SKB_FRAGS of 17): a longer frame is dropped on
// RX and refused on TX.
const MaxChain = 18

// DefaultConfig is a UMEM of 4096 frames of 2048 bytes and rings of 1024
// entries: enough for the two sockets (A and B) of one queue.
func DefaultConfig() Config {
	return Config{
		Frames:         4096,
		FrameSize:      2048,
		FillSize:       1024,
		CompletionSize: 1024,
		RXSize:         1024,
		TXSize:         1024,
		Mode:           ModeAuto,
	}
}

func isPow2(n int) bool { return n > 0 && n&(n-1) == 0 }

// Validate reports the first problem with c, wrapping ErrConfig.
func (c Config) Validate() error {
	if c.FrameSize != 2048 && c.FrameSize != 4096 {
		return fmt.Errorf("%w: FrameSize %d: must be 2048 or 4096", ErrConfig, c.FrameSize)
	}
	if c.Headroom < 0 || c.Headroom > c.FrameSize-xdpPacketHeadroom-minFrameData {
		return fmt.Errorf("%w: Headroom %d: must be in [0, %d] for FrameSize %d",
			ErrConfig, c.Headroom, c.FrameSize-xdpPacketHeadroom-minFrameData, c.FrameSize)
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"Frames", c.Frames},
		{"FillSize", c.FillSize},
		{"CompletionSize", c.CompletionSize},
		{"RXSize", c.RXSize},
		{"TXSize", c.TXSize},
	} {
		if !isPow2(f.v) {
			return fmt.Errorf("%w: %s %d: must be a power of two > 0", ErrConfig, f.name, f.v)
		}
		if f.v > maxRing {
			return fmt.Errorf("%w: %s %d: must be at most %d", ErrConfig, f.name, f.v, maxRing)
		}
	}
	if c.Frames < c.FillSize {
		return fmt.Errorf("%w: Frames %d smaller than FillSize %d: the fill ring could never be filled",
			ErrConfig, c.Frames, c.FillSize)
	}
	if c.Mode < ModeAuto || c.Mode > ModeCopy {
		return fmt.Errorf("%w: Mode %d", ErrConfig, int(c.Mode))
	}
	return nil
}

const (
	// xdpPacketHeadroom is what the kernel keeps in front of each frame
	// in copy mode (XDP_PACKET_HEADROOM).
	xdpPacketHeadroom = 256
	// minFrameData keeps room for a full 1500-byte MTU frame with tags.
	minFrameData = 1522
	// maxRing bounds ring sizes so that index differences stay far from
	// the uint32 wrap and the mmap stays reasonable.
	maxRing = 1 << 20
)
