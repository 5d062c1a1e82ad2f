package replay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	pt "github.com/statewire/statewire/packet/packettest"
)

// pcapFile builds a little-endian pcap file of one packet with the given
// 32-bit link type.
func pcapFile(link uint32, pkt []byte) []byte {
	var b bytes.Buffer
	h := make([]byte, 24)
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], 65535)
	binary.LittleEndian.PutUint32(h[20:], link)
	b.Write(h)
	r := make([]byte, 16)
	binary.LittleEndian.PutUint32(r[0:], 1)
	binary.LittleEndian.PutUint32(r[8:], uint32(len(pkt)))
	binary.LittleEndian.PutUint32(r[12:], uint32(len(pkt)))
	b.Write(r)
	b.Write(pkt)
	return b.Bytes()
}

// TestLinkTypes: raw IP, Linux cooked v1 and v2 become the same Ethernet
// frame's IP packet; an unknown link type is a clear error.
func TestLinkTypes(t *testing.T) {
	eth := pt.UDP4("198.18.0.1", "198.18.0.2", 1, 2, []byte("x"))
	ip := eth[14:]
	sll := append(make([]byte, 16), ip...)
	binary.BigEndian.PutUint16(sll[14:], 0x0800)
	sll2 := append(make([]byte, 20), ip...)
	binary.BigEndian.PutUint16(sll2[0:], 0x0800)
	for _, tt := range []struct {
		name string
		link uint32
		pkt  []byte
	}{
		{"ethernet", 1, eth}, {"raw", 101, ip}, {"ipv4", 228, ip}, {"sll", 113, sll}, {"sll2", 276, sll2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			frames, err := Read(bytes.NewReader(pcapFile(tt.link, tt.pkt)))
			if err != nil {
				t.Fatal(err)
			}
			if len(frames) != 1 || !bytes.Equal(frames[0].Data[14:], ip) || binary.BigEndian.Uint16(frames[0].Data[12:]) != 0x0800 {
				t.Fatalf("got %x, want an Ethernet frame around %x", frames, ip)
			}
		})
	}
	if _, err := Read(bytes.NewReader(pcapFile(147, ip))); !errors.Is(err, ErrLinkType) {
		t.Errorf("link type 147: got %v, want ErrLinkType", err)
	}
}

// TestReadRefusesHugeClaims: a capture whose record claims more bytes than
// any capture holds is refused with ErrCaptureBounds before anything is
// allocated for it (the fuzzer found a 4 GiB allocation from 60 bytes).
func TestReadRefusesHugeClaims(t *testing.T) {
	pcap := pcapFile(1, pt.UDP4("198.18.0.1", "198.18.0.2", 1, 2, nil))
	binary.LittleEndian.PutUint32(pcap[16:], 0xffffffff) // snaplen
	binary.LittleEndian.PutUint32(pcap[24+8:], 0xfffffff0)
	binary.LittleEndian.PutUint32(pcap[24+12:], 0xfffffff0)

	ng := []byte{
		0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 28, 0, 0, 0, // SHB
		1, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, // IDB, Ethernet
		6, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf0, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0xff, 0, 0, 0, 0, 36, 0, 0, 0, // EPB claiming 4 GiB
	}
	for name, b := range map[string][]byte{"pcap": pcap, "pcapng": ng} {
		t.Run(name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(b))
			if !errors.Is(err, ErrCaptureBounds) {
				t.Fatalf("got %v, want ErrCaptureBounds", err)
			}
		})
	}
}
