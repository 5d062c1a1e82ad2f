package bridge

import (
	"log/slog"
	"sync/atomic"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/helpers"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// Settings are the knobs every worker reads. A Settings value is immutable
// once published through Control: changing a knob publishes a new value,
// and workers pick it up on their next packet.
type Settings struct {
	Conntrack      statemachine.Config
	Rules          *rules.RuleSet
	VerifyChecksum bool    // verify L4 checksums (nf_conntrack_checksum)
	NonIP          Verdict // what to do with ARP, LLDP, STP and other non-IP frames
	AutoHelpers    bool    // attach helpers by their classic ports (ftp 21, irc 6667, tftp 69, amanda 10080)
	// LogInvalid logs INVALID packets (nf_conntrack_log_invalid): 0 off,
	// 255 every protocol, else only packets of that IP protocol number.
	// Logged through Control.Logger, at most logInvalidBurst per
	// logInvalidInterval per worker.
	LogInvalid uint8
}

// DefaultSettings returns the kernel's defaults, an empty rule set (policy
// ACCEPT) and non-IP frames forwarded: with nothing configured the bridge is
// a wire that tracks.
func DefaultSettings() *Settings {
	return &Settings{
		Conntrack:      statemachine.DefaultConfig(),
		Rules:          rules.Empty(),
		VerifyChecksum: true,
		NonIP:          Accept,
	}
}

// Control publishes Settings to the workers. Store may be called from any
// goroutine; workers Load once per packet (an atomic pointer load).
type Control struct {
	p   atomic.Pointer[Settings]
	ev  Events
	log atomic.Pointer[slog.Logger]
	// wake, set once by NewDatapath before the Control is shared, wakes
	// the sleeping workers after a Store (datapath_idle.go).
	wake func()
}

// NewControl returns a Control publishing s.
func NewControl(s *Settings) *Control {
	c := &Control{}
	c.p.Store(s)
	return c
}

// Load returns the current settings.
func (c *Control) Load() *Settings { return c.p.Load() }

// Store publishes s; the next packet of every worker uses it.
func (c *Control) Store(s *Settings) {
	c.p.Store(s)
	if c.wake != nil {
		c.wake()
	}
}

// SetLogger sets the logger of INVALID packets (Settings.LogInvalid).
func (c *Control) SetLogger(l *slog.Logger) { c.log.Store(l) }

// Logger returns the logger SetLogger set, or nil.
func (c *Control) Logger() *slog.Logger { return c.log.Load() }

// Events returns the conntrack event rings of the pipelines of c.
func (c *Control) Events() *Events { return &c.ev }

// Pipeline is the per-packet function of DESIGN.md: frame bytes, ingress
// port and time in, state and verdict out. It owns one flow-table shard;
// a Pipeline and its shard may be used by one goroutine only (the worker
// that owns shard i). The fragment cache and the expectation table are
// shared by all pipelines of a table and are safe for concurrent use.
type Pipeline struct {
	table *flowtable.Table
	shard *flowtable.Shard
	ctl   *Control
	frags *FragCache
	pkt   packet.Packet
	stats Stats
	// vlanMask is the table's Config.VLANMask, applied to every parse
	// (flowtable.ZoneOf) before a key, tuple, expectation or fragment
	// lookup reads the VLAN id.
	vlanMask uint16

	helperState helperStates
	batch       *batchState
	ev          eventState
	invLog      rateLimit   // nf_conntrack_log_invalid
	fast        fastState   // the XDP fast path, when set (SetFastPath)
	rules       ruleState   // the FORWARD rules' context and limit buckets (rulectx.go)
	tg          targetState // REJECT and LOG (reject.go, log.go)
}

// NewPipeline returns the pipeline of shard i of t. Beside the table's
// memory it needs the helper state of the shard's connections, 24 bytes
// per entry slot (helperStates), touched only by connections with a
// helper: the table's aux slots when it was made with AuxSize
// helperSlotSize (the datapath's, kept in its state file), else allocated
// here.
func NewPipeline(t *flowtable.Table, i int, ctl *Control, frags *FragCache) *Pipeline {
	pl := &Pipeline{table: t, shard: t.Shard(i), ctl: ctl, frags: frags, vlanMask: t.Config().VLANMask()}
	pl.helperState = helperStatesOf(t, i)
	pl.ev.hook = pl.onRemove
	return pl
}

// Shard returns the flow-table shard this pipeline owns.
func (pl *Pipeline) Shard() *flowtable.Shard { return pl.shard }

// Stats returns the pipeline's counters. Only the owner may call it; other
// goroutines read the copy the datapath publishes.
func (pl *Pipeline) Stats() *Stats { return &pl.stats }

// Packet returns the parse of the last frame processed (owner only).
func (pl *Pipeline) Packet() *packet.Packet { return &pl.pkt }

// Process runs one frame through parse, raw table, conntrack, helpers and
// the FORWARD rules. wireLen is the frame's length on the wire (0: len(frame)).
// now is monotonic nanoseconds. Process never allocates, but for a packet
// whose helper registers an expectation: Expectations.Add copies the
// expectation table (copy on write, so that lookups take no lock).
func (pl *Pipeline) Process(frame []byte, wireLen int, in Port, now int64) Result {
	pl.WatchEvents(now)
	s := pl.ctl.Load()
	if pl.fast.fp != nil {
		pl.fastSettings(s)
	}
	p := &pl.pkt
	reason := packet.Parse(frame, wireLen, packet.Options{VerifyChecksum: s.VerifyChecksum}, p)
	pl.stats.Parsed++
	flowtable.ZoneOf(p, pl.vlanMask)
	var r Result
	pl.processParsed(s, frame, p, reason, in, now, nil, &r)
	if pl.tg.logs.N|pl.tg.logs.Over != 0 {
		pl.writeLogs(s, frame, p, in, now)
	}
	if p.ChecksumPartial {
		pl.completeChecksum(frame, p, &r)
	}
	if s.LogInvalid != 0 && r.State == statemachine.StateInvalid {
		pl.logInvalid(s, p, in, &r, now)
	}
	if pl.fast.fp != nil {
		pl.fast.mark = offload.Mark{}
		if !pl.fast.deferAct {
			pl.ActivateFastPath(now)
		}
	}
	return r
}

// flowHash is what ProcessBatch worked out ahead for a frame's flow: the
// flow-table key (of the quoted flow for an ICMP error), its hash, and the
// entry the batch lookup found, which stays the answer while the shard's
// Version is unchanged (no insertion or removal since).
type flowHash struct {
	key     *flowtable.Key
	hash    uint64
	entry   *flowtable.Entry
	version uint64
}

// lookup returns the live entry of fh's key: the batch lookup's answer when
// nothing was inserted or removed since, else a new lookup.
func (pl *Pipeline) lookup(fh *flowHash, now int64) *flowtable.Entry {
	if fh.version == pl.shard.Version() {
		if fh.entry != nil {
			pl.shard.Hit()
		}
		return fh.entry
	}
	return pl.shard.Lookup(fh.key, fh.hash, now)
}

// processParsed is Process after the parse; it writes the result to r.
// fh, when not nil, holds the key and hash of the flow the frame belongs
// to (for an ICMP error: of the quoted flow). The result is built in place
// rather than returned: the tracker fills it through a pointer, and copying
// it out afterwards reloaded those fresh byte stores on every packet.
func (pl *Pipeline) processParsed(s *Settings, frame []byte, p *packet.Packet, reason packet.Reason, in Port, now int64, fh *flowHash, r *Result) {
	st := &pl.stats
	st.Packets[in]++
	pl.rules.now, pl.rules.hasRelated = now, false

	*r = Result{Rule: rules.PolicyRule, Parse: reason}
	st.Parse[r.Parse]++
	pl.tg.logs.N, pl.tg.logs.Over = 0, 0
	if pl.fast.handedOver() {
		// Left behind by a forced activation of its flow: the fast path
		// has taken the flow's later frames (fastpath.go pendingForce).
		r.Drop = DropHandover
		st.Fast.Handover++
		pl.count(r)
		return
	}
	switch {
	case r.Parse == packet.ReasonNotIP:
		// Not IP: no tracking and no FORWARD rules (br_netfilter hands only
		// IP to iptables); a wire forwards it unless told otherwise.
		r.Verdict = s.NonIP
		if r.Verdict == Drop {
			r.Drop = DropNonIP
		}
		pl.count(r)
		return
	case r.Parse != packet.ReasonOK && !invalidInConntrack(r.Parse):
		// A broken L2/L3 header never reaches conntrack: the kernel's IP
		// layer drops it first.
		r.Drop = DropMalformed
		pl.count(r)
		return
	}

	var raw rules.RawResult
	s.Rules.RawTo(p, uint8(in), &raw)
	if raw.Drop {
		r.Drop = DropRaw
		r.Rule = raw.Rule
		pl.count(r)
		return
	}

	switch {
	case r.Parse != packet.ReasonOK:
		// A broken L4 header, bad checksum or tiny first fragment: the
		// tracker cannot make a tuple, so the packet is INVALID and the
		// rules decide (the kernel's nf_conntrack_in returns NF_ACCEPT with
		// no ct).
		r.State = statemachine.StateInvalid
		st.Invalid++
	case raw.NoTrack:
		r.State = statemachine.StateUntracked
	case p.Fragment && p.FragOffset != 0:
		*r = pl.laterFragment(s, p, in, now, *r)
		pl.count(r)
		return
	default:
		pl.track(s, frame, p, in, &raw, now, fh, r)
		if r.Verdict == Accept || r.Drop != DropNone {
			// track decided (cached verdict, helper drop, full table).
			pl.noteFirstFragment(p, now, r)
			pl.count(r)
			return
		}
	}
	if r.Drop == DropNone && r.Verdict != Accept {
		pl.filter(s, p, in, r)
	}
	pl.noteFirstFragment(p, now, r)
	pl.count(r)
}

// MaxBatch is the most frames ProcessBatch takes at once.
const MaxBatch = 64

// batchState is ProcessBatch's scratch space, allocated once per pipeline.
// Slot i holds frame i's parse (prepare); keys and hashes are packed by
// runPrepared before the look-up (only frames with a key), flows[i]
// points into them for frame i.
type batchState struct {
	pkts    [MaxBatch]packet.Packet
	reasons [MaxBatch]packet.Reason
	flows   [MaxBatch]flowHash
	hasFlow [MaxBatch]bool
	keys    [MaxBatch]flowtable.Key
	hashes  [MaxBatch]uint64
	found   [MaxBatch]*flowtable.Entry
	slot    [MaxBatch]uint8 // frame i's index in keys, hashes and found
}

// batchScratch returns the pipeline's batchState, made on first use.
func (pl *Pipeline) batchScratch() *batchState {
	if pl.batch == nil {
		pl.batch = new(batchState)
	}
	return pl.batch
}

// ProcessBatch runs up to MaxBatch frames received on port in and writes
// their results to out (which must be at least as long). It parses and
// hashes the whole batch first and looks up the whole batch in one pass,
// so that the cache misses of the batch overlap instead of stalling one
// frame at a time; then it processes the frames in order, each seeing what
// the earlier ones did (a lookup answer is used only while no frame before
// it inserted or removed an entry). Results and counters are exactly those
// of calling Process on each frame in turn.
func (pl *Pipeline) ProcessBatch(frames [][]byte, in Port, now int64, out []Result) {
	pl.ProcessBatchMarked(frames, nil, in, now, out)
}

// ProcessBatchMarked is ProcessBatch with the Marks read in front of the
// frames (marks[i] for frames[i]; nil or short: unmarked), for a fast path
// that offers in two phases.
func (pl *Pipeline) ProcessBatchMarked(frames [][]byte, marks []offload.Mark, in Port, now int64, out []Result) {
	n := min(len(frames), len(out), MaxBatch)
	opt := pl.parseOptions()
	for i := range n {
		pl.prepare(i, frames[i], opt)
	}
	pl.runPrepared(frames[:n], marks, in, now, out)
}

// parseOptions returns the options frames are parsed with under the
// current Settings.
func (pl *Pipeline) parseOptions() packet.Options {
	return packet.Options{VerifyChecksum: pl.ctl.Load().VerifyChecksum}
}

// prepare parses frame into slot i of the batch and works out its flow's
// key and hash (of the quoted flow for an ICMP error): everything about a
// frame that does not depend on the table. It is the one parse a frame
// gets in the datapath: the worker steers the frame to its flow's owner on
// it (prepared), and the owner runs the batch on it (runPrepared).
func (pl *Pipeline) prepare(i int, frame []byte, opt packet.Options) {
	b := pl.batchScratch()
	p := &b.pkts[i]
	b.reasons[i] = packet.Parse(frame, 0, opt, p)
	pl.stats.Parsed++
	flowtable.ZoneOf(p, pl.vlanMask)
	b.hasFlow[i] = false
	if b.reasons[i] == packet.ReasonOK && b.keys[i].SetOf(p) {
		b.hashes[i] = pl.table.HashKey(&b.keys[i])
		b.hasFlow[i] = true
	}
}

// prepared returns slot i's parse, whether it parsed, and its flow's
// hash when it has one.
func (pl *Pipeline) prepared(i int) (p *packet.Packet, ok bool, hash uint64, hasFlow bool) {
	b := pl.batch
	return &b.pkts[i], b.reasons[i] == packet.ReasonOK, b.hashes[i], b.hasFlow[i]
}

// parsed is one frame's parse as prepare left it in a batch slot, carried
// from the worker that received the frame to the one that owns its flow
// (a hand-off), so that the owner does not parse it again.
type parsed struct {
	pkt     packet.Packet
	key     flowtable.Key
	hash    uint64
	reason  packet.Reason
	hasFlow bool
}

// saveParsed copies slot i's parse to out.
func (pl *Pipeline) saveParsed(i int, out *parsed) {
	b := pl.batch
	out.pkt, out.key, out.hash, out.reason, out.hasFlow = b.pkts[i], b.keys[i], b.hashes[i], b.reasons[i], b.hasFlow[i]
}

// loadParsed makes from slot i's parse, as if prepare had made it here.
func (pl *Pipeline) loadParsed(i int, from *parsed) {
	b := pl.batchScratch()
	b.pkts[i], b.keys[i], b.hashes[i], b.reasons[i], b.hasFlow[i] = from.pkt, from.key, from.hash, from.reason, from.hasFlow
}

// runPrepared is ProcessBatchMarked after the parse: frames[i] is in slot
// i (prepare or loadParsed), len(frames) <= MaxBatch. A parse made under
// Settings older than those loaded here differs at most in VerifyChecksum,
// for the frames of that one batch.
func (pl *Pipeline) runPrepared(frames [][]byte, marks []offload.Mark, in Port, now int64, out []Result) {
	pl.WatchEvents(now)
	s := pl.ctl.Load()
	if pl.fast.fp != nil {
		pl.fastSettings(s)
	}
	b := pl.batchScratch()
	n := min(len(frames), len(out), MaxBatch)
	// Pack the keys for the look-up. In place: m <= i, and the slots
	// below m that are overwritten held keys already moved or none.
	m := 0
	for i := range n {
		if !b.hasFlow[i] {
			continue
		}
		if m != i {
			b.keys[m], b.hashes[m] = b.keys[i], b.hashes[i]
		}
		b.slot[i] = uint8(m)
		m++
	}
	pl.shard.LookupBatch(b.keys[:m], b.hashes[:m], b.found[:m], now)
	version := pl.shard.Version()
	if pl.fast.fp != nil {
		pl.fast.batching = true
	}
	for i := range n {
		var fh *flowHash
		if b.hasFlow[i] {
			j := b.slot[i]
			fh = &b.flows[i]
			*fh = flowHash{key: &b.keys[j], hash: b.hashes[j], entry: b.found[j], version: version}
		}
		if i < len(marks) {
			pl.fast.mark = marks[i]
		}
		pl.processParsed(s, frames[i], &b.pkts[i], b.reasons[i], in, now, fh, &out[i])
		if pl.tg.logs.N|pl.tg.logs.Over != 0 {
			pl.writeLogs(s, frames[i], &b.pkts[i], in, now)
		}
		if b.pkts[i].ChecksumPartial {
			pl.completeChecksum(frames[i], &b.pkts[i], &out[i])
		}
		pl.fast.mark = offload.Mark{}
		if s.LogInvalid != 0 && out[i].State == statemachine.StateInvalid {
			pl.logInvalid(s, &b.pkts[i], in, &out[i], now)
		}
	}
	if pl.fast.fp != nil {
		pl.offerPending(s, now)
		if !pl.fast.deferAct {
			pl.ActivateFastPath(now)
		}
	}
}

// completeChecksum writes the checksum into an accepted frame whose sender
// left it to the device (packet.Packet.ChecksumPartial): the kernel judged
// such a frame valid, but the host behind the other port never sees the
// sender's skb and would drop it as corrupt. The frame is the UMEM buffer
// the TX ring sends, so it leaves complete. Completing costs one store: the
// parse already summed the segment (packet.CompleteChecksum). A dropped
// frame is left alone.
func (pl *Pipeline) completeChecksum(frame []byte, p *packet.Packet, r *Result) {
	if r.Verdict != Accept {
		return
	}
	at := p.L4Off + 6
	if p.Proto == packet.ProtoTCP {
		at = p.L4Off + 16
	}
	packet.CompleteChecksum(frame, p)
	pl.stats.CsumCompleted++
	r.CsumAt = at
}

// invalidInConntrack reports whether a parse failure is one conntrack sees
// (the IP header was fine, so the packet reaches the tracker, which calls it
// INVALID) rather than one the IP layer drops before conntrack.
func invalidInConntrack(r packet.Reason) bool {
	switch r {
	case packet.ReasonTruncatedTCP, packet.ReasonTCPBadDataOffset,
		packet.ReasonTruncatedUDP, packet.ReasonUDPBadLength,
		packet.ReasonTruncatedICMP, packet.ReasonICMPBadInner,
		packet.ReasonBadChecksum, packet.ReasonTinyFragment,
		packet.ReasonFragmentOverlap, packet.ReasonNonFirstFragment:
		return true
	}
	return false
}

// filter evaluates the FORWARD chain for r.State, unless a verdict was
// already decided.
func (pl *Pipeline) filter(s *Settings, p *packet.Packet, in Port, r *Result) {
	v, _ := pl.filterCtx(s, p, in, pl.relatedEntry(), nil, r)
	r.setVerdict(v)
}

// setVerdict makes the FORWARD chain's verdict v r's.
func (r *Result) setVerdict(v rules.Verdict) {
	r.Rule = v.Rule
	if v.Action == rules.Accept {
		r.Verdict = Accept
	} else {
		r.Verdict, r.Drop = Drop, DropRule
		if v.Reject != rules.RejectNone {
			r.Drop, r.Reject = DropReject, v.Reject
		}
		if v.HashlimitFull {
			r.Drop = DropHashlimit
		}
		if v.ConnlimitFull {
			r.Drop = DropConnlimit
		}
	}
}

// verdictFor returns the verdict for a packet of entry e in direction dir
// with state st that arrived on port in: from the entry's cache when the
// rule-set generation, state and ingress port match (rules.CachedVerdict
// says why those), else by walking the rules, caching the answer when it
// depended on nothing but those.
//
// A fresh verdict does not displace one cached for the same state on the
// other port: a host sending frames of a flow into the wrong port (spoofed)
// would otherwise make the flow's own packets miss the cache in turn.
func (pl *Pipeline) verdictFor(s *Settings, e *flowtable.Entry, p *packet.Packet, in Port, rawPassive bool, r *Result) {
	gen := s.Rules.Generation()
	cached, _ := e.CachedVerdict(r.Dir, gen)
	c := rules.CachedVerdict(cached)
	if a, ok := c.Lookup(r.State, uint8(in)); ok {
		pl.stats.VerdictCacheHits++
		r.setVerdict(rules.Verdict{Action: a, Rule: r.Rule}) // the deciding rule is not cached
		return
	}
	v, cacheable := pl.filterCtx(s, p, in, e, &e.Conn, r)
	r.setVerdict(v)
	if cacheable {
		if _, otherPort := c.Lookup(r.State, uint8(in.Other())); !otherPort {
			c := rules.CacheVerdict(v.Action, r.State, uint8(in))
			if rawPassive {
				c = c.WithRawPassive()
			}
			e.CacheVerdict(r.Dir, gen, uint8(c))
		}
	}
}

// track runs the tracker for a parsed, tracked-protocol packet and, for
// packets of an existing or newly confirmed entry, the verdict.
//
// Only ICMP over IPv4 and ICMPv6 over IPv6 reach the ICMP error and
// untracked handling (nf_conntrack_handle_icmp calls neither for the other
// pairings, and Parse reads no ICMP header from them): ICMP over IPv6 or
// ICMPv6 over IPv4 goes through the tracker like any other protocol, which
// refuses it (INVALID, counted "invalid", not "icmp_error"), as
// nf_conntrack_icmp{,v6}_packet refuse the other family.
func (pl *Pipeline) track(s *Settings, frame []byte, p *packet.Packet, in Port, raw *rules.RawResult, now int64, fh *flowHash, r *Result) {
	if packet.IsICMP(p.IPVersion, p.Proto) {
		switch packet.ICMPClass(p.IPVersion, p.ICMP.Type) {
		case packet.ICMPUntracked:
			r.State = statemachine.StateUntracked
			return
		case packet.ICMPError, packet.ICMPRedirect:
			pl.icmpError(p, now, fh, r)
			return
		}
	}
	var e *flowtable.Entry
	if fh != nil {
		e = pl.lookup(fh, now)
	} else {
		// Process: no batch worked the key out ahead.
		var key flowtable.Key
		if !key.SetOf(p) {
			r.State = statemachine.StateInvalid
			pl.stats.Invalid++
			return
		}
		fh = &flowHash{key: &key, hash: pl.table.HashKey(&key)}
		e = pl.shard.Lookup(fh.key, fh.hash, now)
	}
	if e != nil {
		if e.Offloaded() && !pl.pendingFrame(e, e.DirOf(p), now) {
			// Judge it on the state the fast path left, not on the
			// table's stale copy.
			pl.takeBack(e, TakeBackSlowPath, now)
		}
		r.Tracked = true
		r.Dir = e.DirOf(p)
		oldState, oldStatus := e.Conn.State, e.Conn.Status
		res := statemachine.Update(&e.Conn, p, r.Dir, now, &s.Conntrack)
		r.TCPState = e.Conn.State
		pl.countsAfterUpdate(e)
		if !res.Reopen {
			pl.existing(s, e, p, in, raw.Passive, res, r)
			if !res.Kill {
				pl.inspect(e, frame, p, now, r)
				if pl.ev.ring != nil && (e.Conn.State != oldState || e.Conn.Status != oldStatus) {
					pl.emit(EventUpdate, e, e.Conn.State != oldState)
				}
				if pl.fast.fp != nil && r.Verdict == Accept {
					pl.maybeOffer(s, e, now)
				}
			}
			return
		}
		// A SYN reopening a closed connection replaces the old entry.
		pl.shard.Delete(e)
		r.Tracked, r.Dir = false, statemachine.Original
	}
	pl.create(s, frame, p, in, fh.key, fh.hash, raw.Helper, now, r)
}

// existing finishes a packet of an existing entry after Update.
func (pl *Pipeline) existing(s *Settings, e *flowtable.Entry, p *packet.Packet, in Port, rawPassive bool, res statemachine.Result, r *Result) {
	r.State = res.State
	r.Invalid = res.Reason
	if res.State == statemachine.StateInvalid {
		pl.stats.Invalid++
		pl.stats.InvalidBy[res.Reason]++
	} else if res.Ignored {
		pl.stats.Ignore++
	}
	pl.verdictFor(s, e, p, in, rawPassive, r)
	if res.Kill {
		pl.shard.Delete(e)
	}
}

// create handles the first packet of a would-be connection: the tracker
// validates it, an expectation may make it RELATED, the rules decide, and
// only an accepted packet creates ("confirms") the entry.
func (pl *Pipeline) create(s *Settings, frame []byte, p *packet.Packet, in Port, key *flowtable.Key, hash uint64, helper rules.HelperID, now int64, r *Result) {
	var c statemachine.Conn
	res := statemachine.New(&c, p, now, &s.Conntrack)
	r.State, r.Invalid = res.State, res.Reason
	if res.State == statemachine.StateInvalid {
		pl.stats.Invalid++
		pl.stats.InvalidBy[res.Reason]++
		return // rules decide; no entry
	}
	var master flowtable.EntryRef
	related := false
	if pl.table.Expect.Len() > 0 {
		if x, ok := pl.table.Expect.Match(p, now); ok {
			master, related = x.Master, true
			c.Status |= statemachine.StatusExpected
			r.State = statemachine.StateRelated
			pl.stats.ExpectNew++
		}
	}
	v, _ := pl.filterCtx(s, p, in, nil, &c, r)
	r.setVerdict(v)
	if r.Verdict != Accept {
		pl.dropPending()
		return // a dropped first packet creates no entry
	}
	t, _ := flowtable.TupleFromPacket(p)
	e, ir := pl.shard.Insert(key, hash, &t, now)
	if ir == flowtable.TableFull {
		pl.dropPending()
		r.Verdict, r.Drop = Drop, DropTableFull
		return
	}
	e.Conn = c
	pl.saveConnMark(e)
	pl.keepCounts(e)
	if related {
		pl.shard.LinkChild(e, master)
	}
	id := helperOfRule[helper%rules.NumHelpers]
	if id == helpers.IDNone && s.AutoHelpers {
		id = helpers.ByPort(p.IPVersion, p.Proto, p.DstPort)
	}
	e.Helper = uint8(id)
	r.Tracked = true
	r.TCPState = c.State
	pl.inspect(e, frame, p, now, r)
	if pl.ev.ring != nil {
		pl.emit(EventNew, e, true)
	}
}

// icmpError classifies an ICMP/ICMPv6 error by the connection its quoted
// packet belongs to (kernel nf_conntrack_inet_error): RELATED when the
// inverted inner tuple finds an entry and the error is addressed to that
// connection's endpoint, INVALID otherwise. It refreshes nothing.
func (pl *Pipeline) icmpError(p *packet.Packet, now int64, fh *flowHash, r *Result) {
	pl.stats.ICMPError++
	r.State = statemachine.StateInvalid
	if !p.HasInner || p.Inner.NonFirstFragment {
		return
	}
	if packet.ICMPClass(p.IPVersion, p.ICMP.Type) == packet.ICMPRedirect && !validRedirect(p) {
		return
	}
	var e *flowtable.Entry
	if fh != nil {
		e = pl.lookup(fh, now)
	} else if key, ok := flowtable.KeyOf(p); ok {
		e = pl.shard.Lookup(&key, pl.table.HashKey(&key), now)
	}
	if e == nil {
		return
	}
	// The inverted inner tuple's destination is the quoted packet's source:
	// the error must be addressed there ("outer daddr mismatch").
	if p.Dst != p.Inner.Src {
		return
	}
	r.State = statemachine.StateRelated
	r.Dir = e.InnerDir(p)
	r.Tracked = true
	r.TCPState = e.Conn.State
	pl.rules.related, pl.rules.hasRelated = pl.shard.Ref(e), true
}

// validRedirect applies the kernel's ICMPv6 redirect checks (RFC 4861
// 8.1): code 0, hop limit 255, a link-local source.
func validRedirect(p *packet.Packet) bool {
	return p.ICMP.Code == 0 && p.TTL == 255 && p.Src[0] == 0xfe && p.Src[1]&0xc0 == 0x80
}

func (pl *Pipeline) count(r *Result) {
	st := &pl.stats
	if r.Verdict == Accept {
		st.Accepted++
	} else {
		st.Drops[r.Drop]++
	}
	st.States[stateIndex(r.State)]++
}
