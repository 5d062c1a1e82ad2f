package control

import (
	"context"
	"fmt"

	"github.com/statewire/statewire/flowtable"
)

// Sync is the state sync a server serves to `statewire sync` (package
// hasync's Service); Options.Sync is nil when the bridge runs without
// --sync-peer.
type Sync interface {
	Internal(line func(string)) int
	External(line func(string)) int
	Commit(ctx context.Context) (flowtable.CommitResult, error)
	Flush() int
	RequestResync()
	StatsLines() []string
}

// Names of OpSync requests (Request.Name), after conntrackd's options.
const (
	SyncInternal = "internal" // -i
	SyncExternal = "external" // -e
	SyncCommit   = "commit"   // -c
	SyncFlush    = "flush"    // -f
	SyncResync   = "resync"   // -n
	SyncStats    = "stats"    // -s
)

// syncOp serves one `statewire sync` request.
func (s *Server) syncOp(ctx context.Context, req *Request, w *writer) (int, error) {
	sy := s.opt.Sync
	if sy == nil {
		return 0, fmt.Errorf("state sync is off on this bridge: start statewire run with --sync-listen and --sync-peer")
	}
	switch req.Name {
	case SyncInternal:
		return sy.Internal(w.line), nil
	case SyncExternal:
		return sy.External(w.line), nil
	case SyncCommit:
		r, err := sy.Commit(ctx)
		w.line(fmt.Sprintf("committed %d connections (%d already in the table, %d failed), %d expectations (%d failed)",
			r.Inserted, r.Exists, r.Failed, r.Expectations, r.ExpectFailed))
		if err == nil {
			s.log.Info("sync: external cache committed", "created", r.Inserted, "existing", r.Exists, "failed", r.Failed,
				"expectations", r.Expectations, "expectations_failed", r.ExpectFailed)
		}
		return r.Inserted, err
	case SyncFlush:
		return sy.Flush(), nil
	case SyncResync:
		sy.RequestResync()
		return 0, nil
	case SyncStats:
		for _, l := range sy.StatsLines() {
			w.line(l)
		}
		return 0, nil
	}
	return 0, fmt.Errorf("unknown sync request %q (internal, external, commit, flush, resync, stats)", req.Name)
}
