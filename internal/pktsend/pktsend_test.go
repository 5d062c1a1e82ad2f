package pktsend_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/statewire/statewire/internal/pktsend"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.RunTests(m)) }

// etherExp is IEEE 802's local experimental EtherType: the hosts' stacks
// ignore such frames.
const etherExp = 0x88b5

func frame(l *lab.Lab, i int, size int) []byte {
	f := make([]byte, size)
	copy(f[0:6], l.RightMAC)
	copy(f[6:12], l.LeftMAC)
	binary.BigEndian.PutUint16(f[12:], etherExp)
	binary.BigEndian.PutUint32(f[14:], uint32(i))
	return f
}

// TestSend sends frames from the left host's veth through a ring of few
// slots (so the kernel must hand slots back for the ring to go round) and
// receives them on its peer, port A: every frame arrives, in order, byte
// for byte.
func TestSend(t *testing.T) {
	lab.RequireRoot(t)
	l := lab.NewT(t, lab.Options{Mode: lab.None, Bare: true})
	var rx int
	err := l.Do(l.BridgeNS, func() error {
		ifc, err := net.InterfaceByName(l.PortA)
		if err != nil {
			return err
		}
		proto := int(htons(etherExp))
		if rx, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(rx, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20); err != nil {
			return err
		}
		return unix.Bind(rx, &unix.SockaddrLinklayer{Protocol: htons(etherExp), Ifindex: ifc.Index})
	})
	if err != nil {
		t.Fatalf("receive socket on port A: %v", err)
	}
	defer unix.Close(rx)
	var r *pktsend.Ring
	if err := l.Do(l.LeftNS, func() (err error) { r, err = pktsend.Open(l.LeftIf, 128, 64); return err }); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Slots() != 64 || r.MaxFrame() != 128-pktsend.HdrLen {
		t.Errorf("Slots %d MaxFrame %d, want 64 and %d", r.Slots(), r.MaxFrame(), 128-pktsend.HdrLen)
	}
	const n = 1000
	for i := 0; i < n; {
		slot, buf, ok := r.Next()
		if !ok {
			if err := r.Flush(true); err != nil && !errors.Is(err, unix.ENOBUFS) {
				t.Fatalf("flush: %v", err)
			}
			continue
		}
		if slot != i%64 {
			t.Fatalf("frame %d in slot %d, want %d", i, slot, i%64)
		}
		copy(buf, frame(l, i, 60))
		r.Queue(60)
		i++
	}
	testenv.WaitFor(2*time.Second, func() bool {
		r.Flush(true)
		p, _ := r.Pending()
		return p == 0
	})
	if p, refused := r.Pending(); p != 0 || refused != 0 {
		t.Fatalf("pending %d, refused %d after the flush, want 0 and 0", p, refused)
	}
	buf := make([]byte, 2048)
	if err := unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m, _, err := unix.Recvfrom(rx, buf, 0)
		if err != nil {
			t.Fatalf("frame %d: %v (%d of %d arrived)", i, err, i, n)
		}
		if want := frame(l, i, 60); !bytes.Equal(buf[:m], want) {
			t.Fatalf("frame %d arrived as %x, want %x", i, buf[:m], want)
		}
	}
}

// TestRefused: a frame longer than the link takes is refused by the
// kernel; Pending reports it and gives the slot back.
func TestRefused(t *testing.T) {
	lab.RequireRoot(t)
	l := lab.NewT(t, lab.Options{Mode: lab.None, Bare: true})
	var r *pktsend.Ring
	if err := l.Do(l.LeftNS, func() (err error) { r, err = pktsend.Open(l.LeftIf, 2048, 4); return err }); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, buf, ok := r.Next()
	if !ok {
		t.Fatal("a fresh ring has no free slot")
	}
	copy(buf, frame(l, 0, 1600)) // MTU 1500
	r.Queue(1600)
	if err := r.Flush(true); !errors.Is(err, unix.EMSGSIZE) {
		t.Errorf("flush of a 1600-byte frame on a 1500 MTU link: %v, want EMSGSIZE", err)
	}
	if p, refused := r.Pending(); p != 0 || refused != 1 {
		t.Errorf("pending %d, refused %d, want 0 and 1", p, refused)
	}
	if slot, _, ok := r.Next(); !ok || slot != 1 {
		t.Errorf("next slot %d free %v, want slot 1 free", slot, ok)
	}
	if p, refused := r.Pending(); p != 0 || refused != 0 {
		t.Errorf("second look: pending %d, refused %d, want 0 and 0 (the refused slot was given back)", p, refused)
	}
}

func TestOpenGeometry(t *testing.T) {
	for _, tc := range []struct{ slot, slots int }{{100, 8}, {32, 8}, {128, 1}, {6000, 4}, {128, 0}} {
		if r, err := pktsend.Open("lo", tc.slot, tc.slots); err == nil {
			r.Close()
			t.Errorf("Open(%d slots of %d bytes) succeeded, want an error", tc.slots, tc.slot)
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
