package hasync

import (
	"context"
	"time"

	"github.com/statewire/statewire/ctsync"
	"github.com/statewire/statewire/flowtable"
)

// Reconciliation after lost events. The workers' event rings drop what
// the drain does not take in time (bridge.Events.Lost, as the kernel's
// netlink socket overruns with ENOBUFS). A lost NEW or UPDATE is repaired
// by the connection's next event, but a lost DESTROY would leave the
// connection in the internal cache, and in the peer's external cache,
// forever: nothing else ever names it again. conntrackd answers an
// overrun the same way (NetlinkOverrunResync): it dumps the kernel's table
// and purges from its internal cache what the dump does not hold.
//
// Here: after a drain that finds Lost grown (CheckLost), and at most once
// per Config.ReconcileInterval, the service's thread (runner.go, at the
// sync's priority) walks the table (flowtable.Table.Snapshot, through the
// owners) and then, under mu:
//   - a cached connection the walk did not find, and recorded before the
//     walk began, is gone: removed and sent as CT_DEL (an entry recorded
//     after the start may have been created behind the walk);
//   - a connection the walk found that passes the filter and is not
//     cached, or whose TCP state, status bits or mark differ from the
//     cached copy (its NEW or UPDATE was lost), is recorded and sent as
//     CT_UPD;
//   - helper connections' tuples (the expectations' masters) not found
//     are forgotten likewise.
//
// The cost is one walk of the table per ReconcileInterval while events
// are being lost, none otherwise.

// DefaultReconcileInterval is the least time between two reconciliations.
const DefaultReconcileInterval = 5 * time.Second

// ReconcileResult counts what a reconciliation did.
type ReconcileResult struct {
	Walked, Purged, Sent int
}

// CheckLost asks for a reconciliation when the rings lost events since the
// last call (the service's thread calls it after each drain; tests call it
// directly). It never blocks: the service's thread runs the walk, at most
// once per ReconcileInterval (runner.go).
func (s *Service) CheckLost() {
	if s.cfg.Events == nil || s.stop == nil {
		return
	}
	lost := s.cfg.Events.Lost()
	if old := s.lastLost.Load(); lost == old || !s.lastLost.CompareAndSwap(old, lost) {
		return
	}
	s.run.reconcileWanted.Store(true)
	s.run.wake()
}

// Reconcile walks the table and brings the internal cache in line with it
// (see above). The table's owners must be serving requests. It keeps no
// copy of the table: a cached connection the walk finds is marked with the
// walk's round, and only the helper connections' references are
// collected.
func (s *Service) Reconcile(ctx context.Context) (ReconcileResult, error) {
	var res ReconcileResult
	start := s.cfg.Now()
	s.mu.Lock()
	s.round++
	round := s.round
	s.mu.Unlock()
	refs := map[flowtable.EntryRef]bool{}
	var ct ctsync.CT
	err := s.cfg.Table.Snapshot(ctx, func(es *flowtable.EntrySnapshot) {
		res.Walked++
		if es.Helper != 0 {
			refs[es.Ref] = true
		}
		pass := s.cfg.Filter.Pass(es)
		if pass {
			ctsync.FillFromSnapshot(&ct, es, start)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		c, ok := s.internal[es.Orig]
		if ok {
			c.seen = round
		}
		if !pass || ok && (c.at >= start || c.ct.TCPState == ct.TCPState && c.ct.Status == ct.Status && c.ct.Mark == ct.Mark) {
			return
		}
		if !ok {
			c = s.newCached()
			s.internal[es.Orig] = c
		}
		*c = cached{ct: ct, at: start, typ: ctsync.TypeCTUpd, seen: round}
		s.scratch = ct
		s.send(ctsync.TypeCTUpd, &s.scratch)
		if res.Sent++; res.Sent%256 == 0 {
			s.run.flushLink() // a big walk must not fill the link's transmit queue
		}
	})
	if err != nil {
		return res, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.Reconciles++
	for t, c := range s.internal {
		if c.seen == round || c.at >= start {
			continue
		}
		delete(s.internal, t)
		s.scratch = c.ct
		s.send(ctsync.TypeCTDel, &s.scratch)
		s.free = append(s.free, c)
		res.Purged++
	}
	for ref, m := range s.x.masters {
		if !refs[ref] && m.at < start {
			delete(s.x.masters, ref)
		}
	}
	s.st.ReconcilePurged += uint64(res.Purged)
	s.st.ReconcileSent += uint64(res.Sent)
	return res, nil
}
