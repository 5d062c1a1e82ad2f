package flowtable

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/statewire/statewire/statemachine"
	"golang.org/x/sys/unix"
)

// The state file: the table in a file mapped MAP_SHARED (on tmpfs, e.g.
// /run/statewire/NAME.table), so that the connections, the expectations and
// the callers' per-slot state (Config.AuxSize: the helpers' state) outlive
// the process that serves them, a kill -9 included: every store the
// datapath makes is in the page cache the moment it is made, and nothing is
// written at exit that a crash would miss.
//
// What is in the file: a header (magic, format version, the layout
// fingerprint, the geometry, the hash seed, the boot id and clock base), each
// shard's counters, the entry slots, the aux slots, and two expectation
// buffers. What is not: bucket chains and free lists. A process killed in the
// middle of an insert or a removal leaves them half-linked, so the next one
// rebuilds them from the slots' used flags (Entry.flags) and keeps the slots
// themselves, and with them their generations: an expectation's master
// (EntryRef) and the aux slot of an entry still name the same connection.
//
// The hot path is unchanged: the shard's entries are the same slice type,
// over the mapping instead of the heap.

const (
	fileMagic   = "SWTABLE\x00"
	fileVersion = 1
)

// Persist says where Open keeps a table so the next process can adopt it.
type Persist struct {
	// Path is the state file. Its directory is made if missing.
	Path string
	// Now is the caller's clock at the call, in the time base of every
	// Expires (the datapath's): entries and expectations whose timeout
	// passed while no process served the table are dropped. The clock must
	// run across processes (CLOCK_MONOTONIC based) for timeouts to keep
	// running over the gap.
	Now int64
	// ClockBase is the caller's clock minus CLOCK_MONOTONIC. A file
	// written under another base holds times of another clock: refused.
	ClockBase int64
}

// Adoption says what Open did with an existing state file.
type Adoption struct {
	Path    string
	Adopted bool // the file's table was adopted
	Clean   bool // the previous process stopped gracefully (else it died)
	// Connections and Expectations are what was adopted; Offloaded the
	// adopted connections marked offered to the XDP fast path.
	Connections, Expectations, Offloaded int
	// ExpiredInGap and ExpectExpired are the connections and expectations
	// whose timeout ran out between the previous process and this one.
	ExpiredInGap, ExpectExpired int
	// ExpectOrphaned are expectations whose master connection is gone.
	ExpectOrphaned int
	// Gap is the time since the previous process's graceful stop (0 when
	// it died: unknown).
	Gap time.Duration
	// Refused says why an existing file was not adopted ("" if none was
	// refused); a fresh table was started in its place.
	Refused string
	// NotTmpfs is set when the file is not on tmpfs: the kernel then
	// writes the table's dirty pages back to disk every few seconds.
	NotTmpfs bool
	// Migrated says why the file's table was not adopted as it lay (its
	// geometry differs from this process's) and its live connections
	// and expectations were re-inserted into a fresh table instead;
	// Lost counts the connections that did not fit.
	Migrated string
	Lost     int
}

// String is the log line of the adoption.
func (a *Adoption) String() string {
	switch {
	case a.Adopted && a.Migrated != "":
		return fmt.Sprintf("adopted %d connections, %d expectations from %s (re-inserted into this process's table: %s; %d connections did not fit, %d connections and %d expectations expired in the gap, %d expectations without master)",
			a.Connections, a.Expectations, a.Path, a.Migrated, a.Lost, a.ExpiredInGap, a.ExpectExpired, a.ExpectOrphaned)
	case a.Adopted:
		how := "after a graceful stop " + a.Gap.Round(time.Millisecond).String() + " ago"
		if !a.Clean {
			how = "after the previous process died (crash or kill -9)"
		}
		return fmt.Sprintf("adopted %d connections, %d expectations from %s (%s; %d connections and %d expectations expired in the gap, %d expectations without master)",
			a.Connections, a.Expectations, a.Path, how, a.ExpiredInGap, a.ExpectExpired, a.ExpectOrphaned)
	case a.Refused != "":
		return fmt.Sprintf("state file %s refused: %s; started a fresh table in its place (the old connections are forgotten)", a.Path, a.Refused)
	}
	return fmt.Sprintf("state file %s: started a fresh table", a.Path)
}

// geometry is what fixes a table's layout beyond the types' sizes.
type geometry struct {
	Shards, PerShard, Buckets, MaxExpect, AuxSize uint32
	// VLANMask is Config.VLANMask: the keys of a table with zones and of
	// one without differ, so neither can adopt the other's.
	VLANMask uint32
}

// store is a table's state file, while mapped.
type store struct {
	m   *mapping
	h   *fileHeader
	l   layout
	mir *expectMirror
}

// expectMirror keeps the expectations in the state file: two buffers, of
// which the header's ExpSel names the current one. Written under the
// Expectations' mutex, on every change (they are rare: a helper command, a
// related flow, a master's death).
type expectMirror struct {
	h   *fileHeader
	buf [2][]Expect
}

// save makes l the file's expectations: the other buffer is filled first,
// its count set, then ExpSel flipped, so a process killed at any point
// leaves one whole buffer current.
func (m *expectMirror) save(l []Expect) {
	next := 1 - m.h.ExpSel.Load()&1
	n := copy(m.buf[next], l)
	m.h.ExpN[next].Store(uint32(n))
	m.h.ExpSel.Store(next)
}

// load returns the current buffer's expectations (a view into the file).
func (m *expectMirror) load() []Expect {
	sel := m.h.ExpSel.Load() & 1
	n := min(int(m.h.ExpN[sel].Load()), len(m.buf[sel]))
	return m.buf[sel][:n]
}

// ErrStateFileBusy is wrapped by Open when another process holds the file.
var ErrStateFileBusy = errors.New("flowtable: state file in use")

// Open is New with the table kept in the state file p.Path: when the file
// holds a table of the same layout and geometry from this boot, Open adopts
// it (its connections whose timeout has not passed at p.Now, its
// expectations whose master lives, its counters and hash seed) and reports
// what it adopted. A file of this build from this boot whose size or shard
// count differs is re-inserted into a fresh table of the new geometry
// (Adoption.Migrated; what does not fit is lost, non-ASSURED first). A
// file from another format version, layout, --vlan-zones or an earlier
// boot is refused, the reason reported in Adoption.Refused, and a fresh
// table replaces it. The file stays locked
// (flock) while the table is open: a second process opening it fails with
// ErrStateFileBusy. Close marks it cleanly stopped.
//
// Adopted entries keep their Offloaded mark: call ResumeOffloaded once the
// caller knows whether the fast path's map survived too.
func Open(cfg Config, p Persist) (*Table, Adoption, error) {
	a := Adoption{Path: p.Path}
	c, g, err := cfg.resolve()
	if err != nil {
		return nil, a, err
	}
	if err := os.MkdirAll(filepath.Dir(p.Path), 0o755); err != nil {
		return nil, a, fmt.Errorf("flowtable: state file directory: %w (use --state-file none to keep the table in memory only)", err)
	}
	f, err := os.OpenFile(p.Path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, a, fmt.Errorf("flowtable: state file: %w (use --state-file none to keep the table in memory only)", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, a, fmt.Errorf("%w: %s is held by another statewire process serving the same --name: stop it first, or give this one another --name or --state-file", ErrStateFileBusy, p.Path)
		}
		return nil, a, fmt.Errorf("flowtable: lock state file %s: %w", p.Path, err)
	}
	want := newHeader(&g, c.Seed, p.ClockBase)
	l := fileLayout(&g)
	st, err := f.Stat()
	if err != nil {
		return nil, a, fmt.Errorf("flowtable: state file: %w", err)
	}
	var mig *savedTable
	if st.Size() > 0 {
		var first [headerSize]byte
		n, _ := f.ReadAt(first[:], 0)
		old, _ := readHeader(first[:n])
		a.Refused = old.mismatch(want, st.Size(), int64(l.size))
		if a.Refused != "" && old.layoutMismatch(want) == "" && st.Size() == int64(fileLayout(old.geometry()).size) {
			// Same build, same clock, another size or shard count:
			// keep what it holds and re-insert it below.
			if mig, err = readForMigration(f, old); err == nil {
				a.Migrated, a.Refused = a.Refused, ""
			}
		}
		if a.Refused == "" {
			a.Adopted, a.Clean = true, old.Clean.Load() == 1
			c.Seed = old.Seed
			if a.Clean {
				a.Gap = time.Duration(max(0, p.Now-old.Saved.Load()))
			}
		}
	}
	adoptInPlace := a.Adopted && mig == nil
	if !adoptInPlace {
		if err := resetFile(f, l.size); err != nil {
			return nil, a, err
		}
	}
	var fs unix.Statfs_t
	if unix.Fstatfs(int(f.Fd()), &fs) == nil && fs.Type != unix.TMPFS_MAGIC {
		a.NotTmpfs = true
	}
	m, err := mapFile(f, l.size)
	if err != nil {
		return nil, a, fmt.Errorf("flowtable: state file: %w", err)
	}
	s := &store{m: m, h: m.header(), l: l}
	if !adoptInPlace {
		want.Seed = c.Seed
		m.writeHeader(want)
	}
	s.h.Clean.Store(0)
	s.h.Pid = int32(os.Getpid())
	s.mir = &expectMirror{h: s.h, buf: m.expectBufs(&l, int(g.MaxExpect))}
	t := makeTable(c, g, s)
	if adoptInPlace {
		t.adopt(p.Now, &a)
	} else {
		t.Expect.mirror = s.mir
		s.mir.save(nil)
		if mig != nil {
			t.migrate(mig, p.Now, &a)
		}
	}
	if c.Prefault {
		for _, sh := range t.shards {
			prefault(sh)
		}
	}
	ok = true
	return t, a, nil
}

// resetFile empties f and gives it size bytes of zeros, reserved (on tmpfs
// a page written beyond the free space would kill the process with SIGBUS;
// fallocate fails here instead).
func resetFile(f *os.File, size int) error {
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("flowtable: state file: %w", err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		return fmt.Errorf("flowtable: state file: %w", err)
	}
	err := unix.Fallocate(int(f.Fd()), 0, 0, int64(size))
	switch {
	case err == nil, errors.Is(err, unix.EOPNOTSUPP):
		return nil
	case errors.Is(err, unix.ENOSPC):
		f.Truncate(0)
		return fmt.Errorf("flowtable: state file %s needs %d MiB and its file system is full: make room (for tmpfs /run: mount -o remount,size=... /run), lower --max-flows, or run with --state-file none",
			f.Name(), (size+1<<20-1)>>20)
	}
	return fmt.Errorf("flowtable: state file %s: reserve %d bytes: %w", f.Name(), size, err)
}

// newHeader is the header a file of geometry g written by this build has.
func newHeader(g *geometry, seed uint64, clockBase int64) *fileHeader {
	h := &fileHeader{Version: fileVersion, Seed: seed, ClockBase: clockBase, BootID: bootID()}
	copy(h.Magic[:], fileMagic)
	h.EntrySize, h.KeySize, h.ConnSize, h.ExpectSize = layoutSizes()
	h.AuxSize = g.AuxSize
	h.Shards, h.PerShard, h.Buckets, h.MaxExpect = g.Shards, g.PerShard, g.Buckets, g.MaxExpect
	h.VLANMask = g.VLANMask
	return h
}

// mismatch says why a file whose header is h, size bytes long, cannot be
// adopted by a process that would write want into a file of wantSize
// bytes; "" when it can. h may hold anything.
func (h *fileHeader) mismatch(want *fileHeader, size, wantSize int64) string {
	if why := h.layoutMismatch(want); why != "" {
		return why
	}
	switch {
	case h.Shards != want.Shards:
		return fmt.Sprintf("it has %d shards (--cores %d), this process %d", h.Shards, h.Shards, want.Shards)
	case h.PerShard != want.PerShard || h.Buckets != want.Buckets || h.MaxExpect != want.MaxExpect:
		return fmt.Sprintf("sized for %d entries, %d buckets and %d expectations per shard, this process for %d, %d and %d (--max-flows, --hashsize or --cores changed, or the RAM the defaults follow)",
			h.PerShard, h.Buckets, h.MaxExpect, want.PerShard, want.Buckets, want.MaxExpect)
	case size != wantSize:
		return fmt.Sprintf("the file is %d bytes, its header needs %d (truncated or extended)", size, wantSize)
	}
	return ""
}

// layoutMismatch is mismatch for everything but the geometry: what makes
// the file's entries unreadable or their times and keys meaningless here,
// so that not even a re-insertion can use them.
func (h *fileHeader) layoutMismatch(want *fileHeader) string {
	switch {
	case string(h.Magic[:]) != fileMagic:
		return "not a statewire table (no magic: another file, or a table whose creation was interrupted)"
	case h.Version != want.Version:
		return fmt.Sprintf("format version %d, this statewire reads version %d", h.Version, want.Version)
	case h.EntrySize != want.EntrySize || h.KeySize != want.KeySize || h.ConnSize != want.ConnSize ||
		h.ExpectSize != want.ExpectSize || h.AuxSize != want.AuxSize:
		return fmt.Sprintf("written by a statewire with another entry layout (entry/key/conn/expectation/helper slot %d/%d/%d/%d/%d bytes, this one %d/%d/%d/%d/%d)",
			h.EntrySize, h.KeySize, h.ConnSize, h.ExpectSize, h.AuxSize,
			want.EntrySize, want.KeySize, want.ConnSize, want.ExpectSize, want.AuxSize)
	case h.VLANMask != want.VLANMask:
		return fmt.Sprintf("its keys were made with --vlan-zones=%t, this process runs with --vlan-zones=%t", h.VLANMask != 0, want.VLANMask != 0)
	case h.BootID != want.BootID:
		return "written before the last reboot (its timestamps belong to that boot's clock)"
	case h.ClockBase != want.ClockBase:
		return fmt.Sprintf("its clock base is %d ns, this process's %d ns", h.ClockBase, want.ClockBase)
	case h.Seed == 0:
		return "no hash seed"
	case h.Shards == 0 || h.Shards > 1<<16 || h.PerShard == 0 || h.PerShard > maxShardEntries ||
		h.Buckets == 0 || h.Buckets > 1<<31 || h.MaxExpect > 1<<24:
		return fmt.Sprintf("impossible geometry (%d shards of %d entries, %d buckets, %d expectations)", h.Shards, h.PerShard, h.Buckets, h.MaxExpect)
	}
	return ""
}

// geometry is the geometry h records.
func (h *fileHeader) geometry() *geometry {
	return &geometry{Shards: h.Shards, PerShard: h.PerShard, Buckets: h.Buckets,
		MaxExpect: h.MaxExpect, AuxSize: h.AuxSize, VLANMask: h.VLANMask}
}

// savedTable is what a file of another geometry held: its used slots (with
// their refs and aux bytes) and its current expectations, copied out before
// the file is made anew.
type savedTable struct {
	entries []savedEntry
	expects []Expect
}

type savedEntry struct {
	e   Entry
	ref EntryRef
	aux []byte
}

// readForMigration copies the used slots and expectations out of f, whose
// header h has this build's layout and a geometry that matches the file's
// size.
func readForMigration(f *os.File, h *fileHeader) (*savedTable, error) {
	g := h.geometry()
	l := fileLayout(g)
	m, err := mapFile(f, l.size)
	if err != nil {
		return nil, err
	}
	defer m.unmap()
	per, aux := int(g.PerShard), int(g.AuxSize)
	all := m.entries(&l, int(g.Shards)*per)
	auxes := m.aux(&l)
	sv := &savedTable{}
	for i := range all {
		if all[i].flags&flagUsed == 0 {
			continue
		}
		se := savedEntry{e: all[i], ref: EntryRef{Shard: uint16(i / per), Index: uint32(i % per), Gen: all[i].gen}}
		se.aux = append([]byte(nil), auxes[i*aux:(i+1)*aux]...)
		sv.entries = append(sv.entries, se)
	}
	mir := &expectMirror{h: m.header(), buf: m.expectBufs(&l, int(g.MaxExpect))}
	sv.expects = append([]Expect(nil), mir.load()...)
	return sv, nil
}

// migrate re-inserts a saved table into t, a fresh table with the same hash
// seed: each live connection goes to the shard and bucket its key has
// here, keeping its contents, generation and aux bytes (whose helper state
// names the generation); the expectations follow their masters. Before any
// worker runs.
func (t *Table) migrate(sv *savedTable, now int64, a *Adoption) {
	refs := make(map[EntryRef]EntryRef, len(sv.entries))
	aux := t.cfg.AuxSize
	for i := range sv.entries {
		se := &sv.entries[i]
		e := &se.e
		if e.Conn.Proto != e.key.Proto || (e.Conn.Expires <= now && e.flags&flagOffloaded == 0) {
			a.ExpiredInGap++
			continue
		}
		h := t.HashKey(&e.key)
		sh := t.shards[t.ShardFor(h)]
		ne, res := sh.Insert(&e.key, h, nil, now)
		if res == TableFull || res == InsertExists {
			continue // counted in Lost below
		}
		next := ne.next
		*ne = *e
		ne.next = next
		ne.forgetVerdicts()
		r := sh.Ref(ne)
		copy(sh.aux[int(r.Index)*aux:(int(r.Index)+1)*aux], se.aux)
		refs[se.ref] = r
	}
	// Early drop may have evicted some of the re-inserted: count what is
	// there at the end.
	for _, sh := range t.shards {
		a.Connections += sh.count
		for i := uint32(0); i < sh.hwm; i++ {
			if f := sh.entries[i].flags; f&flagUsed != 0 && f&flagOffloaded != 0 {
				a.Offloaded++
			}
		}
	}
	a.Lost = len(sv.entries) - a.ExpiredInGap - a.Connections
	keep := make([]Expect, 0, len(sv.expects))
	var seq uint64
	for _, x := range sv.expects {
		m, ok := refs[x.Master]
		switch {
		case x.Expires <= now:
			a.ExpectExpired++
		case !ok || t.shards[m.Shard].Resolve(m) == nil || len(keep) >= t.cfg.MaxExpect:
			a.ExpectOrphaned++
		default:
			x.Master = m
			keep = append(keep, x)
			seq = max(seq, x.seq)
		}
	}
	a.Expectations = len(keep)
	x := t.Expect
	x.mu.Lock()
	x.seq = seq
	x.store(keep)
	x.mu.Unlock()
}

// bootID returns the kernel's boot id (zero when unreadable).
func bootID() [16]byte {
	var id [16]byte
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return id
	}
	hex.Decode(id[:], bytes.ReplaceAll(bytes.TrimSpace(b), []byte("-"), nil))
	return id
}

// adopt rebuilds every shard from its slots and the expectations from the
// file's current buffer. Before any worker runs.
func (t *Table) adopt(now int64, a *Adoption) {
	s := t.store
	metas := s.m.metas(&s.l, len(t.shards))
	for i, sh := range t.shards {
		sh.stats = metas[i].Stats
		sh.adopt(now, a)
	}
	saved := s.mir.load()
	keep := make([]Expect, 0, len(saved))
	var seq uint64
	for _, e := range saved {
		switch {
		case e.Expires <= now:
			a.ExpectExpired++
		case int(e.Master.Shard) >= len(t.shards) || t.shards[e.Master.Shard].Resolve(e.Master) == nil:
			a.ExpectOrphaned++
		default:
			keep = append(keep, e)
			seq = max(seq, e.seq)
		}
	}
	a.Expectations = len(keep)
	x := t.Expect
	x.mu.Lock()
	x.mirror = s.mir
	x.seq = seq
	x.store(keep)
	x.mu.Unlock()
}

// adopt rebuilds the shard's chains, free list, count and high-water mark
// from its slots: a slot is live when its used flag is set. The persisted
// chains are not trusted (a kill -9 can leave one half-linked); the slots
// are, since each is written whole before it is linked. Live entries whose
// timeout passed at now are freed, except offloaded ones, whose live expiry
// was the fast path's (ResumeOffloaded decides).
func (sh *Shard) adopt(now int64, a *Adoption) {
	hwm := 0
	for i := len(sh.entries) - 1; i >= 0; i-- {
		if e := &sh.entries[i]; e.gen != 0 || e.flags != 0 {
			hwm = i + 1
			break
		}
	}
	sh.hwm, sh.free, sh.count, sh.cursor = uint32(hwm), 0, 0, 0
	clear(sh.buckets)
	// Backwards, so that the free list hands out the lowest slots first.
	for i := hwm - 1; i >= 0; i-- {
		e := &sh.entries[i]
		if e.flags&flagUsed != 0 {
			// Insert sets Conn.Proto after the slot and the caller sets
			// Expires after Insert: a slot caught half-way by a kill -9
			// fails one of the two and is freed.
			if e.Conn.Proto == e.key.Proto && (e.Conn.Expires > now || e.flags&flagOffloaded != 0) {
				e.forgetVerdicts()
				b := uint32(hashKey(sh.seed, &e.key)) & sh.mask
				e.next = sh.buckets[b]
				sh.buckets[b] = uint32(i) + 1
				sh.count++
				a.Connections++
				if e.flags&flagOffloaded != 0 {
					a.Offloaded++
				}
				continue
			}
			e.flags = 0
			sh.stats.Expired++
			sh.stats.Delete++
			a.ExpiredInGap++
		}
		e.next = sh.free
		sh.free = uint32(i) + 1
	}
}

// forgetVerdicts drops the verdicts an adopted entry cached: they are keyed
// by rule-set generations of the earlier process (rules.RuleSet.Generation
// counts per process, from 1), which this process hands out again for its
// own, possibly different, rules; a cache hit would apply the old rules.
// Each direction's next packet walks this process's rules once.
func (e *Entry) forgetVerdicts() {
	e.VerdictGen, e.Verdict = 0, [2]uint8{}
}

// ResumeOffloaded settles the entries an adopted table marks offloaded
// (offered to the XDP fast path) when the fast path's map did not survive
// the gap with them (adopted false; adopted true changes nothing: the map
// holds their live state): each is taken back as Entry.ResumeOffloaded
// says. It returns how many entries it took back. Before any worker runs.
// A datapath that adopted the map too settles each entry on its own
// (bridge, adoptFastPath).
func (t *Table) ResumeOffloaded(adopted bool, now, grace int64) int {
	if adopted {
		return 0
	}
	n := 0
	for _, sh := range t.shards {
		for i := uint32(0); i < sh.hwm; i++ {
			e := &sh.entries[i]
			if e.flags&flagUsed == 0 || e.flags&flagOffloaded == 0 {
				continue
			}
			e.ResumeOffloaded(now, grace)
			n++
		}
	}
	return n
}

// ResumeOffloaded takes back e, an adopted entry marked offloaded whose
// flow the fast path no longer holds, as the fast path last left it to
// userspace: the mark is cleared; TCP window tracking restarts from the
// next segment of each direction, liberally (the fast path moved the
// windows on, so the stored edges are behind: this is how the kernel
// resumes a connection it picks up mid-stream, SACK assumed and both
// directions BE_LIBERAL), and an Expires that has passed is moved to
// now+grace, so a flow the fast path kept alive lives on with its next
// packet and a dead one expires soon. Owner only, or before any owner runs.
func (e *Entry) ResumeOffloaded(now, grace int64) {
	e.flags &^= flagOffloaded
	for d := range e.Conn.TCP.Peer {
		p := &e.Conn.TCP.Peer[d]
		p.End, p.MaxEnd, p.MaxWin, p.MaxAck = 0, 0, 0, 0
		// As the kernel's mid-stream pickup: the history is lost, so
		// track liberally. Without it a cumulative ACK for data the
		// receiver got before the restart, beyond the first
		// retransmitted segment, fails check III and the connection
		// stalls (seen in e2e).
		p.Flags |= statemachine.TCPFlagSACKPerm | statemachine.TCPFlagBeLiberal
	}
	if e.Conn.Expires <= now {
		e.Conn.Expires = now + grace
	}
}

// Discard closes the table and removes its state file: for a process that
// made a fresh file and then failed to start, so that nothing is left
// behind. Only after every owner stopped, or before any started.
func (t *Table) Discard() error {
	s := t.store
	if s == nil {
		return nil
	}
	path := s.m.f.Name()
	err := t.Close(0)
	return errors.Join(err, os.Remove(path))
}

// Persistent reports whether the table lives in a state file (Open).
func (t *Table) Persistent() bool { return t.store != nil }

// Close marks the state file cleanly stopped at now (the clock of Persist)
// and unmaps it; the next Open adopts it. Only after every owner stopped:
// the table is unusable afterwards. A table made by New has nothing to
// close.
func (t *Table) Close(now int64) error {
	s := t.store
	if s == nil {
		return nil
	}
	metas := s.m.metas(&s.l, len(t.shards))
	for i, sh := range t.shards {
		metas[i].Stats = sh.Stats()
		sh.entries, sh.aux, sh.meta = nil, nil, nil
	}
	t.Expect.mu.Lock()
	t.Expect.mirror = nil
	t.Expect.mu.Unlock()
	s.h.Saved.Store(now)
	s.h.Clean.Store(1)
	t.store = nil
	err := s.m.unmap()
	return errors.Join(err, s.m.f.Close())
}
