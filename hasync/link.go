package hasync

import (
	"fmt"

	"github.com/statewire/statewire/ctsync"
)

// Handler receives what the peer sends (ctsync's FTFW link calls it from
// its receive goroutine).
type Handler interface {
	CT(t ctsync.Type, c *ctsync.CT)
	Exp(t ctsync.Type, e *ctsync.Exp)
	ResyncRequested()
}

// LinkStats are a link's counters, as conntrackd -s shows them for its
// channel.
type LinkStats struct {
	MsgSent, MsgRecv     uint64 // data messages
	BytesSent, BytesRecv uint64
	SendDropped          uint64 // messages the send queue had no room for
	Malformed            uint64 // received messages dropped undecoded
	Lost                 uint64 // messages the peer sent that never arrived (FTFW)
	ResyncsSent          uint64 // resync requests sent
	ResyncsRecv          uint64 // resync requests received
}

// Link is the sync channel to one peer: ctsync's FTFW link, or the
// NOTRACK one of this package. SendCT and SendExp never block.
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
	ModeFTFW    = "ftfw"    // reliable: sequence tracking, ACK/NACK, resync (ctsync)
	ModeNotrack = "notrack" // best effort: every message once, no tracking
)

// NewLink opens the sync link of mode between listen and peer (ADDR:PORT
// each).
func NewLink(mode, listen, peer string) (Link, error) {
	switch mode {
	case ModeNotrack:
		return NewNotrackLink(listen, peer)
	case ModeFTFW:
		// ctsync's FTFW link is written alongside ([sync-ftfw]); until it
		// is in this build, say what works instead of pretending.
		return nil, fmt.Errorf("--sync-mode ftfw: this build has no FTFW link yet; use --sync-mode notrack (and statewire sync -n after a loss on the sync link)")
	}
	return nil, fmt.Errorf("--sync-mode must be ftfw or notrack, got %q", mode)
}
