package flowtable

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/statewire/statewire/packet"
)

// Expect is an expected connection, registered by a helper on its master
// connection (spec §6, §7): the first packet from Src:SrcPort to
// Dst:DstPort (L3, Proto, VLAN exact) creates a RELATED entry.
type Expect struct {
	Dst      packet.Addr
	Src      packet.Addr
	Expires  int64 // ns, absolute
	Master   EntryRef
	DstPort  uint16
	SrcPort  uint16 // 0: any source port
	VLAN     uint16 // zone of the master
	L3       uint8  // 4 or 6
	Proto    uint8
	SrcMask  bool  // true: Src must match; false: any source address
	HelperID uint8 // helper id of the master
	Class    uint8 // helper-defined expectation class

	seq uint64 // creation order, to find the oldest of a master
}

// Errors from Expectations.Add.
var (
	ErrExpectTableFull = errors.New("flowtable: expectation table full")
	ErrExpectClash     = errors.New("flowtable: expectation clashes with another master's")
)

// ExpectStats are the expectation counters of /proc/net/stat/nf_conntrack.
type ExpectStats struct {
	New    uint64 // connections created from a matched expectation
	Create uint64 // expectations added
	Delete uint64 // expectations removed unmatched (timeout, master gone, evicted, replaced)
}

// Expectations is the expectation table shared by all shards. Match and
// Range read an immutable slice through one atomic pointer, so lookups take
// no lock and "no expectations at all" costs one atomic load. Writers (Add,
// the removal in Match, RemoveMaster, Expire) copy the slice under a mutex:
// they are rare (a helper command, a new related flow, a master's death).
// Safe from any goroutine.
type Expectations struct {
	list atomic.Pointer[[]Expect] // nil when empty; the slice is never modified once stored
	mu   sync.Mutex
	max  int
	seq  uint64

	created, matched, deleted atomic.Uint64

	// mirror, with the table in a state file, gets every published list
	// (store.go). Written under mu.
	mirror *expectMirror
}

// NewExpectations returns an empty table holding at most max expectations.
func NewExpectations(max int) *Expectations {
	return &Expectations{max: max}
}

// Len returns the number of expectations.
func (x *Expectations) Len() int {
	if p := x.list.Load(); p != nil {
		return len(*p)
	}
	return 0
}

// Stats returns the expectation counters.
func (x *Expectations) Stats() ExpectStats {
	return ExpectStats{New: x.matched.Load(), Create: x.created.Load(), Delete: x.deleted.Load()}
}

// store publishes l (nil when empty). Caller holds mu.
func (x *Expectations) store(l []Expect) {
	if x.mirror != nil {
		x.mirror.save(l)
	}
	if len(l) == 0 {
		x.list.Store(nil)
		return
	}
	x.list.Store(&l)
}

// current returns the published slice. Caller holds mu or only reads.
func (x *Expectations) current() []Expect {
	if p := x.list.Load(); p != nil {
		return *p
	}
	return nil
}

// sameTuple reports whether a and b expect the same connection.
func sameTuple(a, b *Expect) bool {
	return a.Dst == b.Dst && a.Src == b.Src && a.DstPort == b.DstPort && a.SrcPort == b.SrcPort &&
		a.VLAN == b.VLAN && a.L3 == b.L3 && a.Proto == b.Proto && a.SrcMask == b.SrcMask
}

// Add registers e. An identical expectation of the same master is replaced
// (its timer restarts); one of another master is a clash. When the master
// already has maxPerMaster expectations (0: no limit) its oldest is evicted.
// A full table refuses with ErrExpectTableFull (kernel: -EMFILE).
func (x *Expectations) Add(e Expect, maxPerMaster int) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	cur := x.current()
	next := make([]Expect, 0, len(cur)+1)
	mine, oldest, removed := 0, -1, 0
	for i := range cur {
		o := &cur[i]
		if sameTuple(o, &e) {
			if o.Master != e.Master {
				return ErrExpectClash
			}
			removed++
			continue
		}
		if o.Master == e.Master {
			mine++
			if oldest < 0 || o.seq < next[oldest].seq {
				oldest = len(next)
			}
		}
		next = append(next, *o)
	}
	if maxPerMaster > 0 && mine >= maxPerMaster && oldest >= 0 {
		next = slices.Delete(next, oldest, oldest+1)
		removed++
	}
	if len(next) >= x.max {
		return ErrExpectTableFull
	}
	x.seq++
	e.seq = x.seq
	next = append(next, e)
	x.store(next)
	x.created.Add(1)
	x.deleted.Add(uint64(removed))
	return nil
}

// matches reports whether p is the connection e expects.
func (e *Expect) matches(p *packet.Packet) bool {
	return e.Dst == p.Dst && e.DstPort == p.DstPort && e.Proto == p.Proto && e.L3 == p.IPVersion &&
		e.VLAN == p.VLAN && (!e.SrcMask || e.Src == p.Src) && (e.SrcPort == 0 || e.SrcPort == p.SrcPort)
}

// Match finds an unexpired expectation for p, the first packet of a new
// connection, removes it and returns it. Call it only on the new-flow path.
// Two shards matching the same expectation at once: exactly one gets it.
func (x *Expectations) Match(p *packet.Packet, now int64) (Expect, bool) {
	lp := x.list.Load()
	if lp == nil {
		return Expect{}, false
	}
	for i := range *lp {
		e := &(*lp)[i]
		if e.Expires > now && e.matches(p) && x.take(e.seq) {
			x.matched.Add(1)
			return *e, true
		}
	}
	return Expect{}, false
}

// take removes the expectation with sequence seq; false if another
// goroutine removed it first.
func (x *Expectations) take(seq uint64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	cur := x.current()
	for i := range cur {
		if cur[i].seq == seq {
			x.store(slices.Delete(slices.Clone(cur), i, i+1))
			return true
		}
	}
	return false
}

// removeIf drops every expectation for which drop is true and returns how
// many it dropped. The read pass is lock-free, so when nothing matches no
// lock is taken.
func (x *Expectations) removeIf(drop func(*Expect) bool) int {
	cur := x.current()
	hit := false
	for i := range cur {
		if drop(&cur[i]) {
			hit = true
			break
		}
	}
	if !hit {
		return 0
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	cur = x.current()
	next := make([]Expect, 0, len(cur))
	for i := range cur {
		if !drop(&cur[i]) {
			next = append(next, cur[i])
		}
	}
	n := len(cur) - len(next)
	x.store(next)
	x.deleted.Add(uint64(n))
	return n
}

// RemoveMaster removes every expectation of master m (it died) and
// returns how many. Shard deletion calls it for entries with a helper.
func (x *Expectations) RemoveMaster(m EntryRef) int {
	return x.removeIf(func(e *Expect) bool { return e.Master == m })
}

// Expire removes the expectations whose timeout passed at now and returns
// how many. Any worker may call it once per batch: with nothing to expire
// it takes no lock.
func (x *Expectations) Expire(now int64) int {
	if x.list.Load() == nil {
		return 0
	}
	return x.removeIf(func(e *Expect) bool { return e.Expires <= now })
}

// Range calls fn with each expectation until it returns false, over a
// consistent snapshot of the table.
func (x *Expectations) Range(fn func(Expect) bool) {
	for _, e := range x.current() {
		if !fn(e) {
			return
		}
	}
}
