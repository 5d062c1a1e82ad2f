package bridge

import (
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// AdoptReport is what adoptFastPath did with the flows the previous
// process left in the fast path: the entries of the adopted table marked
// offloaded and the flows of the adopted map.
type AdoptReport struct {
	// Kept: an active flow of the map whose entry is marked offloaded and
	// fits it (offload OfferedAs) under this run's settings: it stays in
	// the fast path, the entry stays offloaded.
	Kept int
	// Refit: an active flow of its offloaded entry's connection offered
	// otherwise than this run would (the rules or a sysctl changed:
	// offload FitOther): taken back exactly (offload TakeBack reads its
	// live state into the entry).
	Refit int
	// Pending: offers the previous process had not activated, revoked;
	// their entries hold the state (the program took nothing) and lose
	// their mark only.
	Pending int
	// Orphans: flows of the map without an offloaded entry (the table
	// lost or never got the mark: a kill -9 between the two writes of an
	// offer or a take-back), or of another connection than their entry's
	// (offload FitNone), revoked from the map.
	Orphans int
	// Resumed: offloaded entries without a flow of theirs in the map,
	// taken back liberally (flowtable Entry.ResumeOffloaded).
	Resumed int
	// MapRevoked: the map's flows revoked whole because the table or the
	// fast path did not come with it (RevokeAdopted).
	MapRevoked int
}

// adoptFastPath settles, before the workers run, the flows the previous
// process left in the fast path (deploy/README.md "Restarts", offload
// doc.go "Fail-open, pins and the next start"). tableAdopted says whether
// the connection table came from its state file; the map is adopted when
// offload Program.Adopted says so; fast whether this run offers flows.
//
// With both adopted and the fast path on, the two are reconciled flow by
// flow, userspace (the table and this run's settings) deciding:
//
//   - an active flow of the map whose entry is present and marked
//     offloaded stays in the fast path when it fits the entry and the
//     verdicts and settings this run would offer it with (offload
//     OfferedAs; the verdicts are walked afresh through this run's rules
//     for the state and port the map's carry): the map keeps its live
//     window, expiry and counters, the entry stays offloaded and the
//     worker that owns it counts it as its own offer (Pipeline
//     adoptOffered); one offered otherwise (FitOther: the rules or a
//     sysctl changed) is taken back exactly; one of another connection
//     with the same key (FitNone) is revoked without reading it into
//     the entry, which is taken back liberally;
//   - a flow of the map with no offloaded entry, and every pending offer,
//     is revoked from the map (a pending one's entry holds its state and
//     only loses the mark);
//   - an offloaded entry with no flow in the map is taken back liberally
//     (Entry.ResumeOffloaded), as when the map did not survive.
//
// Otherwise the map is emptied (RevokeAdopted) and an adopted table's
// offloaded entries are all taken back liberally.
func (dp *Datapath) adoptFastPath(tableAdopted, fast bool) (AdoptReport, error) {
	var rep AdoptReport
	now := dp.Now()
	grace := int64(offloadResumeGrace)
	mapAdopted := dp.fast != nil && dp.fast.Adopted()
	if mapAdopted && (!tableAdopted || !fast) {
		n, err := dp.fast.RevokeAdopted()
		if err != nil {
			return rep, err
		}
		rep.MapRevoked = n
		mapAdopted = false
	}
	if !mapAdopted {
		if tableAdopted {
			rep.Resumed = dp.table.ResumeOffloaded(false, now, grace)
		}
		return rep, nil
	}
	// The offloaded entries, by key; what the map says of each.
	type adoptee struct {
		w        *worker
		ref      flowtable.EntryRef
		verdicts [2]uint8 // the map's
		active   bool
		pending  bool
	}
	entries := map[flowtable.Key]*adoptee{}
	for _, w := range dp.workers {
		sh := w.pl.shard
		sh.Range(func(e *flowtable.Entry) bool {
			if e.Offloaded() {
				entries[e.Key()] = &adoptee{w: w, ref: sh.Ref(e)}
			}
			return true
		})
	}
	kept, removed, err := dp.fast.KeepAdopted(func(f *offload.AdoptedFlow) bool {
		a := entries[f.Key]
		if a == nil {
			return false
		}
		if f.Pending {
			a.pending = true
			return false
		}
		a.active, a.verdicts = true, f.Verdicts
		return true
	})
	if err != nil {
		return rep, err
	}
	s := dp.ctl.Load()
	oc := offload.OfferConfig{Conntrack: &s.Conntrack, VerifyChecksum: s.VerifyChecksum}
	for _, a := range entries {
		pl := a.w.pl
		e := pl.shard.Resolve(a.ref)
		switch {
		case a.active:
			cvs, vs := adoptedVerdicts(s, e, a.verdicts)
			fit, err := dp.fast.OfferedAs(e, vs, oc)
			if err != nil {
				return rep, err
			}
			switch fit {
			case offload.FitSame:
				gen := s.Rules.Generation()
				for d, c := range cvs {
					if c != 0 {
						e.CacheVerdict(statemachine.Dir(d), gen, uint8(c))
					}
				}
				pl.adoptOffered(s, e)
				rep.Kept++
			case offload.FitOther:
				// Exact: the map's live state into the entry.
				if _, err := dp.fast.TakeBack(e); err != nil {
					return rep, err
				}
				e.SetOffloaded(false)
				rep.Refit++
			default:
				// Another connection's state: out of the map without
				// reading it into e (a copy takes it), e resumed as
				// if the map had lost it.
				x := *e
				if _, err := dp.fast.TakeBack(&x); err != nil {
					return rep, err
				}
				e.ResumeOffloaded(now, grace)
				rep.Orphans++
				rep.Resumed++
			}
		case a.pending:
			e.SetOffloaded(false)
			rep.Pending++
		default:
			e.ResumeOffloaded(now, grace)
			rep.Resumed++
		}
	}
	rep.Orphans += removed - rep.Pending
	_ = kept // rep.Kept plus the flows taken back above
	return rep, nil
}

// adoptedVerdicts walks s's rules afresh for the directions of e that the
// previous process offered with a verdict (offered, the map's bytes: the
// state and ingress port it was computed for are in them), as verdictFor
// would for a packet of the flow in that state on that port, and returns
// the cached form of each and its fast-path byte. A direction whose walk
// read a per-packet field, or whose packets the raw table may act on, or
// that is not an ACCEPT gets no byte (0), so the flow does not fit.
func adoptedVerdicts(s *Settings, e *flowtable.Entry, offered [2]uint8) (cached [2]rules.CachedVerdict, fast [2]uint8) {
	k := e.Key()
	t := e.Tuple()
	for d, v := range offered {
		if v == 0 {
			continue
		}
		st := statemachine.CtState(v >> 1 & 0x1f)
		port := v >> 6 & 1
		p := packet.Packet{IPVersion: k.L3, Proto: k.Proto, TTL: 64, VLAN: k.VLAN,
			Src: t.Src, Dst: t.Dst, SrcPort: t.SrcPort, DstPort: t.DstPort}
		if statemachine.Dir(d) == statemachine.Reply {
			p.Src, p.Dst, p.SrcPort, p.DstPort = t.Dst, t.Src, t.DstPort, t.SrcPort
		}
		p.EtherType = 0x0800
		if k.L3 == 6 {
			p.EtherType = 0x86dd
		}
		if k.VLAN != 0 {
			p.VLANTags = 1
		}
		if k.Proto == packet.ProtoTCP {
			p.TCP.Flags, p.TCP.DataOff = packet.TCPAck, 20
		}
		raw := s.Rules.Raw(&p, port)
		fv, cacheable := s.Rules.Filter(&p, st, port)
		if !cacheable {
			continue
		}
		c := rules.CacheVerdict(fv.Action, st, port)
		if raw.Passive {
			c = c.WithRawPassive()
		}
		cached[d], fast[d] = c, c.FastPath()
	}
	return cached, fast
}

// logAdoption says what adoptFastPath did, when there was anything.
func (dp *Datapath) logAdoption(r AdoptReport) {
	if r.MapRevoked > 0 {
		dp.logf("datapath: took the XDP program over from the earlier run; its %d fast-path flows go to the slow path, the authority (the connection table or the fast path did not come with it)", r.MapRevoked)
	}
	if r.Kept+r.Refit+r.Pending+r.Orphans > 0 {
		dp.logf("datapath: took the XDP program over from the earlier run with its fast-path flows: %d kept in the fast path, %d taken back (they do not fit this run's rules or settings), %d pending offers and %d flows without an offloaded entry of their connection revoked",
			r.Kept, r.Refit, r.Pending, r.Orphans)
	}
	if r.Resumed > 0 {
		dp.logf("datapath: %d adopted connections were in the previous process's fast path, whose map did not keep them: taken back, their windows relearnt from the next segments", r.Resumed)
	}
}
