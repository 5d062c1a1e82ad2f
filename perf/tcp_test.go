package perf

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/statewire/statewire/lab"
)

// tcpChecksumOK recomputes the TCP checksum of an IPv4 frame.
func tcpChecksumOK(t *testing.T, f []byte) bool {
	t.Helper()
	ipLen := int(binary.BigEndian.Uint16(f[16:]))
	tcp := f[34 : 14+ipLen]
	var pseudo [12]byte
	copy(pseudo[0:8], f[26:34])
	pseudo[9] = 6
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(tcp)))
	return fold(sum16(tcp, sum16(pseudo[:], 0))) == 0xffff
}

func TestTCPFrame(t *testing.T) {
	l, r := lab.LeftIPv4.Addr(), lab.RightIPv4.Addr()
	for _, tc := range []struct {
		name    string
		size    int
		flags   uint8
		payload bool
		wantLen int
	}{
		{"SYN", 64, tcpSYN, false, 60},
		{"data 64", 64, tcpACK | tcpPSH, true, 60},
		{"data 1518", 1518, tcpACK | tcpPSH, true, 1514},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tcpFrame(macL, macR, l, r, tc.size, tc.flags, 1, 2, tc.payload)
			if len(f) != tc.wantLen {
				t.Fatalf("len = %d, want %d", len(f), tc.wantLen)
			}
			p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
			tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if tcp == nil {
				t.Fatalf("gopacket finds no TCP layer: %v", p.ErrorLayer())
			}
			if got := tcp.SYN; got != (tc.flags&tcpSYN != 0) {
				t.Errorf("SYN = %v", got)
			}
			if !tcpChecksumOK(t, f) {
				t.Errorf("TCP checksum does not verify")
			}
		})
	}
}

// TestTCPGeneratorChecksum runs the generator program over TCP templates
// (both directions) and checks that the rewritten ports keep the checksum
// valid.
func TestTCPGeneratorChecksum(t *testing.T) {
	lab.RequireRoot(t)
	l, r := lab.LeftIPv4.Addr(), lab.RightIPv4.Addr()
	for _, reply := range []bool{false, true} {
		t.Run(fmt.Sprintf("reply=%v", reply), func(t *testing.T) {
			lay := tcpLayout(reply)
			in := tcpFrame(macL, macR, l, r, 128, tcpACK|tcpPSH, 1001, 5001, true)
			lay.csumBase = binary.LittleEndian.Uint16(in[lay.csum:])
			cnt, prog := testGenerator(t, 70000, false, lay, nil)
			onCPU0(t, func() {
				ncpu, _ := ebpf.PossibleCPU()
				vals := make([]uint64, ncpu)
				if err := cnt.Put(uint32(0), vals); err != nil {
					t.Errorf("seed: %v", err)
					return
				}
				bad := 0
				for i := 0; i < 70000 && bad < 5; i += 7 {
					vals[0] = uint64(i)
					if err := cnt.Put(uint32(0), vals); err != nil {
						t.Errorf("seed: %v", err)
						return
					}
					opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256), Repeat: 1}
					if _, err := prog.Run(&opts); err != nil {
						t.Errorf("run: %v", err)
						return
					}
					out := opts.DataOut[:len(in)]
					// Live frames recycle pages: the next run sees this
					// run's output, as the generator does after a batch.
					in = append([]byte(nil), out...)
					sp, dp := binary.BigEndian.Uint16(out[lay.sport:]), binary.BigEndian.Uint16(out[lay.dport:])
					idx := i
					if want := uint16(0x8000 | idx&0x7fff); sp != want {
						t.Errorf("run %d: flow sport %#x, want %#x", i, sp, want)
					}
					if want := uint16(0x4000 + idx>>15); dp != want {
						t.Errorf("run %d: flow dport %#x, want %#x", i, dp, want)
					}
					if !tcpChecksumOK(t, out) {
						bad++
						t.Errorf("flow %d: TCP checksum does not verify after the port rewrite", i)
					}
				}
			})
		})
	}
}
