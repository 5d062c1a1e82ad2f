package bridge

import (
	"math/bits"

	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// Stats are a pipeline's counters. They are plain integers written by the
// owning worker only; the datapath publishes copies for other goroutines.
type Stats struct {
	Packets [2]uint64 // frames in, by ingress port
	// Parsed counts the frames this pipeline parsed. With several
	// workers a frame is parsed once, by the worker that received it,
	// and judged by the owner of its flow on that parse: the totals of
	// Parsed and Packets over the workers are equal.
	Parsed           uint64
	Accepted         uint64
	Drops            [NumDropReasons]uint64
	States           [numStateIndexes]uint64 // by user-land state (see StateNames)
	Parse            [packet.NumReasons]uint64
	InvalidBy        [statemachine.NumInvalidReasons]uint64
	Invalid          uint64        // kernel "invalid": packets with no usable tuple or rejected by the tracker
	Ignore           uint64        // kernel "ignore": accepted with no state change
	ICMPError        uint64        // kernel "icmp_error": ICMP errors examined
	ExpectNew        uint64        // kernel "expect_new": connections created from an expectation
	ExpectCreate     uint64        // kernel "expect_create": expectations added by helpers
	ExpectFailed     uint64        // expectations a helper found that the table refused (full or clash)
	VerdictCacheHits uint64        // verdicts served from the flow entry without walking the rules
	FragCached       uint64        // later fragments given their first fragment's verdict
	FragUnknown      uint64        // later fragments whose first fragment was not seen
	CsumCompleted    uint64        // accepted frames whose partial checksum (CHECKSUM_PARTIAL) was completed
	Fast             FastPathStats // flows offered to and taken back from the XDP fast path
	Targets          TargetStats   // REJECT answers and LOG lines (reject.go)
}

// state indexes: 0 none (non-IP, malformed), then one per CtState bit.
const numStateIndexes = 6

// StateNames names the entries of Stats.States.
var StateNames = [numStateIndexes]string{"none", "INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED"}

// stateIndex maps a packet's state to its Stats.States index: the states
// are single bits in StateNames order (StateInvalid = 1 ... StateUntracked =
// 16), so the index is the bit's position plus one, and 0 (no state) is 0.
// One instruction instead of a switch: it runs for every packet.
func stateIndex(s statemachine.CtState) int {
	return bits.Len8(uint8(s))
}

// Add adds o's counters to s (for totals over workers).
func (s *Stats) Add(o *Stats) {
	for i := range s.Packets {
		s.Packets[i] += o.Packets[i]
	}
	s.Parsed += o.Parsed
	s.Accepted += o.Accepted
	for i := range s.Drops {
		s.Drops[i] += o.Drops[i]
	}
	for i := range s.States {
		s.States[i] += o.States[i]
	}
	for i := range s.Parse {
		s.Parse[i] += o.Parse[i]
	}
	for i := range s.InvalidBy {
		s.InvalidBy[i] += o.InvalidBy[i]
	}
	s.Invalid += o.Invalid
	s.Ignore += o.Ignore
	s.ICMPError += o.ICMPError
	s.ExpectNew += o.ExpectNew
	s.ExpectCreate += o.ExpectCreate
	s.ExpectFailed += o.ExpectFailed
	s.VerdictCacheHits += o.VerdictCacheHits
	s.FragCached += o.FragCached
	s.FragUnknown += o.FragUnknown
	s.CsumCompleted += o.CsumCompleted
	s.Fast.add(&o.Fast)
	s.Targets.add(&o.Targets)
}

// Dropped returns the total of all drop reasons.
func (s *Stats) Dropped() uint64 {
	var n uint64
	for _, d := range s.Drops {
		n += d
	}
	return n
}
