package replay

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MaxCaptureLen is the largest captured frame we accept: libpcap's
// MAXIMUM_SNAPLEN, the limit tcpdump and wireshark write under.
const MaxCaptureLen = 262144

// ErrCaptureBounds is wrapped by Read when a record or block claims more
// bytes than MaxCaptureLen or than the file holds.
var ErrCaptureBounds = errors.New("capture record out of bounds")

// checkBounds walks the records (pcap) or blocks (pcapng) of a whole
// capture and checks every length against MaxCaptureLen and the bytes that
// follow. gopacket's readers allocate a record's claimed length before
// reading it, so a 40-byte file claiming a 4 GiB frame would cost 4 GiB;
// after this walk every claim is backed by bytes in hand. A file cut short
// in its last record is left to the reader, which reports it.
func checkBounds(b []byte) error {
	if len(b) < 4 {
		return nil // the reader says it is too short
	}
	if binary.LittleEndian.Uint32(b) == 0x0a0d0d0a {
		return checkPcapngBounds(b)
	}
	return checkPcapBounds(b)
}

func checkPcapBounds(b []byte) error {
	if len(b) < 24 {
		return nil
	}
	var bo binary.ByteOrder = binary.LittleEndian
	switch binary.BigEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.BigEndian
	}
	for off, n := 24, 1; off+16 <= len(b); n++ {
		caplen := uint64(bo.Uint32(b[off+8:]))
		if caplen > MaxCaptureLen {
			return fmt.Errorf("packet %d: captured length %d beyond %d: %w", n, caplen, MaxCaptureLen, ErrCaptureBounds)
		}
		off += 16 + int(caplen)
	}
	return nil
}

// pcapng block types whose captured length we check; others are skipped
// by their total length alone.
const (
	ngEnhancedPacket = 6
	ngSectionHeader  = 0x0a0d0d0a
)

func checkPcapngBounds(b []byte) error {
	var bo binary.ByteOrder = binary.LittleEndian
	for off, n := 0, 1; off+12 <= len(b); n++ {
		typ := binary.LittleEndian.Uint32(b[off:]) // the SHB type reads the same either way
		if typ == ngSectionHeader {
			if binary.BigEndian.Uint32(b[off+8:]) == 0x1a2b3c4d {
				bo = binary.BigEndian
			} else {
				bo = binary.LittleEndian
			}
		} else {
			typ = bo.Uint32(b[off:])
		}
		total := uint64(bo.Uint32(b[off+4:]))
		if total < 12 {
			return fmt.Errorf("pcapng block %d: length %d: %w", n, total, ErrCaptureBounds)
		}
		if typ == ngEnhancedPacket && off+24 <= len(b) {
			caplen := uint64(bo.Uint32(b[off+20:]))
			if caplen > MaxCaptureLen || caplen+32 > total {
				return fmt.Errorf("pcapng block %d: captured length %d beyond the block (%d bytes) or %d: %w",
					n, caplen, total, MaxCaptureLen, ErrCaptureBounds)
			}
		}
		if total > uint64(len(b)-off) {
			return nil // cut short: the reader reports it
		}
		off += int(total)
	}
	return nil
}
