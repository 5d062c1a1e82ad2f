package packettest

import (
	"errors"
	"io"
	"os"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/pcapgo"
)

// Captured is one frame of a capture file as it was recorded.
type Captured struct {
	Data    []byte
	WireLen int // length on the wire (≥ len(Data) when the snaplen cut it)
}

// ReadPcap reads every frame of a pcap or pcapng file (told apart by the
// magic number), failing tb on any error. Frames are returned as recorded,
// whatever the link type; frame i is number i+1 of the kernel-states files.
// (replay.ReadFile is the production reader; it normalises link types and
// sits above packages whose tests use this one.)
func ReadPcap(tb testing.TB, path string) []Captured {
	tb.Helper()
	fh, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer fh.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(fh, magic); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		tb.Fatal(err)
	}
	var next func() ([]byte, gopacket.CaptureInfo, error)
	if string(magic) == "\x0a\x0d\x0d\x0a" {
		r, err := pcapgo.NewNgReader(fh, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		next = r.ReadPacketData
	} else {
		r, err := pcapgo.NewReader(fh)
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		next = r.ReadPacketData
	}
	var out []Captured
	for n := 1; ; n++ {
		data, ci, err := next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			tb.Fatalf("%s #%d: %v", path, n, err)
		}
		out = append(out, Captured{Data: data, WireLen: ci.Length})
	}
}
