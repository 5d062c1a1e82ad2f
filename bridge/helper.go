package bridge

import (
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/helpers"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// helperOfRule maps the rule language's helper names to helper ids.
var helperOfRule = func() [rules.NumHelpers]helpers.ID {
	var m [rules.NumHelpers]helpers.ID
	for h := rules.HelperID(1); h < rules.NumHelpers; h++ {
		id, ok := helpers.ByName(h.String())
		if !ok {
			panic("bridge: rules names helper " + h.String() + " that package helpers lacks")
		}
		m[h] = id
	}
	return m
}()

// helperStates is the per-connection helper state (helpers.State: FTP's
// newline bookkeeping) of one shard's entries: one slot per entry slot,
// made with the pipeline, found by the entry's slot index, so the packet
// path neither looks anything up nor allocates.
//
// helpers keeps no state of its own; a connection's State belongs with its
// entry. It sits beside the entry rather than in it because it does not fit:
// the entry is two cache lines with no byte to spare (flowtable's size
// test), and State is 20 bytes. A smaller pool would need a pool index per
// entry, for which the entry has no room either, plus a limit and an
// outcome when full. So there are as many slots as entry slots and they
// never run out: 24 bytes per entry, allocated zero and never touched for
// connections without a helper (the pages of a large array stay untouched,
// and unbacked, until a helper connection lands in them).
//
// With a state file the slots are the table's aux slots (helperStatesOf),
// in the file, so an FTP control connection adopted by the next process
// keeps its newline bookkeeping.
//
// A slot carries the generation of the entry slot it was last used for:
// a connection that reuses an entry slot finds a different generation and
// starts from a zero State, whatever the previous one left. Owned by the
// shard's goroutine, like the entries.
type helperStates []helperSlot

type helperSlot struct {
	gen   uint32
	state helpers.State
}

// get returns the State of the entry ref names, zeroed when the slot last
// served another connection; nil only for an index beyond the shard, which
// a live entry never has.
func (h helperStates) get(ref flowtable.EntryRef) *helpers.State {
	if uint(ref.Index) >= uint(len(h)) {
		return nil
	}
	s := &h[ref.Index]
	if s.gen != ref.Gen {
		*s = helperSlot{gen: ref.Gen}
	}
	return &s.state
}

// inspect runs the entry's helper on an accepted packet (the kernel runs
// helpers at confirmation, after the filter hooks), adds the expectations it
// finds, and drops the packet when the helper says so.
func (pl *Pipeline) inspect(e *flowtable.Entry, frame []byte, p *packet.Packet, now int64, r *Result) {
	if e.Helper == 0 || r.Verdict != Accept || r.State == statemachine.StateInvalid {
		return
	}
	id := helpers.ID(e.Helper)
	ref := pl.shard.Ref(e)
	st := pl.helperState.get(ref)
	if st == nil {
		return
	}
	if e.TakeHelperPickup() {
		// Committed from a peer (statewire sync -c): see helpers.State.Pickup.
		st.Pickup()
	}
	established := r.State == statemachine.StateEstablished
	var out [helpers.MaxExpectPerPacket]helpers.Expectation
	n, drop, _ := helpers.Inspect(id, st, p, p.Payload(frame), r.Dir, established, &out)
	if drop {
		r.Verdict, r.Drop = Drop, DropHelper
		return
	}
	if t, ok := helpers.MasterTimeout(id, r.Dir); ok {
		e.Conn.Expires = now + t
	}
	max := id.Policy().MaxExpected
	for i := range n {
		x := &out[i]
		err := pl.table.Expect.Add(flowtable.Expect{
			Dst: x.Dst, Src: x.Src, Expires: now + x.Timeout, Master: ref,
			DstPort: x.DstPort, SrcPort: x.SrcPort, VLAN: p.VLAN,
			L3: x.L3, Proto: x.Proto, SrcMask: !x.SrcAny, HelperID: uint8(x.Helper),
		}, max)
		if err != nil {
			// The kernel drops a packet whose expectation cannot be
			// registered (nf_ct_expect_related failing → NF_DROP).
			pl.stats.ExpectFailed++
			r.Verdict, r.Drop = Drop, DropHelper
			return
		}
		pl.stats.ExpectCreate++
	}
}
