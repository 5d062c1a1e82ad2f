package ctsync

import (
	"encoding/binary"
	"fmt"
)

// Expectation attributes (include/network.h, enum nta_exp_attr).
const (
	NTAExpMasterIPv4    = 0
	NTAExpMasterIPv6    = 1
	NTAExpMasterL4Proto = 2
	NTAExpMasterPort    = 3
	NTAExpExpectIPv4    = 4
	NTAExpExpectIPv6    = 5
	NTAExpExpectL4Proto = 6
	NTAExpExpectPort    = 7
	NTAExpMaskIPv4      = 8
	NTAExpMaskIPv6      = 9
	NTAExpMaskL4Proto   = 10
	NTAExpMaskPort      = 11
	NTAExpTimeout       = 12
	NTAExpFlags         = 13
	NTAExpClass         = 14
	NTAExpNATIPv4       = 15
	NTAExpNATPort       = 16
	NTAExpNATL4Proto    = 17
	NTAExpNATDir        = 18
	NTAExpHelperName    = 19
	NTAExpFn            = 20
	NTAExpMax           = 21
)

// expSpecs is parse.c's exp_h[NTA_EXP_MAX].
var expSpecs = func() []attrSpec {
	s := make([]attrSpec, NTAExpMax)
	for a, n := range map[int]int{
		NTAExpMasterIPv4: 8, NTAExpMasterIPv6: 32, NTAExpMasterL4Proto: 1, NTAExpMasterPort: 4,
		NTAExpExpectIPv4: 8, NTAExpExpectIPv6: 32, NTAExpExpectL4Proto: 1, NTAExpExpectPort: 4,
		NTAExpMaskIPv4: 8, NTAExpMaskIPv6: 32, NTAExpMaskL4Proto: 1, NTAExpMaskPort: 4,
		NTAExpTimeout: 4, NTAExpFlags: 4, NTAExpClass: 4,
		NTAExpNATIPv4: 8, NTAExpNATPort: 4, NTAExpNATL4Proto: 1, NTAExpNATDir: 4,
	} {
		s[a].size = attrHdrLen + n
	}
	s[NTAExpHelperName].maxSize = nfctHelperNameMax
	s[NTAExpFn].maxSize = 32 // parse.c: "XXX: artificial limit"
	return s
}()

// Exp is an expectation in an EXP_NEW/UPD/DEL message (src/build.c
// exp2msg): the master's original tuple, the expected tuple and its mask.
type Exp struct {
	Master, Expect, Mask Tuple
	Timeout              uint32 // seconds
	Flags                uint32 // NF_CT_EXPECT_*
	Class                uint32
	Helper               string
	Fn                   string
	Present              uint64
}

// Has reports whether expectation attribute a was present.
func (e *Exp) Has(a int) bool { return a >= 0 && a < 64 && e.Present&(1<<a) != 0 }

// Set marks expectation attribute a present.
func (e *Exp) Set(a int) { e.Present |= 1 << a }

func decodeExp(b []byte) (*Exp, error) {
	e := &Exp{}
	tuples := [3]*Tuple{&e.Master, &e.Expect, &e.Mask}
	err := walkAttrs(b, expSpecs, func(a uint16, d []byte) {
		e.Set(int(a))
		if a < NTAExpTimeout {
			t := tuples[a/4]
			switch a % 4 {
			case 0:
				t.Src, t.Dst = addrs4(d)
			case 1:
				t.Src, t.Dst = addrs6(d)
			case 2:
				t.Proto = d[0]
			case 3:
				t.SrcPort, t.DstPort = ports(d)
			}
			return
		}
		switch a {
		case NTAExpTimeout:
			e.Timeout = binary.BigEndian.Uint32(d)
		case NTAExpFlags:
			e.Flags = binary.BigEndian.Uint32(d)
		case NTAExpClass:
			e.Class = binary.BigEndian.Uint32(d)
		case NTAExpHelperName:
			e.Helper = cstring(d)
		case NTAExpFn:
			e.Fn = cstring(d)
		}
	})
	if err != nil {
		return nil, err
	}
	for i, t := range tuples {
		if !t.Src.IsValid() {
			return nil, fmt.Errorf("%w: expectation without its %s addresses", ErrIncomplete, [3]string{"master", "expected", "mask"}[i])
		}
	}
	return e, nil
}

// AppendExp appends an EXP_NEW/UPD/DEL message for e (type, flags and
// sequence number from h) in exp2msg's order
// (src/build.c): master, expected and mask tuples (address group, L4
// protocol, ports for TCP/UDP/SCTP/DCCP — the master's protocol decides,
// as in exp2msg), timeout, flags, class, helper name, function name.
func AppendExp(b []byte, h Header, e *Exp, o Options) ([]byte, error) {
	if !h.Type.IsExp() || !h.IsData() {
		return b, fmt.Errorf("ctsync: AppendExp with message type %v flags %#x; use EXP_NEW, EXP_UPD or EXP_DEL with no flags but HELLO/HELLO_BACK", h.Type, h.Flags)
	}
	tuples := [3]*Tuple{&e.Master, &e.Expect, &e.Mask} // an array: stays on the stack (Link.SendExp allocates nothing)
	for _, tu := range tuples {
		if !tu.Src.IsValid() || !tu.Dst.IsValid() || tu.Src.Is4() != tu.Dst.Is4() {
			return b, fmt.Errorf("ctsync: expectation tuple %v -> %v is not two addresses of one family", tu.Src, tu.Dst)
		}
	}
	if len(e.Helper) > nfctHelperNameMax-attrHdrLen-1 || len(e.Fn) > 32-attrHdrLen-1 {
		return b, fmt.Errorf("ctsync: helper %q or function %q longer than conntrackd accepts", e.Helper, e.Fn)
	}
	start := len(b)
	b = appendHeader(b, h.Type, h.Flags, h.Seq)
	ports := false
	switch e.Master.Proto {
	case 6, 17, 132, 33:
		ports = true
	}
	for i, tu := range tuples {
		base := uint16(4 * i)
		b = appendAddrs(b, base, base+1, *tu)
		b = putAttr(b, base+2, tu.Proto)
		if ports {
			b = putPorts(b, base+3, *tu)
		}
	}
	if !o.CommitTimeout && e.Has(NTAExpTimeout) {
		b = putAttr(b, NTAExpTimeout, be32(e.Timeout)...)
	}
	b = putAttr(b, NTAExpFlags, be32(e.Flags)...)
	if e.Has(NTAExpClass) {
		b = putAttr(b, NTAExpClass, be32(e.Class)...)
	}
	var name [32]byte // both lengths were checked above
	if e.Helper != "" {
		n := copy(name[:], e.Helper)
		name[n] = 0
		b = putAttr(b, NTAExpHelperName, name[:n+1]...)
	}
	if e.Fn != "" {
		n := copy(name[:], e.Fn)
		name[n] = 0
		b = putAttr(b, NTAExpFn, name[:n+1]...)
	}
	return finish(b, start), nil
}
