package ctsync

import (
	"net/netip"
	"testing"
	"time"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/helpers"
	"github.com/statewire/statewire/packet"
)

func ftpMaster() flowtable.Tuple {
	return flowtable.Tuple{Src: packet.AddrFromNetip(netip.MustParseAddr("198.18.0.1")), Dst: packet.AddrFromNetip(netip.MustParseAddr("198.18.0.2")),
		SrcPort: 39999, DstPort: 21, Proto: 6, L3: 4}
}

// ftpPortExpect is what the FTP helper registers for "PORT
// 198,18,0,1,156,64" from the master above: the server's data connection
// from any port of 198.18.0.2 to 198.18.0.1:40000.
func ftpPortExpect(now int64) flowtable.Expect {
	return flowtable.Expect{Src: packet.AddrFromNetip(netip.MustParseAddr("198.18.0.2")), Dst: packet.AddrFromNetip(netip.MustParseAddr("198.18.0.1")),
		DstPort: 40000, L3: 4, Proto: 6, SrcMask: true, HelperID: uint8(helpers.IDFTP), Expires: now + helpers.FTPExpectTimeout}
}

// TestExpFromExpect: an FTP expectation is sent as the kernel's dump makes
// conntrackd send it (ctnetlink_exp_dump_tuple/mask), and what a peer
// sends comes back to the same expectation.
func TestExpFromExpect(t *testing.T) {
	now := int64(1000 * time.Second)
	m := ftpMaster()
	x := ftpPortExpect(now)
	var e Exp
	FillExpFromExpect(&e, &x, &m, now+int64(time.Second)/2)
	a := netip.MustParseAddr
	want := Exp{
		Master:  Tuple{a("198.18.0.1"), a("198.18.0.2"), 6, 39999, 21},
		Expect:  Tuple{a("198.18.0.2"), a("198.18.0.1"), 6, 0, 40000},
		Mask:    Tuple{a("255.255.255.255"), a("255.255.255.255"), 6, 0, 0xffff},
		Timeout: 300, Helper: "ftp",
	}
	for _, at := range []int{NTAExpMasterIPv4, NTAExpMasterL4Proto, NTAExpMasterPort, NTAExpExpectIPv4, NTAExpExpectL4Proto, NTAExpExpectPort,
		NTAExpMaskIPv4, NTAExpMaskL4Proto, NTAExpMaskPort, NTAExpTimeout, NTAExpFlags, NTAExpClass, NTAExpHelperName} {
		want.Set(at)
	}
	if e != want {
		t.Fatalf("FillExpFromExpect:\n got %+v\nwant %+v", e, want)
	}
	// Over the wire and back.
	b, err := AppendExp(nil, Header{Type: TypeExpNew}, &e, Options{})
	if err != nil {
		t.Fatal(err)
	}
	msg, _, err := DecodeMsg(b)
	if err != nil {
		t.Fatal(err)
	}
	later := now + int64(5*time.Second)
	got, gm, err := msg.Exp.ToExpect(later)
	if err != nil {
		t.Fatal(err)
	}
	wantX := x
	wantX.Expires = later + 300*int64(time.Second)
	if got != wantX || gm != m {
		t.Errorf("ToExpect:\n got %+v master %+v\nwant %+v master %+v", got, gm, wantX, m)
	}
	// A passive-mode expectation (any source address): mask 0.0.0.0.
	x.SrcMask, x.Src = false, packet.Addr{}
	FillExpFromExpect(&e, &x, &m, now)
	if e.Expect.Src != a("0.0.0.0") || e.Mask.Src != a("0.0.0.0") {
		t.Errorf("any source: expected %v mask %v, want 0.0.0.0 and 0.0.0.0", e.Expect.Src, e.Mask.Src)
	}
	if got, _, err := e.ToExpect(now); err != nil || got.SrcMask || got.Src != (packet.Addr{}) {
		t.Errorf("any source back: %+v, %v", got, err)
	}
}

// TestExpToExpectRefuses: what statewire cannot expect exactly is
// refused, not approximated.
func TestExpToExpectRefuses(t *testing.T) {
	now := int64(1000 * time.Second)
	m := ftpMaster()
	x := ftpPortExpect(now)
	a := netip.MustParseAddr
	for name, mut := range map[string]func(*Exp){
		"partial source mask":  func(e *Exp) { e.Mask.Src = a("255.255.255.0") },
		"destination mask":     func(e *Exp) { e.Mask.Dst = a("255.255.0.0") },
		"destination port any": func(e *Exp) { e.Mask.DstPort = 0 },
		"source port range":    func(e *Exp) { e.Mask.SrcPort = 0xff00 },
		"mixed families":       func(e *Exp) { e.Expect.Src = a("2001:db8::1") },
		"ICMP master":          func(e *Exp) { e.Master.Proto = 1 },
		"no master port":       func(e *Exp) { e.Present &^= 1 << NTAExpMasterPort },
		"class above 255":      func(e *Exp) { e.Class = 256 },
		"GRE expected":         func(e *Exp) { e.Expect.Proto = 47 },
	} {
		var e Exp
		FillExpFromExpect(&e, &x, &m, now)
		e.Set(NTAExpMasterPort)
		mut(&e)
		if got, _, err := e.ToExpect(now); err == nil {
			t.Errorf("%s: accepted as %+v", name, got)
		}
	}
}

// TestExpIPv6: an EPRT expectation over IPv6 keeps 16-byte addresses and
// an all-ones mask.
func TestExpIPv6(t *testing.T) {
	now := int64(time.Second)
	a := netip.MustParseAddr
	m := flowtable.Tuple{Src: packet.AddrFromNetip(a("2001:db8::1")), Dst: packet.AddrFromNetip(a("2001:db8::2")), SrcPort: 40001, DstPort: 21, Proto: 6, L3: 6}
	x := flowtable.Expect{Src: packet.AddrFromNetip(a("2001:db8::2")), Dst: packet.AddrFromNetip(a("2001:db8::1")), DstPort: 50000,
		L3: 6, Proto: 6, SrcMask: true, HelperID: uint8(helpers.IDFTP), Expires: now + helpers.FTPExpectTimeout}
	var e Exp
	FillExpFromExpect(&e, &x, &m, now)
	b, err := AppendExp(nil, Header{Type: TypeExpNew}, &e, Options{})
	if err != nil {
		t.Fatal(err)
	}
	msg, _, err := DecodeMsg(b)
	if err != nil || !msg.Exp.Has(NTAExpMaskIPv6) || !msg.Exp.Has(NTAExpExpectIPv6) {
		t.Fatalf("decode: %v, attributes %b", err, msg.Exp.Present)
	}
	got, gm, err := msg.Exp.ToExpect(now)
	if err != nil || got != x || gm != m {
		t.Errorf("ToExpect: %+v %+v %v\nwant %+v %+v", got, gm, err, x, m)
	}
}

// FuzzExp: a peer's expectation message never panics the decoder or the
// conversion, and an expectation accepted converts back to the same one.
func FuzzExp(f *testing.F) {
	now := int64(1000 * time.Second)
	m := ftpMaster()
	x := ftpPortExpect(now)
	var e Exp
	FillExpFromExpect(&e, &x, &m, now)
	for _, typ := range []Type{TypeExpNew, TypeExpDel} {
		b, err := AppendExp(nil, Header{Type: typ, Seq: 7}, &e, Options{})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	x.SrcMask = false
	FillExpFromExpect(&e, &x, &m, now)
	b, _ := AppendExp(nil, Header{Type: TypeExpUpd}, &e, Options{CommitTimeout: true})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, _ := Decode(b)
		for _, msg := range msgs {
			if msg.Exp == nil {
				continue
			}
			got, gm, err := msg.Exp.ToExpect(now)
			if err != nil {
				continue
			}
			var back Exp
			FillExpFromExpect(&back, &got, &gm, now)
			again, gm2, err := back.ToExpect(now)
			if err != nil || again != got || gm2 != gm {
				t.Fatalf("%+v -> %+v -> %+v: %+v %v", *msg.Exp, got, back, again, err)
			}
		}
	})
}
