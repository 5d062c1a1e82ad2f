package control

import (
	"context"
	"time"

	"github.com/statewire/statewire/flowtable"
)

// Events (conntrack -E) are derived by comparing successive snapshots of
// the table, every Options.EventInterval: an entry that appears is [NEW],
// one whose TCP state or status bits changed is [UPDATE], one that is gone
// is [DESTROY] (printed as last seen). The workers publish no event ring
// yet, so a connection that changes several times between two snapshots
// shows only its latest state, and one that lives less than an interval may
// not show at all. Each snapshot costs the workers one copy of the table:
// keep -E for small tables and debugging.

type evState struct {
	es   flowtable.EntrySnapshot
	seen uint64 // round of the last snapshot that had it
}

func (s *Server) events(ctx context.Context, req *Request, w *writer) error {
	m, err := req.Filter.compile()
	if err != nil {
		return err
	}
	format, err := formatter(req.Format)
	if err != nil {
		return err
	}
	known := map[flowtable.EntryRef]*evState{}
	t := time.NewTicker(s.opt.EventInterval)
	defer t.Stop()
	for round := uint64(1); ; round++ {
		now := s.b.Now()
		err := s.b.Table().Snapshot(ctx, func(es *flowtable.EntrySnapshot) {
			if !m.Match(es) {
				return
			}
			k := known[es.Ref]
			switch {
			case k == nil:
				known[es.Ref] = &evState{es: *es, seen: round}
				if round > 1 { // the first round is the table as it was: not events
					w.line("    [NEW] " + format(es, now))
				}
			case k.es.Conn.State != es.Conn.State || k.es.Conn.Status != es.Conn.Status:
				k.es, k.seen = *es, round
				w.line(" [UPDATE] " + format(es, now))
			default:
				k.es, k.seen = *es, round
			}
		})
		if err != nil {
			return err
		}
		for ref, k := range known {
			if k.seen != round {
				w.line("[DESTROY] " + format(&k.es, now))
				delete(known, ref)
			}
		}
		w.flush()
		if w.err != nil {
			return w.err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
