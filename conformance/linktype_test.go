package conformance

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/replay"
)

// Link types (tcpdump.org/linktypes.html) the test writes.
const (
	linkRaw   = 101
	linkSLL   = 113
	link80211 = 105
	linkSLL2  = 276
)

// rewrite writes the Ethernet frames of src as a capture of another link
// type: raw IP (101), IPv4/IPv6 (228/229 are not needed: 101 carries both),
// Linux cooked SLL (113) and SLL2 (276).
func rewrite(t *testing.T, src string, link uint32) string {
	t.Helper()
	frames, err := replay.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), filepath.Base(src)+".link"+strconv.Itoa(int(link))+".pcap")
	// A classic pcap file, written by hand: gopacket's writer takes an
	// 8-bit link type and cannot write SLL2 (276).
	buf := binary.LittleEndian.AppendUint32(nil, 0xa1b2c3d4)
	buf = binary.LittleEndian.AppendUint16(buf, 2)
	buf = binary.LittleEndian.AppendUint16(buf, 4)
	buf = append(buf, make([]byte, 8)...) // thiszone, sigfigs
	buf = binary.LittleEndian.AppendUint32(buf, 65535)
	buf = binary.LittleEndian.AppendUint32(buf, link)
	for i, fr := range frames {
		d := fr.Data
		et, off, ok := l3(d)
		if !ok {
			continue // non-IP frames have no raw-IP form
		}
		ip := d[off:]
		var out []byte
		switch link {
		case linkRaw:
			out = ip
		case linkSLL:
			h := make([]byte, 16)
			binary.BigEndian.PutUint16(h[2:], 1) // ARPHRD_ETHER
			binary.BigEndian.PutUint16(h[4:], 6)
			copy(h[6:12], d[6:12])
			binary.BigEndian.PutUint16(h[14:], et)
			out = append(h, ip...)
		case linkSLL2:
			h := make([]byte, 20)
			binary.BigEndian.PutUint16(h[0:], et)
			binary.BigEndian.PutUint16(h[8:], 1)
			h[11] = 6
			copy(h[12:18], d[6:12])
			out = append(h, ip...)
		default:
			out = d
		}
		wire := len(out) + fr.WireLen - len(d)
		buf = binary.LittleEndian.AppendUint32(buf, uint32(i))
		buf = binary.LittleEndian.AppendUint32(buf, 0)
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(out)))
		buf = binary.LittleEndian.AppendUint32(buf, uint32(wire))
		buf = append(buf, out...)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLinkTypes runs the harness on captures rewritten as raw IP and Linux
// cooked captures: statewire and the kernel agree on them exactly as on
// the Ethernet originals (VLAN tags are lost in the rewrite, so the
// captures used have none). Other link types are refused with
// replay.ErrLinkType.
func TestLinkTypes(t *testing.T) {
	lab.RequireRoot(t)
	shared := testenv.Shared(t)
	ctx := context.Background()
	h := newTestHarness(t, Options{Helpers: true})
	for _, name := range []string{"ftp-active-port-download.pcap", "icmp-port-unreach-for-udp-dns.pcap", "tcp-ipv6-smtp.pcap"} {
		orig := filepath.Join(shared, "pcaps", name)
		base, err := h.CompareFile(ctx, orig)
		if err != nil {
			t.Fatal(err)
		}
		for _, link := range []uint32{linkRaw, linkSLL, linkSLL2} {
			t.Run(name+"/link"+strconv.Itoa(int(link)), func(t *testing.T) {
				r, err := h.CompareFile(ctx, rewrite(t, orig, link))
				if err != nil {
					t.Fatal(err)
				}
				if r.Compared != base.Compared || r.Equal != r.Compared || len(r.TableDiffs) != 0 {
					t.Errorf("got %d/%d agree, %d table differences; want %d/%d as the Ethernet capture, none",
						r.Equal, r.Compared, len(r.TableDiffs), base.Compared, base.Compared)
				}
			})
		}
	}
	t.Run("unsupported", func(t *testing.T) {
		path := rewrite(t, filepath.Join(shared, "pcaps", "tcp-syn-ack-rst.pcap"), link80211)
		_, err := h.CompareFile(ctx, path)
		if !errors.Is(err, replay.ErrLinkType) {
			t.Errorf("802.11 capture: got %v, want an error wrapping replay.ErrLinkType", err)
		}
		if _, err := ReadFrames(path); !errors.Is(err, replay.ErrLinkType) {
			t.Errorf("ReadFrames: got %v, want an error wrapping replay.ErrLinkType", err)
		}
	})
}
