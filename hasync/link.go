package hasync

import (
	"fmt"
	"log/slog"

	"github.com/statewire/statewire/ctsync"
)

// Handler receives what the peer sends: ctsync's, which Service
// implements.
type Handler = ctsync.Handler

// LinkStats are a link's counters (ctsync's).
type LinkStats = ctsync.LinkStats

// Link is the sync channel to one peer: *ctsync.Link, or a fake in tests.
// SendCT and SendExp never block.
type Link interface {
	Start(h Handler)
	SendCT(t ctsync.Type, c *ctsync.CT) error
	SendExp(t ctsync.Type, e *ctsync.Exp) error
	RequestResync()
	Stats() LinkStats
	Close() error
}

// Modes of the sync link (--sync-mode), as conntrackd's Sync { Mode ... }.
const (
	ModeFTFW    = "ftfw"    // reliable: sequence tracking, ACK/NACK, resync
	ModeNotrack = "notrack" // best effort: every message once, no tracking
)

var _ Link = (*ctsync.Link)(nil)

// NewLink opens the sync link of mode between listen and peer (ADDR:PORT
// each). It asks the peer for its whole cache once the link is up
// (conntrackd's StartupResync), so a bridge started after its peer, or
// started again, learns what the peer tracks.
func NewLink(mode, listen, peer string, log *slog.Logger) (Link, error) {
	switch mode {
	case ModeFTFW, ModeNotrack:
	default:
		return nil, fmt.Errorf("--sync-mode must be ftfw or notrack, got %q", mode)
	}
	l, err := ctsync.NewLink(ctsync.LinkConfig{Listen: listen, Peer: peer, Mode: mode, StartupResync: true, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("sync link (--sync-listen %s, --sync-peer %s): %w", listen, peer, err)
	}
	return l, nil
}
