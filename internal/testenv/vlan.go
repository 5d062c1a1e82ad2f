package testenv

import "encoding/binary"

// Tag8021Q returns a copy of the Ethernet frame with an 802.1Q tag of VLAN
// vid inserted after the MAC addresses, or nil when the frame is shorter
// than an Ethernet header or already tagged (802.1Q, 802.1ad or the old
// QinQ type). The IP and L4 headers, and so their checksums, are unchanged.
func Tag8021Q(frame []byte, vid uint16) []byte {
	if len(frame) < 14 {
		return nil
	}
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x8100, 0x88a8, 0x9100:
		return nil
	}
	out := make([]byte, 0, len(frame)+4)
	out = append(out, frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, 0x8100)
	out = binary.BigEndian.AppendUint16(out, vid&0x0fff)
	return append(out, frame[12:]...)
}

// OneWay tags the frames of one direction: every untagged frame whose
// source MAC address is the first frame's gets an 802.1Q tag of vid
// (Tag8021Q), the others are kept as they are. It is what a capture point
// or trunk that tags one way only records (issue 13, --vlan-zones=false).
// frames are not modified; tagged reports which of the returned frames
// got a tag.
func OneWay(frames [][]byte, vid uint16) (out [][]byte, tagged []bool) {
	out = make([][]byte, len(frames))
	tagged = make([]bool, len(frames))
	var sender []byte
	for i, f := range frames {
		out[i] = f
		if len(f) < 14 {
			continue
		}
		if sender == nil {
			sender = f[6:12]
		}
		if string(f[6:12]) != string(sender) {
			continue
		}
		if t := Tag8021Q(f, vid); t != nil {
			out[i], tagged[i] = t, true
		}
	}
	return out, tagged
}
