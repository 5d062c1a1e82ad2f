package hasync

import (
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// Filter decides which connections are synchronised, as conntrackd's
// Filter section does. The zero Filter sends everything but untracked
// connections; DefaultFilter is conntrackd.conf's recommended one.
type Filter struct {
	// TCPStates, when not zero, lists the TCP states (bit i for
	// statemachine.TCPState i) in which a TCP connection's events are
	// sent (conntrackd.conf: State Accept { ... } for TCP).
	TCPStates uint16
}

// DefaultFilter sends a TCP connection once it is ESTABLISHED, and again
// in CLOSE_WAIT, TIME_WAIT and CLOSE, not during its handshake or every
// step of its close (conntrackd.conf's "State Accept { ESTABLISHED CLOSED
// TIME_WAIT CLOSE_WAIT for TCP }"); other protocols' events all go.
var DefaultFilter = Filter{TCPStates: 1<<statemachine.TCPEstablished | 1<<statemachine.TCPCloseWait |
	1<<statemachine.TCPTimeWait | 1<<statemachine.TCPClose}

// Pass reports whether the event about es is to be sent. A connection
// statewire does not track (NOTRACK) never is, as conntrackd never sees
// one (ctnetlink sends no events for untracked packets).
func (f Filter) Pass(es *flowtable.EntrySnapshot) bool {
	if es.Conn.Status&statemachine.StatusUntracked != 0 {
		return false
	}
	if es.Orig.Proto == packet.ProtoTCP && f.TCPStates != 0 {
		return f.TCPStates&(1<<es.Conn.State) != 0
	}
	return true
}
