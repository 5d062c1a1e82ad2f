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

// helperStates holds the per-connection helper state (FTP's newline
// bookkeeping) of the connections of one shard that have a helper. It lives
// beside the shard rather than in every entry because few connections have
// a helper and the entry is kept to two cache lines; it is owned by the
// shard's goroutine. An entry slot reused by another connection is told
// apart by its generation.
type helperStates map[uint32]*helperSlot

type helperSlot struct {
	gen   uint32
	state helpers.State
}

func (h helperStates) get(ref flowtable.EntryRef) *helpers.State {
	s := h[ref.Index]
	if s == nil {
		s = &helperSlot{gen: ref.Gen}
		h[ref.Index] = s
	} else if s.gen != ref.Gen {
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
