package hasync

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctsync"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
)

// Expectations over sync, as conntrackd's ExpectationSync: the
// expectations the helpers register (FTP PORT/EPRT/PASV/EPSV, IRC DCC,
// TFTP, Amanda) are sent as EXP_NEW when they appear and EXP_DEL when they
// go (matched by their connection, expired, or their master gone), kept in
// an internal expectation cache; the peer's go into an external one; a
// commit adds them to the table with the committed master, so a data
// connection announced before a failover and opened after it is RELATED.
//
// Where they come from: the expectation table (flowtable.Expectations) is
// shared by the workers and readable from any goroutine without a lock, but
// it has no event ring. The service compares it with its internal cache
// after each drain of the connection events (SyncExpectations): with no
// expectation anywhere that is one atomic load. An expectation names its
// master by reference (shard, slot, generation); the master's original
// tuple, which the message carries, comes from the connection events of
// helper connections (masters), recorded whatever the filter says. An
// expectation whose master this bridge did not see created (the master
// predates the sync, its NEW event was lost, or it was committed from the
// peer, which conntrackd does not send on either) is kept unsent and
// counted (Stats.ExpNoMaster).

// expID names one of the table's expectations: its master and the
// connection it expects.
type expID struct {
	master           flowtable.EntryRef
	dst, src         packet.Addr
	dport, sport     uint16
	vlan             uint16
	l3, proto        uint8
	srcMask          bool
	helperID, class_ uint8
}

func idOf(x *flowtable.Expect) expID {
	return expID{master: x.Master, dst: x.Dst, src: x.Src, dport: x.DstPort, sport: x.SrcPort, vlan: x.VLAN,
		l3: x.L3, proto: x.Proto, srcMask: x.SrcMask, helperID: x.HelperID, class_: x.Class}
}

// extExpKey names a peer's expectation: its master's tuple and the
// expectation (Expires and Master cleared).
type extExpKey struct {
	master flowtable.Tuple
	x      flowtable.Expect
}

// cachedExp is one expectation in a cache: the message, when it was
// recorded (the table's clock), and (internal cache) the poll that last
// saw it in the table and whether it was sent.
type cachedExp struct {
	exp  ctsync.Exp
	at   int64
	seen uint64
	sent bool
}

// expState is Service's expectation part; under Service.mu.
type expState struct {
	masters  map[flowtable.EntryRef]masterRec
	internal map[expID]*cachedExp
	ext      map[string]map[extExpKey]*cachedExp
	free     []*cachedExp
	round    uint64
	now      int64
	scratch  ctsync.Exp
	visit    func(flowtable.Expect) bool // s.visitExpect, made once: Range with a closure would allocate per poll
}

func (s *Service) initExp() {
	s.x = expState{
		masters:  map[flowtable.EntryRef]masterRec{},
		internal: map[expID]*cachedExp{},
		ext:      map[string]map[extExpKey]*cachedExp{s.cfg.Peer: {}},
	}
	s.x.visit = s.visitExpect
}

// noteMaster records or forgets a helper connection's tuple by its
// reference, from its events. Caller holds mu.
func (s *Service) noteMaster(e *bridge.Event) {
	if e.Entry.Helper == 0 {
		return
	}
	if e.Kind == bridge.EventDestroy {
		delete(s.x.masters, e.Entry.Ref)
		return
	}
	s.x.masters[e.Entry.Ref] = masterRec{orig: e.Entry.Orig, at: e.Now}
}

// masterRec is a helper connection's original tuple and the time of its
// last event (Reconcile forgets only what it recorded before its walk).
type masterRec struct {
	orig flowtable.Tuple
	at   int64
}

// SyncExpectations sends what changed in the table's expectations since
// the last call: EXP_NEW for a new one, EXP_DEL for one gone. The service's
// drain loop calls it after each drain; tests call it directly. It does
// not allocate when nothing changed.
func (s *Service) SyncExpectations() {
	xt := s.cfg.Expect
	if xt == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if xt.Len() == 0 && len(s.x.internal) == 0 {
		return
	}
	s.x.round++
	s.x.now = s.cfg.Now()
	xt.Range(s.x.visit)
	for id, c := range s.x.internal {
		if c.seen == s.x.round {
			continue
		}
		delete(s.x.internal, id)
		if c.sent {
			s.x.scratch = c.exp
			s.sendExp(ctsync.TypeExpDel, &s.x.scratch)
		}
		s.x.free = append(s.x.free, c)
	}
}

// visitExpect is SyncExpectations' visit of one table expectation. Caller
// holds mu.
func (s *Service) visitExpect(x flowtable.Expect) bool {
	if x.Expires <= s.x.now {
		return true // expired, not yet swept: gone for the peer too
	}
	id := idOf(&x)
	c, ok := s.x.internal[id]
	if ok {
		c.seen = s.x.round
		if c.sent {
			return true
		}
	}
	m, known := s.x.masters[x.Master]
	if !ok {
		if n := len(s.x.free); n > 0 {
			c, s.x.free = s.x.free[n-1], s.x.free[:n-1]
		} else {
			c = new(cachedExp)
		}
		*c = cachedExp{at: s.x.now, seen: s.x.round}
		s.x.internal[id] = c
		if !known {
			s.st.ExpNoMaster++
		}
	}
	if !known {
		return true
	}
	ctsync.FillExpFromExpect(&c.exp, &x, &m.orig, s.x.now)
	c.sent = true
	s.x.scratch = c.exp
	s.sendExp(ctsync.TypeExpNew, &s.x.scratch)
	return true
}

func (s *Service) sendExp(t ctsync.Type, e *ctsync.Exp) {
	if err := s.cfg.Link.SendExp(t, e); err != nil {
		s.st.SendFailed++
		return
	}
	s.st.Sent++
	s.st.ExpSent++
}

// Exp is the link's handler for a peer's expectation: EXP_NEW and EXP_UPD
// replace the external cache's copy, EXP_DEL removes it. One statewire
// cannot expect exactly (ctsync.Exp.ToExpect) is refused and counted.
func (s *Service) Exp(t ctsync.Type, e *ctsync.Exp) {
	now := s.cfg.Now()
	x, m, err := e.ToExpect(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.st.ExpRecvBad++
		return
	}
	s.st.ExpRecv++
	x.Expires = 0
	k := extExpKey{master: m, x: x}
	ext := s.x.ext[s.cfg.Peer]
	if t == ctsync.TypeExpDel {
		delete(ext, k)
		return
	}
	ext[k] = &cachedExp{exp: *e, at: now}
}

// resyncExp sends the internal expectation cache (ResyncRequested). Caller
// holds mu.
func (s *Service) resyncExp() {
	for _, c := range s.x.internal {
		if c.sent {
			s.x.scratch = c.exp
			s.sendExp(ctsync.TypeExpNew, &s.x.scratch)
		}
	}
}

// flushExp empties both expectation caches and returns how many they
// held. Caller holds mu.
func (s *Service) flushExp() int {
	n := len(s.x.internal)
	s.x.internal = map[expID]*cachedExp{}
	for p, c := range s.x.ext {
		n += len(c)
		s.x.ext[p] = map[extExpKey]*cachedExp{}
	}
	return n
}

// attachExpects gives each commit of cs the external expectations of its
// connection, converted at now, and returns how many expectations have no
// master among cs. Caller holds mu.
func (s *Service) attachExpects(cs []flowtable.Commit, now int64) (orphans int) {
	at := make(map[flowtable.Tuple]int, len(cs))
	for i := range cs {
		at[cs[i].Orig] = i
	}
	for _, ext := range s.x.ext {
		for k, c := range ext {
			i, ok := at[k.master]
			if !ok {
				orphans++
				continue
			}
			x, _, err := c.exp.ToExpect(now)
			if err != nil {
				orphans++
				continue
			}
			cs[i].Expects = append(cs[i].Expects, x)
		}
	}
	return orphans
}

// expLines formats a cache's expectations as `conntrack -L expect`
// (libnetfilter_conntrack's default output): seconds left (the message's
// timeout counted down from when it was recorded), protocol, expected
// tuple, mask, master tuple, class, helper.
func expLines(cs []*cachedExp, now int64) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, ExpLine(&c.exp, now, c.at))
	}
	sort.Strings(out)
	return out
}

// ExpLine is one `conntrack -L expect` line for e, recorded at at.
func ExpLine(e *ctsync.Exp, now, at int64) string {
	var b strings.Builder
	left := int64(e.Timeout) - (now-at)/int64(time.Second)
	if left < 0 {
		left = 0
	}
	b.WriteString(strconv.FormatInt(left, 10))
	b.WriteString(" proto=")
	b.WriteString(strconv.Itoa(int(e.Expect.Proto)))
	tuple := func(prefix string, t *ctsync.Tuple) {
		b.WriteString(" " + prefix + "src=" + t.Src.String())
		b.WriteString(" " + prefix + "dst=" + t.Dst.String())
		b.WriteString(" sport=" + strconv.Itoa(int(t.SrcPort)))
		b.WriteString(" dport=" + strconv.Itoa(int(t.DstPort)))
	}
	tuple("", &e.Expect)
	tuple("mask-", &e.Mask)
	tuple("master-", &e.Master)
	var flags []string
	for _, f := range []struct {
		bit  uint32
		name string
	}{{ctsync.ExpectPermanent, "PERMANENT"}, {ctsync.ExpectInactive, "INACTIVE"}, {ctsync.ExpectUserspace, "USERSPACE"}} {
		if e.Flags&f.bit != 0 {
			flags = append(flags, f.name)
		}
	}
	if len(flags) > 0 {
		b.WriteString(" " + strings.Join(flags, ","))
	}
	b.WriteString(" class=" + strconv.FormatUint(uint64(e.Class), 10))
	if e.Helper != "" {
		b.WriteString(" helper=" + e.Helper)
	}
	return b.String()
}

// internalExpLines and externalExpLines list the caches' expectations
// (sent ones only, for the internal cache). Caller holds mu.
func (s *Service) internalExpLines(now int64) []string {
	var cs []*cachedExp
	for _, c := range s.x.internal {
		if c.sent {
			cs = append(cs, c)
		}
	}
	return expLines(cs, now)
}

func (s *Service) externalExpLines(now int64) []string {
	var cs []*cachedExp
	for _, ext := range s.x.ext {
		for _, c := range ext {
			cs = append(cs, c)
		}
	}
	return expLines(cs, now)
}
