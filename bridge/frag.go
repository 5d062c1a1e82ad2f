package bridge

import (
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// The kernel reassembles before conntrack; statewire does not. Instead the
// first fragment of a datagram (the one with the L4 header) is tracked and
// judged, and the verdict is remembered here so that the later fragments of
// the same datagram (same addresses, protocol and IP ID) get it too. A later
// fragment whose first fragment was not seen (or was forgotten) is INVALID
// and the rules decide. See CONFORMANCE.md.

// Fragment memory lifetimes, as the kernel's reassembly timeouts
// (net.ipv4.ipfrag_time, net.ipv6.ip6frag_time).
const (
	fragTimeoutV4 = 30e9
	fragTimeoutV6 = 60e9
)

type fragKey struct {
	src, dst packet.Addr
	id       uint32
	vlan     uint16
	proto    uint8
	l3       uint8
}

type fragSlot struct {
	key     fragKey
	expires int64
	res     Result
	used    bool
}

// FragCache remembers the verdicts of first fragments. It is a fixed-size,
// direct-mapped table (a newer datagram overwrites an older one in its slot,
// counted as an eviction), shared by all workers of a bridge and safe for
// concurrent use: fragments are rare, so a mutex is cheaper than
// cleverness.
type FragCache struct {
	mu        sync.Mutex
	slots     []fragSlot
	mask      uint64
	seed      uint64
	Evictions uint64 // guarded by mu
}

// NewFragCache returns a cache of size slots (rounded up to a power of two).
func NewFragCache(size int, seed uint64) *FragCache {
	n := 1
	for n < size {
		n <<= 1
	}
	return &FragCache{slots: make([]fragSlot, n), mask: uint64(n - 1), seed: seed}
}

func keyOfFragment(p *packet.Packet) fragKey {
	return fragKey{src: p.Src, dst: p.Dst, id: p.FragID, vlan: p.VLAN, proto: p.Proto, l3: p.IPVersion}
}

func (c *FragCache) slot(k *fragKey) *fragSlot {
	var b [16 + 16 + 4 + 2 + 2]byte
	copy(b[0:], k.src[:])
	copy(b[16:], k.dst[:])
	b[32], b[33], b[34], b[35] = byte(k.id>>24), byte(k.id>>16), byte(k.id>>8), byte(k.id)
	b[36], b[37] = byte(k.vlan>>8), byte(k.vlan)
	b[38], b[39] = k.proto, k.l3
	h := xxhash.Sum64(b[:]) ^ c.seed
	return &c.slots[h&c.mask]
}

// store remembers r for the datagram p is the first fragment of.
func (c *FragCache) store(p *packet.Packet, now int64, r *Result) {
	k := keyOfFragment(p)
	timeout := int64(fragTimeoutV4)
	if p.IPVersion == 6 {
		timeout = fragTimeoutV6
	}
	c.mu.Lock()
	s := c.slot(&k)
	if s.used && s.key != k && s.expires > now {
		c.Evictions++
	}
	*s = fragSlot{key: k, expires: now + timeout, res: *r, used: true}
	c.mu.Unlock()
}

// lookup returns the remembered result for a later fragment of p's datagram.
func (c *FragCache) lookup(p *packet.Packet, now int64) (Result, bool) {
	k := keyOfFragment(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.slot(&k)
	if !s.used || s.key != k || s.expires <= now {
		return Result{}, false
	}
	return s.res, true
}

// laterFragment judges a non-first fragment by its datagram's first one.
func (pl *Pipeline) laterFragment(s *Settings, p *packet.Packet, in Port, now int64, r Result) Result {
	if pl.frags != nil {
		if first, ok := pl.frags.lookup(p, now); ok {
			pl.stats.FragCached++
			first.Parse = r.Parse
			return first
		}
	}
	pl.stats.FragUnknown++
	r.State = statemachine.StateInvalid
	pl.stats.Invalid++
	pl.filter(s, p, in, &r)
	return r
}

// noteFirstFragment remembers the result of a first fragment.
func (pl *Pipeline) noteFirstFragment(p *packet.Packet, now int64, r *Result) {
	if pl.frags != nil && p.Fragment && p.FragOffset == 0 && p.MoreFrags {
		pl.frags.store(p, now, r)
	}
}
