package offload

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
)

// BPFFS is where bpffs is mounted, as ip and tc expect it.
const BPFFS = "/sys/fs/bpf"

// PinRoot holds one directory of pins per bridge name (PinDir).
const PinRoot = BPFFS + "/statewire"

// Pin file names inside a bridge's directory. The links keep the programs
// attached after the process is gone; the maps let the next start adopt
// the flow map, the counters and the XSKMAPs.
var (
	linkPins   = [2]string{"link_a", "link_b"}
	xsksPins   = [2]string{"xsks_a", "xsks_b"}
	sharedPins = []string{"flows", "revoked", "ports_devmap", "stats", "bss", "fail_cfg", "fail_open_stats"}
)

// sharedMapOf returns the collection's name of a shared map's pin file.
func sharedMapOf(pin string) string {
	if pin == "bss" {
		return ".bss"
	}
	return pin
}

// PinDir returns the bpffs directory of the bridge called name, or an
// error when the name cannot be a directory name.
func PinDir(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("bridge name %q cannot name a bpffs directory (no '/', not empty): choose another --name", name)
	}
	return filepath.Join(PinRoot, name), nil
}

// EnsureBPFFS mounts bpffs at BPFFS when it is not mounted there (as ip
// and tc do) and reports whether it did.
func EnsureBPFFS() (mounted bool, err error) {
	if bpffsMounted() {
		return false, nil
	}
	if privateMountNS() {
		// ip netns exec unshares the mount namespace and mounts a new
		// sysfs on /sys: a bpffs mounted here would die with this
		// process, and the pins with it.
		return false, fmt.Errorf("%s is not bpffs in this mount namespace, which is not the host's (ip netns exec makes such a one, with a fresh /sys): "+
			"pins made here would vanish with the process. Start statewire in the host's mount namespace, e.g. "+
			"nsenter --net=/run/netns/NS statewire ... instead of ip netns exec NS statewire ...", BPFFS)
	}
	if err := os.MkdirAll(BPFFS, 0o755); err != nil {
		return false, fmt.Errorf("create %s for bpffs: %w", BPFFS, err)
	}
	if err := unix.Mount("bpf", BPFFS, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount bpffs at %s (needed to keep the XDP program after exit; mount -t bpf bpf %s): %w", BPFFS, BPFFS, err)
	}
	return true, nil
}

// privateMountNS reports whether this process's mount namespace differs
// from init's (false when it cannot tell).
func privateMountNS() bool {
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	init, err2 := os.Readlink("/proc/1/ns/mnt")
	return err1 == nil && err2 == nil && self != init
}

// bpffsMounted reports whether bpffs is mounted at BPFFS.
func bpffsMounted() bool {
	var st unix.Statfs_t
	return unix.Statfs(BPFFS, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// errPinsBusy says that a live process holds a bridge's pin directory.
var errPinsBusy = errors.New("held by another running statewire")

// lockDir takes an exclusive flock on dir (created when create is set and
// it is missing) and returns the descriptor, -1 when dir does not exist.
// A lock held by a live process fails with errPinsBusy; the kernel
// releases it when that process exits, however it exits.
func lockDir(dir string, create bool) (int, error) {
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return -1, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return -1, nil
	}
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", dir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return -1, fmt.Errorf("%s: %w", dir, errPinsBusy)
		}
		return -1, fmt.Errorf("flock %s: %w", dir, err)
	}
	return fd, nil
}

// lockPins makes this run the owner of its pin directory for as long as
// it lives: a second process started with the same name would otherwise
// adopt the links of the first, live one and take its ports over.
func (p *Program) lockPins() error {
	fd, err := lockDir(p.opts.Pin, p.opts.FailOpen)
	if errors.Is(err, errPinsBusy) {
		return fmt.Errorf("offload: the bridge's XDP program in %s is served by another running statewire: stop it first, or choose another --name", p.opts.Pin)
	}
	if err != nil {
		return fmt.Errorf("offload: %w", err)
	}
	p.lockFD = fd
	return nil
}

// loadPinnedMaps opens the maps pinned in dir; a map without a pin is
// absent from the result.
func loadPinnedMaps(dir string) (shared map[string]*ebpf.Map, xsks [2]*ebpf.Map, err error) {
	shared = map[string]*ebpf.Map{}
	open := func(pin string) (*ebpf.Map, error) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, pin), nil)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return m, err
	}
	for _, pin := range sharedPins {
		m, err := open(pin)
		if err != nil {
			closeMaps(shared, xsks)
			return nil, [2]*ebpf.Map{}, fmt.Errorf("open pinned map %s: %w", filepath.Join(dir, pin), err)
		}
		if m != nil {
			shared[sharedMapOf(pin)] = m
		}
	}
	for i, pin := range xsksPins {
		m, err := open(pin)
		if err != nil {
			closeMaps(shared, xsks)
			return nil, [2]*ebpf.Map{}, fmt.Errorf("open pinned map %s: %w", filepath.Join(dir, pin), err)
		}
		xsks[i] = m
	}
	return shared, xsks, nil
}

func closeMaps(shared map[string]*ebpf.Map, xsks [2]*ebpf.Map) {
	for _, m := range shared {
		m.Close()
	}
	for _, m := range xsks {
		if m != nil {
			m.Close()
		}
	}
}

// Adopted reports whether Load took the flow map of an earlier run from
// the pins (Options.Pin): its flows kept being forwarded while no process
// ran. The connection table that goes with them is not adopted here: call
// RevokeAdopted unless the table was carried over too.
func (p *Program) Adopted() bool { return p.adopted }

// RevokeAdopted empties the adopted flow map so that userspace is the
// authority again (every flow's next frame goes up the slow path and is
// judged on the table), and returns how many flows it held. Call it
// before any Offer.
func (p *Program) RevokeAdopted() (int, error) {
	var keys []bpfFlowKey
	var k bpfFlowKey
	var v bpfFlowValue
	it := p.flows.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
		// The program takes a frame only while revoked[slot] is the
		// value's generation: zero it first (waiting for a holder of the
		// flow's lock), then delete.
		if int(v.Slot) < p.opts.MaxFlows {
			p.rev.revoke(v.Slot, uint64(v.Gen))
			p.gens[v.Slot] = v.Gen // no new offer reuses a generation a queued Mark names
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("offload: read the adopted flow map: %w", err)
	}
	for i := range keys {
		if err := p.flows.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("offload: empty the adopted flow map: %w", err)
		}
	}
	// Slots of pending offers of the earlier run hold no entry any more.
	for s := range p.opts.MaxFlows {
		p.rev.store(uint32(s), 0)
	}
	p.adopted = false
	return len(keys), nil
}

// AdoptedFlow is an active flow of an adopted flow map, as KeepAdopted's
// keep function sees it.
type AdoptedFlow struct {
	Key      flowtable.Key
	Verdicts [2]uint8  // the verdict bytes it was offered with (Original, Reply)
	Packets  [2]uint64 // packets the fast path took for it, all runs together
	// Pending: an offer the earlier run had not activated (the program
	// took nothing of it: the table holds its state). KeepAdopted removes
	// it whatever keep answers.
	Pending bool
}

// KeepAdopted keeps the flows of the adopted flow map that a connection
// table carried over with it still holds as offered: keep is asked about
// every active flow and those it says yes to stay in the fast path (it is
// told about pending offers too, AdoptedFlow.Pending, and its answer
// ignored), their
// slots and generations taken out of this run's allocator so that no new
// offer reuses them. Every other flow is revoked and deleted: those keep
// refuses, pending offers (the earlier run's worker that would activate
// them is gone; the table holds their state), and flows an unfinished
// take-back of the earlier run had revoked. It returns how many flows it
// kept and how many it removed. The caller takes the kept flows back as
// it would its own offers (TakeBack); it may do so at once for one that
// turns out not to fit (OfferedAs). keep must not call the Program. Call
// it before any Offer, instead of RevokeAdopted.
func (p *Program) KeepAdopted(keep func(f *AdoptedFlow) bool) (kept, removed int, err error) {
	var k bpfFlowKey
	var v bpfFlowValue
	var drop []bpfFlowKey
	used := make([]bool, p.opts.MaxFlows)
	it := p.flows.Iterate()
	for it.Next(&k, &v) {
		if int(v.Slot) >= p.opts.MaxFlows || used[v.Slot] {
			drop = append(drop, k)
			continue
		}
		// A new offer of this slot takes the next generation, so that no
		// Mark of the earlier run still queued names it.
		p.gens[v.Slot] = v.Gen
		w := p.rev.load(v.Slot)
		f := AdoptedFlow{Key: flowKey(&k), Verdicts: v.Verdict, Packets: v.Packets}
		if w&pendBit != 0 || uint32(w) != v.Gen || v.Gen == 0 {
			// Pending, or revoked by a take-back the earlier run did
			// not finish: userspace holds the state.
			if f.Pending = w&pendBit != 0 && uint32(w) == v.Gen && v.Gen != 0; f.Pending && keep != nil {
				keep(&f)
			}
			p.rev.revoke(v.Slot, uint64(v.Gen))
			drop = append(drop, k)
			continue
		}
		if keep != nil && !keep(&f) {
			p.rev.revoke(v.Slot, uint64(v.Gen))
			drop = append(drop, k)
			continue
		}
		used[v.Slot] = true
		p.gens[v.Slot] = v.Gen
	}
	if err := it.Err(); err != nil {
		return 0, 0, fmt.Errorf("offload: read the adopted flow map: %w", err)
	}
	for i := range drop {
		if err := p.flows.Delete(&drop[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, 0, fmt.Errorf("offload: delete an adopted flow: %w", err)
		}
	}
	p.mu.Lock()
	p.free = p.free[:0]
	for s := p.opts.MaxFlows - 1; s >= 0; s-- {
		if used[s] {
			kept++
			continue
		}
		p.rev.store(uint32(s), 0)
		p.free = append(p.free, uint32(s))
	}
	p.mu.Unlock()
	p.adopted = false
	return kept, len(drop), nil
}

// Fit is how an adopted flow compares with a table entry of its key
// (OfferedAs).
type Fit uint8

const (
	// FitNone: the map holds no flow for the entry, or one of another
	// connection with the same key (an earlier one, or a state the entry
	// never had): its state is not the entry's.
	FitNone Fit = iota
	// FitOther: the entry's connection, offered otherwise than these
	// verdicts and settings would offer it now: its live state is the
	// entry's, its verdicts or settings are not.
	FitOther
	// FitSame: the entry's connection as an Offer with these verdicts and
	// settings would put it there now.
	FitSame
)

// OfferedAs compares e's flow in the map with e and with what an Offer of
// e with verdicts and oc would write now. The flow is e's connection when
// it has e's orientation, TCP state and status, UDP creation time, and TCP
// window scales with sequence edges at or ahead of e's (the fast path only
// moves them forward from the offer; e is not updated while offered); it
// is offered the same way when the verdict bytes, checksum verification,
// liberal tracking, retransmission limit and timeouts are the same too. It
// is how a run that kept an adopted flow (KeepAdopted) checks it against
// its own table and settings: FitSame stays, FitOther is taken back
// (TakeBack: its live state is e's), FitNone is revoked without touching e.
func (p *Program) OfferedAs(e *flowtable.Entry, verdicts [2]uint8, oc OfferConfig) (Fit, error) {
	want, err := p.value(e, verdicts, oc)
	if errors.Is(err, ErrNotEligible) {
		return FitNone, nil // e was eligible when offered, and not updated since
	}
	if err != nil {
		return FitNone, err
	}
	k := e.Key()
	mk := mapKey(&k)
	var v bpfFlowValue
	if err := p.flows.Lookup(&mk, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return FitNone, nil
		}
		return FitNone, fmt.Errorf("offload: read an adopted flow: %w", err)
	}
	if v.Proto != want.Proto || v.OrigIsB != want.OrigIsB || v.Status != want.Status || v.TcpState != want.TcpState {
		return FitNone, nil
	}
	if k.Proto == packet.ProtoTCP {
		for i := range v.Peer {
			m, t := &v.Peer[i], &want.Peer[i]
			if m.Scale != t.Scale || int32(m.End-t.End) < 0 || int32(m.Maxend-t.Maxend) < 0 {
				return FitNone, nil
			}
		}
	} else {
		// Each run measures the clocks' offset (measureOffset): allow
		// for its jitter.
		d := int64(v.UdpCreated - want.UdpCreated)
		if d <= -int64(time.Millisecond) || d >= int64(time.Millisecond) {
			return FitNone, nil
		}
	}
	if v.Verdict != want.Verdict || v.Csum != want.Csum || v.Liberal != want.Liberal || v.MaxRetrans != want.MaxRetrans ||
		v.ToMain != want.ToMain || v.ToAlt != want.ToAlt || v.ToMaxretrans != want.ToMaxretrans {
		return FitOther, nil
	}
	return FitSame, nil
}

// flowKey is mapKey's inverse.
func flowKey(k *bpfFlowKey) flowtable.Key {
	return flowtable.Key{A: k.A, B: k.B, PortA: k.PortA, PortB: k.PortB, Proto: k.Proto, L3: k.L3, VLAN: k.Vlan}
}

// FailOpenStats counts the frames of one ingress port the program
// forwarded unjudged in fail-open mode because no worker was registered.
type FailOpenStats struct {
	Packets, Bytes uint64
}

// failStats is offload.c struct fail_stats.
type failStats struct {
	Packets, Bytes uint64
}

// FailOpen returns the fail-open counters by ingress port (PortA, PortB),
// summed over CPUs; they live in the pinned map, so they include the
// frames forwarded while no process ran.
func (p *Program) FailOpen() ([2]FailOpenStats, error) { return readFailOpen(p.failStats) }

func readFailOpen(m *ebpf.Map) ([2]FailOpenStats, error) {
	var out [2]FailOpenStats
	for port := range 2 {
		var per []failStats
		if err := m.Lookup(uint32(port), &per); err != nil {
			return out, fmt.Errorf("offload: fail-open counters: %w", err)
		}
		for _, s := range per {
			out[port].Packets += s.Packets
			out[port].Bytes += s.Bytes
		}
	}
	return out, nil
}

// SetFailOpen sets the mode the program applies to frames of queues
// without a socket: forward them to the other port (open) or give them the
// miss action (closed).
func (p *Program) SetFailOpen(open bool) error {
	if err := p.failCfg.Put(uint32(0), uint32(b2u(open))); err != nil {
		return fmt.Errorf("offload: set fail mode: %w", err)
	}
	return nil
}

// adoptLink takes over the link pinned for port, if any: it must attach
// an interface of index ifindex; its program is replaced by port's in one
// step (bpf_link_update: no frame sees no program). A pinned link of
// another interface, or one that is gone, is unpinned and closed. ok is
// false when nothing was adopted.
func (p *Program) adoptLink(port, ifindex int, ifname string) (link.Link, bool) {
	path := filepath.Join(p.opts.Pin, linkPins[port])
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			p.logf("offload: %s: pinned link %s unusable (%v): removed", ifname, path, err)
			os.Remove(path)
		}
		return nil, false
	}
	info, err := l.Info()
	var x *link.XDPInfo
	if err == nil {
		x = info.XDP()
	}
	if x == nil || int(x.Ifindex) != ifindex {
		p.logf("offload: %s: pinned link %s attaches another interface or none: removed", ifname, path)
		l.Unpin()
		l.Close()
		return nil, false
	}
	old := info.Program
	if err := l.Update(p.progs[port&1]); err != nil {
		p.logf("offload: %s: cannot update the pinned XDP link (%v): attaching anew", ifname, err)
		l.Unpin()
		l.Close()
		return nil, false
	}
	p.logf("offload: %s: adopted the pinned XDP link %s (program %d replaced by this run's, no gap)", ifname, path, old)
	return l, true
}

// settlePins makes bpffs match the fail mode once both ports are
// attached: open pins the links and maps (replacing pins of maps that were
// not adopted); closed removes every pin of the bridge, so that nothing
// outlives the process.
func (p *Program) settlePins() error {
	if p.opts.Pin == "" {
		return nil
	}
	if !p.opts.FailOpen {
		if p.lockFD < 0 {
			return nil // no directory: nothing pinned
		}
		return removePins(p.opts.Pin)
	}
	if err := os.MkdirAll(p.opts.Pin, 0o700); err != nil {
		return fmt.Errorf("offload: create %s: %w", p.opts.Pin, err)
	}
	pin := func(name string, m *ebpf.Map) error {
		path := filepath.Join(p.opts.Pin, name)
		if info, err := m.Info(); err == nil {
			if old, err := ebpf.LoadPinnedMap(path, nil); err == nil {
				oi, ierr := old.Info()
				old.Close()
				if ierr == nil {
					if a, ok1 := oi.ID(); ok1 {
						if b, ok2 := info.ID(); ok2 && a == b {
							return nil // adopted: already pinned
						}
					}
				}
			}
		}
		os.Remove(path)
		if err := m.Pin(path); err != nil {
			return fmt.Errorf("offload: pin %s: %w", path, err)
		}
		return nil
	}
	for _, name := range sharedPins {
		if err := pin(name, p.colls[0].Maps[sharedMapOf(name)]); err != nil {
			return err
		}
	}
	for i, name := range xsksPins {
		if err := pin(name, p.xsks[i]); err != nil {
			return err
		}
	}
	for _, a := range p.links {
		path := filepath.Join(p.opts.Pin, linkPins[a.port])
		if a.adopted {
			continue
		}
		os.Remove(path)
		if err := a.l.Pin(path); err != nil {
			return fmt.Errorf("offload: pin %s: %w", path, err)
		}
	}
	p.pinned = true
	return nil
}

// removePins unpins everything in dir and removes it. The objects go away
// when no process holds them either: an XDP link then detaches.
func removePins(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("offload: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DetachReport is what DetachPinned found and removed.
type DetachReport struct {
	Dir        string
	Interfaces []int            // ifindexes the pinned links attached
	Programs   []ebpf.ProgramID // their programs
	FailOpen   [2]FailOpenStats // frames forwarded unjudged, by ingress port
	Counted    bool             // FailOpen could be read
}

// DetachPinned removes the pins of the bridge in dir (PinDir): its XDP
// links, and with them the programs, detach from the interfaces unless a
// live process still holds them. It reports the fail-open counters before
// removing them. A directory that does not exist is an error wrapping
// fs.ErrNotExist.
func DetachPinned(dir string) (DetachReport, error) {
	rep := DetachReport{Dir: dir}
	if _, err := os.Stat(dir); err != nil {
		return rep, err
	}
	lock, err := lockDir(dir, false)
	if errors.Is(err, errPinsBusy) {
		return rep, fmt.Errorf("%s is held by a running statewire: stop it first", dir)
	}
	if err != nil {
		return rep, err
	}
	if lock >= 0 {
		defer unix.Close(lock)
	}
	if m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "fail_open_stats"), nil); err == nil {
		if st, err := readFailOpen(m); err == nil {
			rep.FailOpen, rep.Counted = st, true
		}
		m.Close()
	}
	var links []link.Link
	for _, name := range linkPins {
		l, err := link.LoadPinnedLink(filepath.Join(dir, name), nil)
		if err != nil {
			continue
		}
		if info, err := l.Info(); err == nil {
			rep.Programs = append(rep.Programs, info.Program)
			if x := info.XDP(); x != nil {
				rep.Interfaces = append(rep.Interfaces, int(x.Ifindex))
			}
		}
		links = append(links, l)
	}
	err = removePins(dir)
	// Closing the last reference detaches the link (it is not pinned
	// any more).
	for _, l := range links {
		l.Close()
	}
	if err != nil {
		return rep, err
	}
	os.Remove(PinRoot) // only when empty
	return rep, nil
}

// PinnedFlows reads the flow map pinned in dir (PinDir) by a run that is
// gone or running: how many flows the fast path holds and the packets it
// took for them. It is how one sees the fast path keep forwarding while
// no process runs.
func PinnedFlows(dir string) (flows int, packets uint64, err error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "flows"), nil)
	if err != nil {
		return 0, 0, fmt.Errorf("offload: open the pinned flow map: %w", err)
	}
	defer m.Close()
	var k bpfFlowKey
	var v bpfFlowValue
	it := m.Iterate()
	for it.Next(&k, &v) {
		flows++
		packets += v.Packets[0] + v.Packets[1]
	}
	if err := it.Err(); err != nil {
		return 0, 0, fmt.Errorf("offload: read the pinned flow map: %w", err)
	}
	return flows, packets, nil
}
