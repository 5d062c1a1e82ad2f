package statemachine

import (
	"strings"
	"testing"

	"github.com/statewire/statewire/packet"
)

// specTables is the transition table of spec §1 (conntrack.md), transcribed
// independently of tcpConntracks: rows syn, synack, fin, ack, rst, none;
// columns NO SS SR ES FW CW LA TW CL S2.
var specTables = [2]string{
	`SS SS IG IG IG IG IG SS SS S2
	 IV IV SR IV IV IV IV IV IV SR
	 IV IV FW FW LA LA LA TW CL IV
	 ES IV ES ES CW CW TW TW CL IV
	 IV CL CL CL CL CL CL CL CL CL
	 IV IV IV IV IV IV IV IV IV IV`,
	`IV S2 IV IV IV IV IV SS IV S2
	 IV SR IG IG IG IG IG IG IG SR
	 IV IV FW FW LA LA LA TW CL IV
	 IV IG SR ES CW CW TW TW CL IG
	 IV CL CL CL CL CL CL CL CL CL
	 IV IV IV IV IV IV IV IV IV IV`,
}

var shortNames = map[string]TCPState{
	"NO": sNO, "SS": sSS, "SR": sSR, "ES": sES, "FW": sFW, "CW": sCW,
	"LA": sLA, "TW": sTW, "CL": sCL, "S2": sS2, "IV": sIV, "IG": sIG,
}

var classNames = [numClasses]string{"syn", "synack", "fin", "ack", "rst", "none"}

// TestTableMatchesSpec walks every cell of both tables.
func TestTableMatchesSpec(t *testing.T) {
	for dir := range 2 {
		rows := strings.Split(specTables[dir], "\n")
		if len(rows) != int(numClasses) {
			t.Fatalf("spec table %d has %d rows", dir, len(rows))
		}
		for class, row := range rows {
			cells := strings.Fields(row)
			if len(cells) != int(NumTCPStates) {
				t.Fatalf("spec row %d/%d has %d cells", dir, class, len(cells))
			}
			for st, cell := range cells {
				want := shortNames[cell]
				if got := tcpConntracks[dir][class][st]; got != want {
					t.Errorf("tcpConntracks[%d][%s][%v] = %v, want %v", dir, classNames[class], TCPState(st), got, want)
				}
			}
		}
	}
}

// cellConn builds a connection in state st with window data in which the
// packets of cellPacket are in window: client ISN 1000, server ISN 5000,
// both sides have ACKed the other's SYN.
func cellConn(st TCPState) Conn {
	c := Conn{Proto: packet.ProtoTCP, State: st, Expires: 1 << 40}
	c.TCP.Peer[Original] = TCPPeer{End: 1001, MaxEnd: 1001 + 65535, MaxWin: 65535, MaxAck: 5001, Flags: TCPFlagMaxAckSet}
	c.TCP.Peer[Reply] = TCPPeer{End: 5001, MaxEnd: 5001 + 65535, MaxWin: 65535, MaxAck: 1001, Flags: TCPFlagMaxAckSet}
	c.TCP.LastIndex = classNone
	if st != TCPNone && st != TCPSynSent {
		c.Status = StatusSeenReply
	}
	return c
}

// cellPacket returns an in-window packet of a class from a direction.
func cellPacket(dir Dir, class uint8) *packet.Packet {
	isn, nxt, ack := uint32(1000), uint32(1001), uint32(5001)
	if dir == Reply {
		isn, nxt, ack = 5000, 5001, 1001
	}
	s := seg{win: 1000, wscale: -1, ack: ack, seq: nxt}
	switch class {
	case classSyn:
		s.flags, s.seq, s.ack = fS, isn, 0
	case classSynAck:
		s.flags, s.seq = fSA, isn
	case classFin:
		s.flags = fFA
	case classAck:
		s.flags = fA
	case classRst:
		s.flags = fRA
	case classNone:
		s.flags = packet.TCPPsh
	}
	return s.packet()
}

// TestTableCellsThroughUpdate drives one real packet through Update for
// every (direction, class, state) cell and checks that the outcome is the
// table's: INVALID for IV, Ignored with the state kept for IG, else the
// new state. Cells where a rule after the lookup applies to this
// connection are spelled out.
func TestTableCellsThroughUpdate(t *testing.T) {
	cfg := DefaultConfig()
	for dir := Original; dir <= Reply; dir++ {
		for class := uint8(0); class < numClasses; class++ {
			for st := TCPNone; st < NumTCPStates; st++ {
				name := []string{"orig", "reply"}[dir] + "/" + classNames[class] + "/" + st.String()
				t.Run(name, func(t *testing.T) {
					c := cellConn(st)
					want := tcpConntracks[dir][class][st]
					// Reopen of TIME_WAIT/CLOSE without CLOSE_INIT
					// or a previous RST: the SYN is ignored.
					if want == TCPSynSent && st >= TCPTimeWait {
						want = sIG
					}
					r := Update(&c, cellPacket(dir, class), dir, 2000, &cfg)
					switch {
					case class == classNone:
						// No flags at all fails the flag check first.
						if r.State != StateInvalid || r.Reason != ReasonTCPFlags {
							t.Fatalf("got %v/%v, want INVALID/tcp-invalid-flags", r.State, r.Reason)
						}
					case want == sIV:
						if r.State != StateInvalid || r.Reason != ReasonTCPState {
							t.Fatalf("got %v/%v, want INVALID/tcp-invalid-state", r.State, r.Reason)
						}
						if c.State != st {
							t.Fatalf("state changed to %v on INVALID", c.State)
						}
					case want == sIG:
						if !r.Ignored || r.State == StateInvalid {
							t.Fatalf("got %+v, want ignored", r)
						}
						if c.State != st {
							t.Fatalf("state %v, want %v kept", c.State, st)
						}
						if c.Expires != 1<<40 {
							t.Fatalf("ignored packet refreshed the timeout")
						}
					default:
						if r.State == StateInvalid || r.Ignored {
							t.Fatalf("got %+v (%v), want accepted", r, r.Reason)
						}
						if c.State != want {
							t.Fatalf("state %v, want %v", c.State, want)
						}
						// A RST before any reply deletes the entry.
						if wantKill := class == classRst && st == TCPSynSent; r.Kill != wantKill {
							t.Fatalf("Kill %v, want %v", r.Kill, wantKill)
						}
					}
				})
			}
		}
	}
}

// TestReopen checks the TIME_WAIT/CLOSE reopen conditions.
func TestReopen(t *testing.T) {
	cfg := DefaultConfig()
	tests := []struct {
		name       string
		st         TCPState
		dir        Dir
		closeInit  Dir
		lastRst    bool
		wantReopen bool
	}{
		{"TW close-init orig", TCPTimeWait, Original, Original, false, true},
		{"TW close-init reply side, reply SYN", TCPTimeWait, Reply, Reply, false, true},
		{"CL after own RST", TCPClose, Original, 2, true, true},
		{"CL no close-init no RST", TCPClose, Original, 2, false, false},
		{"CL reply SYN is invalid", TCPClose, Reply, Original, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cellConn(tt.st)
			if tt.closeInit < 2 {
				c.TCP.Peer[tt.closeInit].Flags |= TCPFlagCloseInit
			}
			if tt.lastRst {
				c.TCP.LastIndex, c.TCP.LastDir = classRst, tt.dir
			}
			r := Update(&c, cellPacket(tt.dir, classSyn), tt.dir, 2000, &cfg)
			if r.Reopen != tt.wantReopen {
				t.Fatalf("Reopen %v, want %v (result %+v)", r.Reopen, tt.wantReopen, r)
			}
		})
	}
}
