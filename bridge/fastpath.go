package bridge

import (
	"errors"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// FastPath is the XDP fast path a Pipeline offers flows to
// (*offload.Program; DESIGN.md "Two levels"). Offer, TakeBack and Peek
// have offload.Program's contracts.
type FastPath interface {
	Offer(e *flowtable.Entry, verdicts [2]uint8, oc offload.OfferConfig) error
	TakeBack(e *flowtable.Entry) (ok bool, err error)
	Peek(e *flowtable.Entry, u *offload.Usage) (ok bool, err error)
}

// TwoPhaseFastPath is a FastPath that can offer a flow pending and
// activate it once every frame it punted meanwhile has been judged
// (*offload.Program; offload/doc.go "Moving between the levels"). A
// pipeline whose FastPath is one offers that way; TakeBack of a pending
// offer cancels it.
type TwoPhaseFastPath interface {
	FastPath
	OfferPending(e *flowtable.Entry, verdicts [2]uint8, oc offload.OfferConfig) (offload.Pending, error)
	Activate(e *flowtable.Entry, verdicts [2]uint8, oc offload.OfferConfig, pd offload.Pending, punted uint32) (ok bool, err error)
	ActivateNow(e *flowtable.Entry, verdicts [2]uint8, oc offload.OfferConfig, pd offload.Pending) (cut uint32, ok bool, err error)
	Punted(pd offload.Pending) (n uint32, pending bool)
}

// TakeBackReason says why a pipeline took a flow back from the fast path.
type TakeBackReason uint8

const (
	// TakeBackSlowPath: a packet of the flow came up the slow path (the
	// fast path punted it: a state change, a window failure...).
	TakeBackSlowPath TakeBackReason = iota
	// TakeBackRemove: the entry was removed (expiry, early drop,
	// conntrack -D/-F, a reopening SYN).
	TakeBackRemove
	// TakeBackSettings: new Settings were published (rules reload,
	// sysctl); the flow is offered again under them by its next packet.
	TakeBackSettings
	NumTakeBackReasons
)

// TakeBackNames names the entries of FastPathStats.TakenBack.
var TakeBackNames = [NumTakeBackReasons]string{"slow-path", "remove", "settings"}

// FastPathStats are a pipeline's fast-path counters.
type FastPathStats struct {
	Offered uint64 // flows put into the fast path (pending first with a TwoPhaseFastPath)
	// Adopted counts the flows the previous process left in the fast
	// path that this one kept there at start (the table and the map both
	// adopted: Datapath adoptFastPath); they are taken back like offers.
	Adopted   uint64
	Activated uint64 // pending offers made active
	Forced    uint64 // of those, activated at the program's count before the worker caught up (pendingForce)
	// Handover counts the frames an activation left behind (most after a
	// forced one): punted while pending, still queued, dropped here
	// unjudged (DropHandover).
	Handover  uint64
	Cancelled uint64 // pending offers taken back before activation
	// HeldBack counts the times activations were given up after waiting
	// holdMax for another worker to send frames of them judged here
	// (worker.activate): the offers stayed pending, their next marked
	// frame tried again.
	HeldBack uint64
	// PreOffer counts the frames of pending flows judged here that were
	// punted before the offer (no Mark): each took the flow back before
	// the two-phase offer. Marked counts those punted while pending.
	PreOffer, Marked uint64
	Refused          uint64                     // offers the fast path refused (map full, or an error)
	TakenBack        [NumTakeBackReasons]uint64 // flows taken back, by reason
	Errors           uint64                     // TakeBack or Peek failures (the flow is treated as taken back)
}

// InFastPath returns the flows in the fast path as these counters see
// them: offered and not yet taken back.
func (s *FastPathStats) InFastPath() uint64 {
	n := s.Offered + s.Adopted - s.Cancelled
	for _, t := range s.TakenBack {
		n -= t
	}
	return n
}

func (s *FastPathStats) add(o *FastPathStats) {
	s.Offered += o.Offered
	s.Adopted += o.Adopted
	s.Activated += o.Activated
	s.Forced += o.Forced
	s.Handover += o.Handover
	s.Cancelled += o.Cancelled
	s.HeldBack += o.HeldBack
	s.PreOffer += o.PreOffer
	s.Marked += o.Marked
	s.Refused += o.Refused
	for i := range s.TakenBack {
		s.TakenBack[i] += o.TakenBack[i]
	}
	s.Errors += o.Errors
}

// offerBackoff is how long a pipeline stops offering after the fast path
// said its map is full (each refused offer is a system call).
const offerBackoff = int64(100 * 1e6)

// offerHoldoff is how long a flow taken back because a packet of it came
// up the slow path stays out of the fast path. Without it a busy flow
// thrashes: the frames the program punted while the flow was being taken
// back or offered again reach the worker after the new offer, and each
// takes it back again. Those frames are also what a move reorders: the
// program forwards the flow's later frames past them (offload/doc.go,
// "Moving between the levels", with the measured figures).
const offerHoldoff = int64(2 * 1e6)

// offerDelay is how long a flow must have been eligible before it is
// offered: a short connection (a request and its answer, then FIN) would
// otherwise cost an offer and a take-back, four system calls, for the few
// packets the fast path could have taken (measured: CPS fell from the
// endpoints' ceiling to below the kernel's with every connection offered).
const offerDelay = int64(10 * 1e6)

// pendingWait is how long a pending offer waits, after the first marked
// frame it judged (or as long again as that one took to come, when
// longer: the worker's delay behind its rings), for a marked frame of each
// direction that has a cached verdict before it activates on the marks of
// one: a frame punted before the offer that is still queued in the other
// direction's ring would take the flow back right after the activation.
// pendingLimit is how long a pending offer may stay pending before it is
// cancelled and offered afresh, when it can be activated neither way.
//
// pendingForce is how long a pending offer waits for the worker to catch
// up with the program's count before it is activated at once
// (offload.ActivateNow, "hand-over"): a flow that never pauses while the
// worker is overloaded (its RX ring full) would otherwise stay pending for
// ever (measured: a bulk TCP transfer under -race, 72 offers, 55
// cancelled, 8% of its frames by the fast path). The frames the program
// punted up to the count the activation swapped away (the cut) are still
// queued or were lost at the full ring; judged now they would follow the
// frames the program takes from then on (and, before the hand-over, took
// the flow back: the one-phase offer's reordering, and the flow out of
// the fast path again). So they are dropped unjudged when they arrive
// (DropHandover), as the full ring drops its share: the flow loses what
// was queued of it, once, and keeps its order (offload/doc.go, "Under
// overload").
//
// An activation that was not forced has a cut too, the highest Mark
// judged: a frame numbered below it can still be queued on the other
// direction's ring, and is dropped likewise.
//
// handoverKeep is how long the cut of an activation is remembered: longer
// than any frame stays queued (an RX ring of 2048 frames before a -race
// worker taking 7 000 frames/s on a loaded machine is 300 ms,
// TestDatapathReorderUDPSteady). A frame older still would be judged and
// take the flow back, exactly.
// forceBacklog is how many frames the program must have punted beyond
// the highest Mark judged before a forced activation: with one frame
// outstanding the worker holds it in its ring and the next judgement
// activates normally (seen == count), while forcing would drop that
// frame unjudged — a lock-step UDP echo under -race lost a reply that way
// (TestOffloadUDPEchoAndRuleReload). A flow that never pauses under
// overload stays two or more ahead.
const forceBacklog = 2

const (
	pendingWait  = int64(2 * 1e6)
	pendingForce = int64(5 * 1e6)
	pendingLimit = int64(50 * 1e6)
	handoverKeep = int64(1e9)
)

// pendState is a pending offer: the offer's Mark, the highest Mark judged
// so far, the directions they came in (bit per Dir) and those that need
// one (a cached verdict at the offer), the time of the offer and the time
// the first marked frame was judged.
type pendState struct {
	pd           offload.Pending
	seen         uint32
	dirs, need   uint8
	since, first int64
}

// offerWait is, per entry slot, the time before which the entry is not
// offered: gen names the allocation of the slot it is about.
type offerWait struct {
	gen   uint32
	until int64
}

// fastState is a pipeline's fast-path side.
type fastState struct {
	fp       FastPath
	settings *Settings // the settings the offered flows were offered under
	offered  int       // entries of the shard marked offloaded
	fullTill int64     // no offers before this time (map full)
	usage    offload.Usage
	wait     []offerWait // by entry slot
	delay    int64       // offerDelay (tests: 0)

	// Two-phase offers (fp is a TwoPhaseFastPath): the pending offers,
	// the Mark of the frame being judged, the flows a marked frame made
	// ready to activate, and whether the caller activates them
	// (ActivateFastPath) rather than Process and ProcessBatch at their end.
	two      TwoPhaseFastPath
	pend     map[flowtable.EntryRef]pendState
	mark     offload.Mark
	ready    []flowtable.EntryRef
	deferAct bool

	// Activations' cuts (pendingForce): a frame with a Mark of one of
	// these offers numbered at or below the cut is dropped. Two
	// generations, swapped every handoverKeep, so an entry lives one to
	// two handoverKeep and cleaning allocates nothing in the steady state.
	cuts     [2]map[offload.Pending]uint32
	cutsTill int64 // when cuts[0] becomes cuts[1]

	// ProcessBatch offers at the end of the batch, once per flow.
	batching bool
	pending  [MaxBatch]flowtable.EntryRef
	npending int
}

// SetFastPath makes the pipeline offer eligible flows to fp (nil: no fast
// path, the default). Owner only, before the first packet.
func (pl *Pipeline) SetFastPath(fp FastPath) {
	pl.fast.fp = fp
	pl.fast.two, _ = fp.(TwoPhaseFastPath)
	if pl.fast.two != nil && pl.fast.pend == nil {
		pl.fast.pend = make(map[flowtable.EntryRef]pendState)
		pl.fast.cuts = [2]map[offload.Pending]uint32{make(map[offload.Pending]uint32), make(map[offload.Pending]uint32)}
	}
	if fp != nil {
		if pl.fast.wait == nil {
			pl.fast.wait = make([]offerWait, pl.shard.Max())
			pl.fast.delay = offerDelay
		}
		pl.shard.SetExpiryHook(pl.fastExpires)
		pl.shard.SetSnapshotHook(pl.fastSnapshot)
	} else {
		pl.shard.SetExpiryHook(nil)
		pl.shard.SetSnapshotHook(nil)
	}
	pl.syncRemoveHook()
}

// FastPath returns the fast path set by SetFastPath, or nil.
func (pl *Pipeline) FastPath() FastPath { return pl.fast.fp }

// fastSettings takes back every offered flow when s is not the Settings
// they were offered under (a rules reload or a sysctl change may change
// their verdicts, timeouts or window tracking).
func (pl *Pipeline) fastSettings(s *Settings) {
	f := &pl.fast
	if f.settings == s {
		return
	}
	f.settings = s
	if f.offered == 0 {
		return
	}
	pl.shard.Range(func(e *flowtable.Entry) bool {
		if e.Offloaded() {
			pl.takeBack(e, TakeBackSettings, 0)
		}
		return f.offered > 0
	})
}

// takeBack takes offered entry e back from the fast path at time now. A
// pending offer is cancelled (counted as such, no hold-off).
func (pl *Pipeline) takeBack(e *flowtable.Entry, why TakeBackReason, now int64) {
	f := &pl.fast
	e.SetOffloaded(false)
	f.offered--
	if len(f.pend) != 0 {
		ref := pl.shard.Ref(e)
		if _, ok := f.pend[ref]; ok {
			delete(f.pend, ref)
			pl.stats.Fast.Cancelled++
			if x := pl.own(e); x == nil {
				pl.stats.Fast.Errors++
			} else if _, err := f.fp.TakeBack(x); err != nil {
				pl.stats.Fast.Errors++
			}
			return
		}
	}
	if why == TakeBackSlowPath {
		if ref := pl.shard.Ref(e); int(ref.Index) < len(f.wait) {
			f.wait[ref.Index] = offerWait{gen: ref.Gen, until: now + offerHoldoff}
		}
	}
	if x := pl.own(e); x == nil {
		pl.stats.Fast.Errors++
	} else if _, err := f.fp.TakeBack(x); err != nil {
		pl.stats.Fast.Errors++
	}
	pl.stats.Fast.TakenBack[why]++
}

// own returns e, a live entry of the pipeline's shard, as the shard hands
// it out. Passing e itself to the FastPath interface would make the
// compiler move every key a lookup of e was made with to the heap (the
// analysis cannot tell an entry from the key it was found with): one
// allocation per packet in Process.
func (pl *Pipeline) own(e *flowtable.Entry) *flowtable.Entry {
	return pl.shard.Resolve(pl.shard.Ref(e))
}

// fastExpires is the shard's expiry hook: the live Expires of an offered
// entry, from the fast path.
func (pl *Pipeline) fastExpires(e *flowtable.Entry, now int64) int64 {
	f := &pl.fast
	if len(f.pend) != 0 {
		if _, ok := f.pend[pl.shard.Ref(e)]; ok {
			return e.Conn.Expires // pending: the table is the state
		}
	}
	x := pl.own(e)
	if x == nil {
		return e.Conn.Expires
	}
	ok, err := f.fp.Peek(x, &f.usage)
	if err != nil || !ok {
		if err != nil {
			pl.stats.Fast.Errors++
		}
		return e.Conn.Expires
	}
	return f.usage.Expires
}

// fastSnapshot is the shard's snapshot hook: a copy of an offered entry
// (conntrack -L, /proc/net/nf_conntrack, the metrics' snapshot) gets the
// fast path's live Expires, so its timeout is the current one. The entry
// itself keeps its Expires (expiry refreshes it through fastExpires when
// it matters). The copy keeps the table's value when the fast path cannot
// be read. One map lookup per offered entry; entries not offered cost
// nothing.
func (pl *Pipeline) fastSnapshot(e *flowtable.Entry, out *flowtable.EntrySnapshot) {
	f := &pl.fast
	x := pl.own(e)
	if x == nil {
		return
	}
	ok, err := f.fp.Peek(x, &f.usage)
	if err != nil {
		pl.stats.Fast.Errors++
		return
	}
	if ok {
		out.Conn.Expires = f.usage.Expires
	}
}

// maybeOffer offers e, whose packet the pipeline just accepted, to the
// fast path when the fast path can judge its packets exactly as the
// pipeline would: offload.Eligible, an ACCEPT cached under the current
// rule generation for a direction whose packets the raw table leaves alone
// (no raw DROP, NOTRACK or helper can depend on the packet), no helper.
func (pl *Pipeline) maybeOffer(s *Settings, e *flowtable.Entry, now int64) {
	f := &pl.fast
	if e.Offloaded() || now < f.fullTill || e.Helper != 0 || !offload.Eligible(e) {
		return
	}
	ref := pl.shard.Ref(e)
	if int(ref.Index) >= len(f.wait) {
		return
	}
	w := &f.wait[ref.Index]
	if w.gen != ref.Gen {
		// First eligible: offered once it has been for offerDelay.
		*w = offerWait{gen: ref.Gen, until: now + f.delay}
	}
	if now < w.until {
		return
	}
	if f.batching {
		for _, p := range f.pending[:f.npending] {
			if p == ref {
				return
			}
		}
		if f.npending < len(f.pending) {
			f.pending[f.npending] = ref
			f.npending++
		}
		return
	}
	pl.offer(s, e, now)
}

// offerPending offers the flows ProcessBatch's frames made eligible, now
// that the batch is done; a flow a later frame changed is checked again.
func (pl *Pipeline) offerPending(s *Settings, now int64) {
	f := &pl.fast
	f.batching = false
	for _, ref := range f.pending[:f.npending] {
		if e := pl.shard.Resolve(ref); e != nil {
			pl.maybeOffer(s, e, now)
		}
	}
	f.npending = 0
}

// fastVerdicts returns the verdict bytes e would be offered with under rule
// generation gen, and whether any direction has one: only directions whose
// cached verdict is an ACCEPT the raw table cannot interfere with
// (rules.CachedVerdict.FastPath).
func fastVerdicts(e *flowtable.Entry, gen uint32) (vs [2]uint8, any bool) {
	for d := range vs {
		if v, ok := e.CachedVerdict(statemachine.Dir(d), gen); ok {
			vs[d] = rules.CachedVerdict(v).FastPath()
			any = any || vs[d] != 0
		}
	}
	return vs, any
}

// pendingFrame is called for a frame of offered entry e that came up the
// slow path, before it is judged. It returns false when the offer is
// active (the caller takes the flow back). For a pending offer the frame is
// judged on the table, which is the flow's state (the program took
// nothing): a frame with the offer's Mark is counted, and may make the
// offer ready to activate once judged; one without was punted before the
// offer.
func (pl *Pipeline) pendingFrame(e *flowtable.Entry, dir statemachine.Dir, now int64) bool {
	f := &pl.fast
	if len(f.pend) == 0 {
		return false
	}
	ref := pl.shard.Ref(e)
	ps, ok := f.pend[ref]
	if !ok {
		return false
	}
	if f.mark.Seq == 0 || f.mark.Pending != ps.pd {
		pl.stats.Fast.PreOffer++
		return true
	}
	pl.stats.Fast.Marked++
	// The highest Mark judged, not how many: a frame the kernel dropped
	// (a full RX ring) never comes, and was never judged, as if the wire
	// had lost it; waiting for it would keep an overloaded flow pending
	// for ever. A lower Mark still on another queue, arriving after the
	// activation, finds the offer active and takes the flow back.
	ps.seen = max(ps.seen, f.mark.Seq)
	ps.dirs |= 1 << (dir & 1)
	if ps.first == 0 {
		ps.first = now
	}
	f.pend[ref] = ps
	for _, r := range f.ready {
		if r == ref {
			return true
		}
	}
	f.ready = append(f.ready, ref)
	return true
}

// SetMark gives the Mark read in front of the next frame Process judges
// (the zero Mark: none). Owner only.
func (pl *Pipeline) SetMark(m offload.Mark) { pl.fast.mark = m }

// handedOver reports whether the frame being judged, whose Mark is
// f.mark, was left behind by the activation of its flow: punted while
// pending, numbered at or below the activation's cut, judged after it.
// The caller drops it unjudged (DropHandover). One load for a frame
// without a Mark.
func (f *fastState) handedOver() bool {
	m := f.mark
	if m.Seq == 0 || len(f.cuts[0])+len(f.cuts[1]) == 0 {
		return false
	}
	for _, c := range f.cuts {
		if cut, ok := c[m.Pending]; ok && m.Seq <= cut {
			return true
		}
	}
	return false
}

// rememberCut records an activation's cut, and forgets those older than
// handoverKeep.
func (f *fastState) rememberCut(pd offload.Pending, cut uint32, now int64) {
	f.ageCuts(now)
	f.cuts[0][pd] = cut
}

func (f *fastState) ageCuts(now int64) {
	if now < f.cutsTill {
		return
	}
	f.cuts[0], f.cuts[1] = f.cuts[1], f.cuts[0]
	clear(f.cuts[0])
	f.cutsTill = now + handoverKeep
}

// DeferActivation makes Process and ProcessBatch leave the activation of
// pending offers to ActivateFastPath, which the datapath worker calls once
// the frames it judged are on their TX ring and kicked: a flow activated
// before would have its later frames forwarded by the program past them.
func (pl *Pipeline) DeferActivation(on bool) { pl.fast.deferAct = on }

// ActivationDue reports whether ActivateFastPath has anything to do at
// now: pending offers made ready by the frames judged since its last
// call, or forced activations' cuts to forget. Owner only.
func (pl *Pipeline) ActivationDue(now int64) bool {
	f := &pl.fast
	return len(f.ready) != 0 || (now >= f.cutsTill && f.cuts[0] != nil)
}

// PostponeActivation forgets which pending offers are ready to activate,
// for a caller that cannot activate them now (ActivateFastPath's
// condition does not hold: frames still on a TX ring); the next marked
// frame of each makes it ready again. Owner only.
func (pl *Pipeline) PostponeActivation() { pl.fast.ready = pl.fast.ready[:0] }

// HoldBack is PostponeActivation for a worker that waited holdMax for
// another worker to send frames of these flows it judged (worker.activate)
// and gives up for now; counted (FastPathStats.HeldBack) when any offer was
// ready. Owner only.
func (pl *Pipeline) HoldBack() {
	if len(pl.fast.ready) != 0 {
		pl.stats.Fast.HeldBack++
	}
	pl.PostponeActivation()
}

// ActivateFastPath activates the pending offers whose last marked frame
// has been judged (the fast path's count of frames punted while pending
// equals the highest Mark judged here; pendingFrame says why not the
// number judged) and that have seen a marked frame
// of each direction with a verdict, or waited pendingWait for one; and
// those the worker has stayed behind for pendingForce, at once. The
// frames numbered up to an activation that are judged after it are
// dropped (handedOver). An offer the entry no longer
// qualifies for is cancelled, and one still short of marks after
// pendingLimit too (offered again by its next frame). Owner only.
func (pl *Pipeline) ActivateFastPath(now int64) {
	f := &pl.fast
	if now >= f.cutsTill && f.cuts[0] != nil {
		f.ageCuts(now)
	}
	if len(f.ready) == 0 {
		return
	}
	s := f.settings
	for _, ref := range f.ready {
		e := pl.shard.Resolve(ref)
		if e == nil || !e.Offloaded() {
			continue
		}
		ps, ok := f.pend[ref]
		if !ok {
			continue
		}
		// The other direction's ring may still hold frames punted
		// before the offer: they would take the flow back. Its first
		// Mark says it is past them; wait for one pendingWait, or as
		// long again as this direction's first Mark took to come (a
		// worker behind its rings: their delay).
		if ps.dirs&ps.need != ps.need && now < ps.first+max(pendingWait, ps.first-ps.since) {
			continue
		}
		vs, any := fastVerdicts(e, s.Rules.Generation())
		if !any || e.Helper != 0 || !offload.Eligible(e) {
			pl.takeBack(e, TakeBackSlowPath, now) // cancels
			continue
		}
		x := pl.own(e)
		if x == nil {
			continue
		}
		oc := offload.OfferConfig{Conntrack: &s.Conntrack, VerifyChecksum: s.VerifyChecksum}
		// Activate is a system call (it writes the state into the map):
		// ask the program's count, a load from the mmapped word, first,
		// so a worker behind the program makes none per marked frame.
		var done, forced bool
		var cut uint32
		var err error
		switch n, pending := f.two.Punted(ps.pd); {
		case !pending:
		case n == ps.seen:
			done, err = f.two.Activate(x, vs, oc, ps.pd, n)
		case now >= ps.since+pendingForce && n-ps.seen >= forceBacklog:
			// The worker is behind the program for good: activate at
			// once, and drop what is still queued of the flow up to the
			// count swapped away (handedOver).
			cut, done, err = f.two.ActivateNow(x, vs, oc, ps.pd)
			forced = done
		}
		switch {
		case err != nil:
			pl.stats.Fast.Errors++
			pl.takeBack(e, TakeBackSlowPath, now)
		case done:
			delete(f.pend, ref)
			pl.stats.Fast.Activated++
			if forced {
				pl.stats.Fast.Forced++
			} else {
				cut = ps.seen
			}
			// A frame numbered up to the cut still queued (on another
			// ring, or behind the worker) is dropped when it comes.
			f.rememberCut(ps.pd, cut, now)
		case now >= ps.since+pendingLimit:
			pl.takeBack(e, TakeBackSlowPath, now)
		}
	}
	f.ready = f.ready[:0]
}

// offer offers e, which maybeOffer found eligible.
func (pl *Pipeline) offer(s *Settings, e *flowtable.Entry, now int64) {
	f := &pl.fast
	gen := s.Rules.Generation()
	vs, any := fastVerdicts(e, gen)
	if !any {
		return
	}
	x := pl.own(e)
	if x == nil {
		return
	}
	oc := offload.OfferConfig{Conntrack: &s.Conntrack, VerifyChecksum: s.VerifyChecksum}
	var err error
	if f.two != nil {
		var pd offload.Pending
		if pd, err = f.two.OfferPending(x, vs, oc); err == nil {
			ps := pendState{pd: pd, since: now}
			for d, v := range vs {
				if v != 0 {
					ps.need |= 1 << d
				}
			}
			f.pend[pl.shard.Ref(e)] = ps
		}
	} else {
		err = f.fp.Offer(x, vs, oc)
	}
	if err != nil {
		pl.stats.Fast.Refused++
		if errors.Is(err, offload.ErrFull) {
			f.fullTill = now + offerBackoff
		}
		return
	}
	e.SetOffloaded(true)
	f.offered++
	pl.stats.Fast.Offered++
}

// adoptOffered makes e, an entry of the pipeline's shard that the
// previous process left offloaded and whose flow this run kept in the
// fast path under s (Datapath adoptFastPath), one of the pipeline's
// offered flows: counted (offered, FastPathStats.Adopted) and taken back
// as the pipeline's own offers are, by its next punted frame, its
// removal, or new Settings (s is the Settings it counts as offered
// under). Owner only, before the first packet.
func (pl *Pipeline) adoptOffered(s *Settings, e *flowtable.Entry) {
	f := &pl.fast
	f.settings = s
	e.SetOffloaded(true)
	f.offered++
	pl.stats.Fast.Adopted++
}

// SyncFastPath takes back every offered flow when new Settings were
// published since they were offered. Process and ProcessBatch do it on
// their own; the datapath worker also calls it once per loop, so that a
// rules reload reaches flows whose packets all go by the fast path (none
// comes up the slow path to notice). Owner only.
func (pl *Pipeline) SyncFastPath() {
	if pl.fast.fp != nil {
		pl.fastSettings(pl.ctl.Load())
	}
}
