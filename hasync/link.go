package hasync

import "github.com/statewire/statewire/ctsync"

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
