package hasync

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctlist"
	"github.com/statewire/statewire/ctsync"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/statemachine"
)

// Table is what a commit needs from the live table: flowtable.Table.
type Table interface {
	InsertEntries(ctx context.Context, cs []flowtable.Commit, now int64) (flowtable.CommitResult, error)
	Snapshot(ctx context.Context, fn func(*flowtable.EntrySnapshot)) error
}

// Config configures a Service.
type Config struct {
	Link   Link
	Filter Filter
	// Peer names the peer's external cache (its ADDR:PORT).
	Peer string
	// Table and Now are the live table and its clock (commits).
	Table Table
	Now   func() int64
	// Expect is the table's expectations, sent to the peer (exp.go); nil
	// sends none (received ones are still kept and committed).
	Expect *flowtable.Expectations
	// Events and Shards: the workers' event rings; nil Events makes a
	// Service fed only through HandleEvents (tests).
	Events *bridge.Events
	Shards int
	// DrainInterval is how often the service drains the rings itself
	// (default 1ms; the control server's -E drain serves it too).
	DrainInterval time.Duration
	// ReconcileInterval is the least time between two walks of the table
	// after lost events (reconcile.go; default DefaultReconcileInterval).
	ReconcileInterval time.Duration
	// Priority is the scheduling priority of the service's thread, which
	// drains the rings, encodes, sends and reconciles (runner.go):
	// PriorityIdle (SCHED_IDLE), PriorityNice (nice 19) or PriorityNormal
	// (the default here; statewire run defaults to idle).
	Priority string
	// Logger, if set, gets a priority that could not be set and the
	// peer's resync requests.
	Logger *slog.Logger
	// CacheSize, when not zero, is how many connections the internal
	// cache is made for at once (statewire run: the live table's
	// MaxEntries). A connection flood that grows the cache then makes no
	// garbage: growing it entry by entry made the runtime collect and
	// sweep on the workers' CPU, a quarter of it in a one-CPU
	// connections-per-second run (perf/RESULTS.md).
	CacheSize int
}

// cached is one connection in a cache: the message's CT, when it was
// recorded (the table's clock), for [active since], and (internal cache)
// the type it was last sent as, which a resync sends again (conntrackd's
// object status: C_OBJ_NEW goes as CT_NEW, C_OBJ_ALIVE as CT_UPD).
type cached struct {
	ct   ctsync.CT // reused (Service.free): a heap CT per event was a GC cost the workers paid
	at   int64
	typ  ctsync.Type
	seen uint64 // the last Reconcile round that found it in the table (reconcile.go)
}

// cache is a set of connections keyed by their original tuple.
type cache map[flowtable.Tuple]*cached

// Stats are the sync's counters (statewire sync -s).
type Stats struct {
	Events, Filtered, Sent, SendFailed uint64
	RingLost                           uint64 // events the workers' rings dropped (shared with conntrack -E)
	Internal, External                 int
	Recv, RecvBad                      uint64 // CT messages applied / refused (ToState)
	ExpRecv, ExpRecvBad                uint64 // expectation messages applied / refused (ctsync.Exp.ToExpect)
	ExpSent                            uint64 // expectation messages sent (in Sent too)
	ExpNoMaster                        uint64 // expectations not sent: their master's tuple unknown (exp.go)
	ExpInternal, ExpExternal           int
	ResyncsServed                      uint64
	// Reconciles counts walks of the table after lost events; in them,
	// ReconcilePurged connections gone unseen were sent as CT_DEL and
	// ReconcileSent missed or changed ones as CT_UPD (reconcile.go).
	Reconciles, ReconcilePurged, ReconcileSent uint64
	Commits                                    uint64
	Committed                                  flowtable.CommitResult // the last commit
	Link                                       LinkStats
}

// Service is one bridge's state sync: the internal cache fed by the
// workers' events, the peer's external cache, commit, flush and resync.
type Service struct {
	cfg Config

	mu       sync.Mutex // internal, ext, st
	internal cache
	scratch  ctsync.CT // the message being sent (SendCT encodes it at once); under mu
	free     []*cached // internal entries deleted, for reuse; under mu
	slab     []cached  // entries never used yet (Config.CacheSize); under mu
	ext      map[string]cache
	st       Stats
	ringBase uint64
	x        expState // expectations (exp.go); under mu

	removeReader func()
	stop, done   chan struct{}
	// lastLost is the ring losses CheckLost last saw.
	lastLost  atomic.Uint64
	round     uint64 // Reconcile's rounds; under mu
	closeOnce sync.Once
	run       runner // the service's thread (runner.go)
}

// New makes a Service; Start starts it.
func New(cfg Config) *Service {
	if cfg.DrainInterval <= 0 {
		cfg.DrainInterval = time.Millisecond
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, internal: cache{}, ext: map[string]cache{cfg.Peer: {}}}
	if cfg.CacheSize > 0 {
		s.internal = make(cache, cfg.CacheSize)
		s.slab = make([]cached, cfg.CacheSize)
	}
	s.initExp()
	return s
}

// Start subscribes to the workers' events, starts the link and the
// service's thread (runner.go), which drains the rings every DrainInterval
// until Close.
func (s *Service) Start() {
	if s.cfg.Events == nil {
		s.cfg.Link.Start(s)
		return
	}
	s.startRunner()
	s.cfg.Link.Start(s)
}

// Close stops draining, unsubscribes and closes the link. Calls after the
// first do nothing.
func (s *Service) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.stop != nil {
			s.run.cancel()
			close(s.stop)
			<-s.done
			s.removeReader()
			s.cfg.Events.Unsubscribe()
		}
		err = s.cfg.Link.Close()
	})
	return err
}

// HandleEvents is the rings' reader: it records and sends what passes the
// filter (see the package doc). It never blocks.
func (s *Service) HandleEvents(batch []bridge.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range batch {
		e := &batch[i]
		s.st.Events++
		s.noteMaster(e)
		t := e.Entry.Orig
		switch e.Kind {
		case bridge.EventDestroy:
			c, ok := s.internal[t]
			if !ok {
				s.st.Filtered++
				continue
			}
			delete(s.internal, t)
			s.scratch = c.ct
			s.send(ctsync.TypeCTDel, &s.scratch)
			s.free = append(s.free, c)
		case bridge.EventNew, bridge.EventUpdate:
			if !s.cfg.Filter.Pass(&e.Entry) {
				s.st.Filtered++
				continue
			}
			ctsync.FillFromSnapshot(&s.scratch, &e.Entry, e.Now)
			typ := ctsync.TypeCTUpd
			if e.Kind == bridge.EventNew {
				typ = ctsync.TypeCTNew
			}
			c, ok := s.internal[t]
			if !ok {
				c = s.newCached()
				s.internal[t] = c
			}
			*c = cached{ct: s.scratch, at: e.Now, typ: typ, seen: c.seen} // seen: a Reconcile walk may have passed it
			s.send(typ, &s.scratch)
		}
	}
}

func (s *Service) send(t ctsync.Type, c *ctsync.CT) {
	if err := s.cfg.Link.SendCT(t, c); err != nil {
		s.st.SendFailed++
		return
	}
	s.st.Sent++
}

// CT is the link's handler for a peer's connection message.
func (s *Service) CT(t ctsync.Type, c *ctsync.CT) {
	now := s.cfg.Now()
	st, err := c.ToState(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.st.RecvBad++
		return
	}
	s.st.Recv++
	ext := s.ext[s.cfg.Peer]
	switch t {
	case ctsync.TypeCTDel:
		delete(ext, st.Orig)
	default:
		ext[st.Orig] = &cached{ct: *c, at: now}
	}
}

// ResyncRequested sends the whole internal cache to the peer, each
// connection as the type it was last sent as: at once, or, when the
// service has its thread, from that thread.
func (s *Service) ResyncRequested() {
	if s.stop != nil {
		// From the service's thread, not the link's loop.
		s.run.peerResync.Add(1)
		s.run.wake()
		return
	}
	s.serveResync()
}

// serveResync sends the whole internal cache.
func (s *Service) serveResync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.ResyncsServed++
	for _, c := range s.internal {
		s.scratch = c.ct
		s.send(c.typ, &s.scratch)
	}
	s.resyncExp()
}

// RequestResync asks the peer for its whole internal cache (sync -n).
func (s *Service) RequestResync() { s.cfg.Link.RequestResync() }

// Flush empties both caches (sync -f) and returns how many connections
// they held.
func (s *Service) Flush() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.internal)
	for t, c := range s.internal {
		delete(s.internal, t) // keeps the map's room (Config.CacheSize)
		s.free = append(s.free, c)
	}
	for p, c := range s.ext {
		n += len(c)
		s.ext[p] = cache{}
	}
	return n + s.flushExp()
}

// Commit inserts the external caches into the live table (sync -c). The
// caches keep their content, as conntrackd's do.
func (s *Service) Commit(ctx context.Context) (flowtable.CommitResult, error) {
	now := s.cfg.Now()
	s.mu.Lock()
	var cs []flowtable.Commit
	bad := 0
	for _, ext := range s.ext {
		for _, c := range ext {
			fc, ok := commitOf(&c.ct, now)
			if !ok {
				bad++
				continue
			}
			cs = append(cs, fc)
		}
	}
	orphans := s.attachExpects(cs, now)
	s.mu.Unlock()
	res, err := s.cfg.Table.InsertEntries(ctx, cs, now)
	res.Failed += bad
	res.ExpectFailed += orphans
	s.mu.Lock()
	s.st.Commits++
	s.st.Committed = res
	// The committed connections are ours now: into the internal cache,
	// unsent, as conntrackd records the kernel's events about its own
	// commit without sending them (sync-mode.c, origin CTD_ORIGIN_COMMIT),
	// so that a peer coming back and asking for a resync learns them.
	for _, ext := range s.ext {
		for _, c := range ext {
			if st, err := c.ct.ToState(now); err == nil {
				if _, ok := s.internal[st.Orig]; !ok {
					s.internal[st.Orig] = &cached{ct: c.ct, at: now, typ: ctsync.TypeCTNew}
				}
			}
		}
	}
	s.mu.Unlock()
	return res, err
}

// commitOf is what conntrackd's nl_create_conntrack makes of a cached
// connection at now: the timeout the peer sent, IPS_EXPECTED cleared, and
// TCP without window data, liberal in both directions unless the peer sent
// its window scales (see the package doc).
func commitOf(c *ctsync.CT, now int64) (flowtable.Commit, bool) {
	st, err := c.ToState(now)
	if err != nil || !c.Has(ctsync.NTATimeout) || c.Timeout == 0 {
		return flowtable.Commit{}, false
	}
	st.Conn.Status &^= statemachine.StatusExpected
	if st.Orig.Proto == 6 {
		flags := statemachine.TCPFlagSACKPerm
		if c.Has(ctsync.NTATCPWScaleOrg) && c.Has(ctsync.NTATCPWScaleRpl) {
			flags |= statemachine.TCPFlagWindowScale
		} else {
			flags |= statemachine.TCPFlagBeLiberal
		}
		for d := range st.Conn.TCP.Peer {
			st.Conn.TCP.Peer[d].Flags = flags
		}
	}
	return flowtable.Commit{Orig: st.Orig, Conn: st.Conn, Helper: uint8(st.Helper), Mark: st.Mark}, true
}

// Internal writes the internal cache, one conntrack -L-like line per
// connection with [active since], as conntrackd -i; it returns the count.
func (s *Service) Internal(line func(string)) int {
	now := s.cfg.Now()
	s.mu.Lock()
	lines := append(dump(s.internal, now), s.internalExpLines(now)...)
	s.mu.Unlock()
	for _, l := range lines {
		line(l)
	}
	return len(lines)
}

// External writes the external caches, as conntrackd -e.
func (s *Service) External(line func(string)) int {
	now := s.cfg.Now()
	s.mu.Lock()
	var lines []string
	for _, c := range s.ext {
		lines = append(lines, dump(c, now)...)
	}
	sort.Strings(lines)
	lines = append(lines, s.externalExpLines(now)...)
	s.mu.Unlock()
	for _, l := range lines {
		line(l)
	}
	return len(lines)
}

// dump formats a cache: the timeout is the message's, counted down from
// when it was recorded.
func dump(c cache, now int64) []string {
	out := make([]string, 0, len(c))
	for _, x := range c {
		st, err := x.ct.ToState(x.at)
		if err != nil {
			continue
		}
		es := flowtable.EntrySnapshot{Orig: st.Orig, Conn: st.Conn, Helper: uint8(st.Helper), Mark: st.Mark}
		since := (now - x.at) / int64(time.Second)
		out = append(out, ctlist.Line(&es, now, ctlist.Conntrack)+" [active since "+strconv.FormatInt(since, 10)+"s]")
	}
	sort.Strings(out)
	return out
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	st := s.st
	st.Internal = len(s.internal)
	for _, c := range s.ext {
		st.External += len(c)
	}
	for _, c := range s.x.internal {
		if c.sent {
			st.ExpInternal++
		}
	}
	for _, c := range s.x.ext {
		st.ExpExternal += len(c)
	}
	s.mu.Unlock()
	if s.cfg.Events != nil {
		st.RingLost = s.cfg.Events.Lost() - s.ringBase
	}
	st.Link = s.cfg.Link.Stats()
	return st
}

// StatsLines formats st as conntrackd -s does, section by section.
func StatsLines(st Stats) []string {
	return []string{
		"cache internal:",
		fmt.Sprintf("current active connections:\t%12d", st.Internal),
		fmt.Sprintf("events received:\t\t%12d", st.Events),
		fmt.Sprintf("events filtered:\t\t%12d", st.Filtered),
		fmt.Sprintf("events lost (ring full):\t%12d", st.RingLost),
		fmt.Sprintf("reconciliations:\t\t%12d (purged %d, sent %d)", st.Reconciles, st.ReconcilePurged, st.ReconcileSent),
		"cache external:",
		fmt.Sprintf("current active connections:\t%12d", st.External),
		fmt.Sprintf("messages applied:\t\t%12d", st.Recv),
		fmt.Sprintf("messages refused:\t\t%12d", st.RecvBad),
		"expectations:",
		fmt.Sprintf("internal cache:\t\t\t%12d", st.ExpInternal),
		fmt.Sprintf("external cache:\t\t\t%12d", st.ExpExternal),
		fmt.Sprintf("messages sent:\t\t\t%12d", st.ExpSent),
		fmt.Sprintf("messages applied:\t\t%12d", st.ExpRecv),
		fmt.Sprintf("messages refused:\t\t%12d", st.ExpRecvBad),
		fmt.Sprintf("not sent, master unknown:\t%12d", st.ExpNoMaster),
		fmt.Sprintf("commits:\t\t\t%12d", st.Commits),
		fmt.Sprintf("last commit: created %d, existing %d, failed %d; expectations %d, failed %d", st.Committed.Inserted, st.Committed.Exists, st.Committed.Failed,
			st.Committed.Expectations, st.Committed.ExpectFailed),
		"traffic processed:",
		fmt.Sprintf("%12d Bytes sent %12d Bytes recv", st.Link.BytesSent, st.Link.BytesRecv),
		fmt.Sprintf("%12d Pckt sent %12d Pckt recv", st.Link.DatagramsSent, st.Link.DatagramsRecv),
		fmt.Sprintf("%12d Msg sent %12d Msg recv", st.Link.DataSent, st.Link.DataRecv),
		fmt.Sprintf("%12d Error send %12d Error recv", st.SendFailed+st.Link.SendErrors, st.Link.Malformed+st.Link.Foreign),
		"message tracking:",
		fmt.Sprintf("%12d Malformed msgs %12d Lost msgs", st.Link.Malformed, st.Link.Lost),
		fmt.Sprintf("%12d Resent msgs %12d Queue drops", st.Link.Resent, st.Link.QueueDrops+st.Link.ResendQueueDrops),
		fmt.Sprintf("%12d Resync sent %12d Resync served %12d Resync for loss", st.Link.ResyncsRequested, st.ResyncsServed, st.Link.ResyncsForLoss),
		fmt.Sprintf("peer alive: %v, handshake done: %v", st.Link.PeerAlive, st.Link.PeerHello),
	}
}

// StatsLines is Stats formatted (control.Sync).
func (s *Service) StatsLines() []string { return StatsLines(s.Stats()) }
