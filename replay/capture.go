package replay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Frame is one captured frame, normalised to Ethernet framing.
type Frame struct {
	Data    []byte
	WireLen int   // length on the wire (≥ len(Data) for snaplen-truncated captures)
	Time    int64 // capture timestamp, ns since the Unix epoch
}

// ErrLinkType is wrapped by ReadFile for a capture whose link type it
// cannot turn into Ethernet frames.
var ErrLinkType = errors.New("unsupported link type")

// Link types (tcpdump.org/linktypes.html) we turn into Ethernet frames.
const (
	linkNull     = 0
	linkEthernet = 1
	linkRawBSD12 = 12
	linkRawBSD14 = 14
	linkRaw      = 101
	linkLoop     = 108
	linkSLL      = 113
	linkIPv4     = 228
	linkIPv6     = 229
	linkSLL2     = 276
)

// ReadFile reads a pcap or pcapng capture (told apart by its magic number)
// and returns its frames as Ethernet frames. Raw-IP, Linux cooked (SLL,
// SLL2) and BSD loopback captures get a synthesised Ethernet header with
// zero addresses; other link types are an error wrapping ErrLinkType.
func ReadFile(path string) ([]Frame, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	frames, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return frames, nil
}

// Read reads a pcap or pcapng stream; see ReadFile.
func Read(r io.Reader) ([]Frame, error) {
	// The whole capture is read first (its frames are all kept anyway) so
	// that every claimed length can be checked before a reader allocates it.
	whole, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if err := checkBounds(whole); err != nil {
		return nil, err
	}
	br := bufio.NewReader(bytes.NewReader(whole))
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("not a capture file: %w", err)
	}
	var (
		link layers.LinkType
		wide int // a link type that does not fit gopacket's 8 bits
		next func() ([]byte, int, int64, error)
	)
	if binary.LittleEndian.Uint32(magic) == 0x0a0d0d0a {
		ng, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, fmt.Errorf("pcapng: %w", err)
		}
		link = ng.LinkType()
		next = func() ([]byte, int, int64, error) {
			data, ci, err := ng.ReadPacketData()
			return data, ci.Length, ci.Timestamp.UnixNano(), err
		}
	} else {
		// gopacket's LinkType is 8 bits wide: read the 32-bit field of
		// the pcap header ourselves so that, say, Linux cooked v2 (276)
		// is not mistaken for 20.
		hdr, err := br.Peek(24)
		if err != nil {
			return nil, fmt.Errorf("pcap: short header: %w", err)
		}
		var fileLink uint32
		switch binary.LittleEndian.Uint32(hdr[0:4]) {
		case 0xa1b2c3d4, 0xa1b23c4d:
			fileLink = binary.LittleEndian.Uint32(hdr[20:24])
		default:
			fileLink = binary.BigEndian.Uint32(hdr[20:24])
		}
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("pcap: %w", err)
		}
		link = layers.LinkType(fileLink & 0xff)
		if fileLink > 0xff {
			wide = int(fileLink)
		}
		next = func() ([]byte, int, int64, error) {
			data, ci, err := pr.ReadPacketData()
			return data, ci.Length, ci.Timestamp.UnixNano(), err
		}
	}
	var frames []Frame
	for {
		data, wire, ts, err := next()
		if err == io.EOF {
			return frames, nil
		}
		if err != nil {
			return frames, fmt.Errorf("packet %d: %w", len(frames)+1, err)
		}
		lt := int(link)
		if wide != 0 {
			lt = wide
		}
		fr, err := toEthernet(lt, data, wire)
		if err != nil {
			return nil, err
		}
		fr.Time = ts
		frames = append(frames, fr)
	}
}

// toEthernet rewrites one frame of the given link type as Ethernet.
func toEthernet(link int, data []byte, wire int) (Frame, error) {
	if wire < len(data) {
		wire = len(data)
	}
	switch link {
	case linkEthernet:
		return Frame{Data: data, WireLen: wire}, nil
	case linkRaw, linkRawBSD12, linkRawBSD14, linkIPv4, linkIPv6:
		return withEthernet(data, wire, 0, etherTypeOfIP(data))
	case linkNull, linkLoop:
		if len(data) < 4 {
			return withEthernet(nil, 0, 0, 0)
		}
		return withEthernet(data, wire, 4, etherTypeOfIP(data[4:]))
	case linkSLL:
		if len(data) < 16 {
			return withEthernet(nil, 0, 0, 0)
		}
		return withEthernet(data, wire, 16, binary.BigEndian.Uint16(data[14:16]))
	case linkSLL2:
		if len(data) < 20 {
			return withEthernet(nil, 0, 0, 0)
		}
		return withEthernet(data, wire, 20, binary.BigEndian.Uint16(data[0:2]))
	}
	return Frame{}, fmt.Errorf("%w %d (supported: Ethernet, raw IP, Linux cooked SLL/SLL2, BSD loopback)", ErrLinkType, link)
}

func etherTypeOfIP(b []byte) uint16 {
	if len(b) > 0 && b[0]>>4 == 6 {
		return 0x86dd
	}
	return 0x0800
}

// withEthernet replaces the first strip bytes of data by a 14-byte Ethernet
// header carrying etherType.
func withEthernet(data []byte, wire, strip int, etherType uint16) (Frame, error) {
	if strip > len(data) {
		strip = len(data)
	}
	out := make([]byte, 14+len(data)-strip)
	binary.BigEndian.PutUint16(out[12:14], etherType)
	copy(out[14:], data[strip:])
	return Frame{Data: out, WireLen: wire - strip + 14}, nil
}
