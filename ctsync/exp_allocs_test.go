package ctsync_test

import (
	"net/netip"
	"testing"

	"github.com/statewire/statewire/ctsync"
)

// TestSendExpAllocs: queueing an expectation allocates nothing once the
// link's buffers have grown, as SendCT (the sync sender sends one per
// helper command).
func TestSendExpAllocs(t *testing.T) {
	l, err := ctsync.NewLink(ctsync.LinkConfig{Listen: "127.0.0.1:0", Peer: "127.0.0.1:9"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a := netip.MustParseAddr
	e := &ctsync.Exp{
		Master:  ctsync.Tuple{Src: a("198.18.0.1"), Dst: a("198.18.0.2"), Proto: 6, SrcPort: 39999, DstPort: 21},
		Expect:  ctsync.Tuple{Src: a("198.18.0.2"), Dst: a("198.18.0.1"), Proto: 6, DstPort: 40000},
		Mask:    ctsync.Tuple{Src: a("255.255.255.255"), Dst: a("255.255.255.255"), Proto: 6, DstPort: 0xffff},
		Timeout: 300, Helper: "ftp",
	}
	e.Set(ctsync.NTAExpTimeout)
	if err := l.SendExp(ctsync.TypeExpNew, e); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { _ = l.SendExp(ctsync.TypeExpNew, e) }); n != 0 {
		t.Errorf("SendExp allocates %v times per call, want 0", n)
	}
}
