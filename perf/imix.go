package perf

import (
	"encoding/binary"
	"net"
	"strconv"
)

// IMIX in Options.FrameSizes asks for the classic simple IMIX: frame sizes
// 64, 576 and 1500 B (Ethernet, FCS included, like the 64/512/1518 of the
// other runs) in the ratio 7:4:1, interleaved frame by frame by the
// generator (frame c of the run has size IMIXSizes[class of c mod 12]).
// Its mean frame is 354.33 B.
const IMIX = -1

// IMIXSizes and imixWeights are the simple IMIX: 7 × 64, 4 × 576, 1 × 1500.
var (
	IMIXSizes   = [3]int{64, 576, 1500}
	imixWeights = [3]int32{7, 4, 1}
)

// imixCycle is the sum of the weights: the mix repeats every 12 frames.
const imixCycle = 12

// Offsets of the length fields the IMIX generator rewrites.
const (
	offIPLen  = 16
	offIPCsum = 24
	offUDPLen = 38
)

// imixFields are what the generator writes for each IMIX size: the IPv4
// total length, header checksum and UDP length as 16-bit memory views
// (the program stores them as immediates), and the tail adjustment from
// the 1500 B template.
type imixFields struct {
	fields [3][3]uint16
	delta  [3]int
}

// newIMIXFields derives the fields from the template of each size.
func newIMIXFields(src, dst net.HardwareAddr) *imixFields {
	var m imixFields
	top := IMIXSizes[len(IMIXSizes)-1]
	for i, size := range IMIXSizes {
		f := Frame(src, dst, size)
		m.fields[i] = [3]uint16{
			binary.LittleEndian.Uint16(f[offIPLen:]),
			binary.LittleEndian.Uint16(f[offIPCsum:]),
			binary.LittleEndian.Uint16(f[offUDPLen:]),
		}
		m.delta[i] = size - top
	}
	return &m
}

// MeanFrameBytes is the mean frame size (FCS included) of a FrameSizes
// entry: the size itself, or the IMIX mean.
func MeanFrameBytes(size int) float64 {
	if size != IMIX {
		return float64(size)
	}
	var sum, n float64
	for i, s := range IMIXSizes {
		sum += float64(s) * float64(imixWeights[i])
		n += float64(imixWeights[i])
	}
	return sum / n
}

// SizeLabel names a FrameSizes entry: "64" or "imix".
func SizeLabel(size int) string {
	if size == IMIX {
		return "imix"
	}
	return strconv.Itoa(size)
}

// Gbps is the layer-2 bit rate (frames with FCS, no preamble or gap) of
// pps frames a second of a FrameSizes entry.
func Gbps(pps float64, size int) float64 {
	return pps * MeanFrameBytes(size) * 8 / 1e9
}
