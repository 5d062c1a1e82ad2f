// Package replay runs captured frames through the conntrack pipeline, the
// way `statewire replay` and the conformance harness do: one flow-table
// shard, the capture's timestamps as the clock (or none), and each frame's
// ingress port found by learning source MAC addresses.
//
// A Replayer is used by one goroutine.
package replay

import (
	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
)

// Options configure a replay.
type Options struct {
	// Settings are the pipeline's knobs (nil: bridge.DefaultSettings with
	// checksum verification off, since captures from offloading NICs carry
	// bad checksums).
	Settings *bridge.Settings
	// Table sizes the flow table (one shard). Zero: 65536 entries.
	Table flowtable.Config
	// NoTimestamps replays every packet at the same instant, so no timeout
	// expires (the method of the kernel-states fixtures).
	NoTimestamps bool
}

// Packet is the outcome of one replayed frame.
type Packet struct {
	Num    int         // 1-based position in the capture
	Port   bridge.Port // ingress port (MAC learning)
	Now    int64       // the clock the pipeline saw, ns
	Result bridge.Result
}

// Replayer holds the pipeline and its table across frames.
type Replayer struct {
	Pipeline *bridge.Pipeline
	Table    *flowtable.Table
	Control  *bridge.Control

	opts    Options
	macs    map[[6]byte]bridge.Port
	first   int64
	last    int64
	started bool
	n       int
}

// epoch is the pipeline clock at the first packet: far enough from zero
// that "created at 0" never looks special.
const epoch = int64(1_000_000_000_000)

// New returns a Replayer with a fresh table.
func New(opts Options) (*Replayer, error) {
	if opts.Settings == nil {
		s := bridge.DefaultSettings()
		s.VerifyChecksum = false
		opts.Settings = s
	}
	cfg := opts.Table
	cfg.Shards = 1
	if cfg.MaxEntries == 0 && cfg.Buckets == 0 {
		cfg.Buckets, cfg.MaxEntries = 16384, 65536
	}
	if cfg.Seed == 0 {
		cfg.Seed = 0x5eed
	}
	t, err := flowtable.New(cfg)
	if err != nil {
		return nil, err
	}
	ctl := bridge.NewControl(opts.Settings)
	return &Replayer{
		Pipeline: bridge.NewPipeline(t, 0, ctl, bridge.NewFragCache(1024, 1)),
		Table:    t,
		Control:  ctl,
		opts:     opts,
		macs:     make(map[[6]byte]bridge.Port),
	}, nil
}

// Now returns the pipeline clock after the last frame.
func (r *Replayer) Now() int64 { return epoch + r.last - r.first }

// Port returns the ingress port of a frame by MAC learning: a known source
// MAC keeps its side; an unknown one sits opposite its destination when
// that is known, else on port A.
func (r *Replayer) Port(frame []byte) bridge.Port {
	if len(frame) < 12 {
		return bridge.PortA
	}
	var dst, src [6]byte
	copy(dst[:], frame[0:6])
	copy(src[:], frame[6:12])
	if p, ok := r.macs[src]; ok {
		return p
	}
	p := bridge.PortA
	if d, ok := r.macs[dst]; ok && dst != src {
		p = d.Other()
	}
	r.macs[src] = p
	return p
}

// Step runs one frame.
func (r *Replayer) Step(f Frame) Packet {
	r.n++
	if !r.started {
		r.first, r.last, r.started = f.Time, f.Time, true
	}
	if !r.opts.NoTimestamps && f.Time > r.last {
		r.last = f.Time // a clock never runs backwards
	}
	now := r.Now()
	port := r.Port(f.Data)
	res := r.Pipeline.Process(f.Data, f.WireLen, port, now)
	return Packet{Num: r.n, Port: port, Now: now, Result: res}
}

// Entries returns snapshots of the table's live entries.
func (r *Replayer) Entries() []flowtable.EntrySnapshot { return r.EntriesAt(r.Now()) }

// EntriesAt returns snapshots of the entries live at time now, each with
// its count of live children (the use= of a helper's master, as the
// kernel counts it).
func (r *Replayer) EntriesAt(now int64) []flowtable.EntrySnapshot {
	var out []flowtable.EntrySnapshot
	sh := r.Pipeline.Shard()
	children := r.Table.ChildCounts()
	sh.Range(func(e *flowtable.Entry) bool {
		if e.Conn.Expires > now {
			out = append(out, flowtable.EntrySnapshot{Orig: e.Tuple(), Conn: e.Conn, Helper: e.Helper, Children: children[sh.Ref(e)]})
		}
		return true
	})
	return out
}
