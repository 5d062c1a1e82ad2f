package perf

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/statewire/statewire/lab"
)

// TestLookupProgram runs xdp-lookup's program on frames of three flows,
// five each: every frame is redirected, each flow gets one entry keyed by
// its addresses, ports and protocol, and the entry counts the frames after
// the first (the one that inserted it).
func TestLookupProgram(t *testing.T) {
	lab.RequireRoot(t)
	flows, err := newLookupMap()
	if err != nil {
		t.Fatal(err)
	}
	defer flows.Close()
	prog, err := lookupProgram(flows, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	const xdpRedirect = 4
	frame := Frame(macL, macR, 64)
	for i := range 3 {
		f := append([]byte(nil), frame...)
		binary.BigEndian.PutUint16(f[offSport:], uint16(40000+i))
		for range 5 {
			ret, err := prog.Run(&ebpf.RunOptions{Data: f, Repeat: 1})
			if err != nil {
				t.Fatal(err)
			}
			if ret != xdpRedirect {
				t.Fatalf("flow %d: action %d, want XDP_REDIRECT", i, ret)
			}
		}
	}
	var key [lookupKeySize]byte
	var value [lookupValueSize]byte
	n := 0
	it := flows.Iterate()
	for it.Next(&key, &value) {
		n++
		if got := binary.NativeEndian.Uint64(value[:]); got != 4 {
			t.Errorf("key %x: count %d, want 4", key, got)
		}
		if string(key[0:4]) != string(frame[offIPSrc:offIPSrc+4]) || string(key[16:20]) != string(frame[offIPDst:offIPDst+4]) ||
			key[36] != frame[offIPProto] {
			t.Errorf("key %x: addresses or protocol not the frame's", key)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("%d entries, want 3", n)
	}
}
