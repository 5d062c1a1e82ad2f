package offload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// Mode is the XDP attach mode.
type Mode int

const (
	// Native runs the program in the driver (veth supports it).
	Native Mode = iota
	// Generic runs it on the skb path (any device, slower).
	Generic
)

// String returns "native" or "generic".
func (m Mode) String() string {
	if m == Generic {
		return "generic"
	}
	return "native"
}

// Port numbers as the program's port_id constant and the DEVMAP use them
// (bridge.PortA, bridge.PortB).
const (
	PortA = 0
	PortB = 1
)

// XDP actions (enum xdp_action), as Program.Run returns them.
const (
	ActionAborted  = 0
	ActionDrop     = 1
	ActionPass     = 2
	ActionTX       = 3
	ActionRedirect = 4
)

// Defaults for Options.
const (
	DefaultQueues   = 64
	DefaultMaxFlows = 1 << 16
)

// PuntReason says why a frame went to the slow path (offload.c enum
// punt_reason).
type PuntReason uint8

const (
	PuntParse    PuntReason = iota // not the subset the fast path parses
	PuntMiss                       // flow not offered
	PuntVerdict                    // no cached ACCEPT for (direction, state, port)
	PuntState                      // would change state or status, or not ESTABLISHED/ACK
	PuntWindow                     // window check would ignore it or call it INVALID
	PuntChecksum                   // bad L4 checksum or too long to verify
	PuntExpired                    // the entry's timeout ran out
	PuntRevoked                    // being taken back
	PuntNoDev                      // the other port is not set (SetPorts)
	PuntPending                    // offered pending (OfferPending), not yet activated
	PuntBusy                       // the flow's lock stayed held (other direction's CPU, or Peek)
	NumPuntReasons
)

var puntNames = [...]string{"parse", "miss", "verdict", "state", "window", "checksum", "expired", "revoked", "no-egress", "pending", "busy"}

func (r PuntReason) String() string {
	if int(r) < len(puntNames) {
		return puntNames[r]
	}
	return "unknown"
}

// Errors.
var (
	ErrNotEligible = errors.New("offload: flow not eligible for the fast path")
	ErrOffered     = errors.New("offload: flow already offered")
	ErrFull        = errors.New("offload: fast-path map full")
)

// Options configure Load.
type Options struct {
	// MaxFlows is the size of the fast-path flow map (default
	// DefaultMaxFlows; the datapath passes the flow table's maximum).
	MaxFlows int
	// Queues is the number of XSKMAP entries per port (default DefaultQueues).
	Queues int
	// PassOnMiss hands frames of queues without a registered socket to
	// the kernel stack (XDP_PASS) instead of dropping them (XDP_DROP).
	PassOnMiss bool
	// IgnoreVLAN builds keys without the VLAN id, as a flowtable with
	// Config.IgnoreVLAN does (--vlan-zones=false); it must equal the
	// table's setting, or no offered flow is ever found.
	IgnoreVLAN bool
	// Now is the datapath's clock, monotonic ns (bridge Datapath.Now).
	// nil: the clock is CLOCK_MONOTONIC itself.
	Now func() int64
	// Logf receives one line per notable event (a stale program
	// replaced). nil discards them.
	Logf func(format string, args ...any)
	// SlowOnly sends every frame to the AF_XDP sockets without parsing
	// it (--offload=off: nothing is ever offered; the program then does
	// what bridge/xdpprog's did).
	SlowOnly bool
	// Pin is the bridge's bpffs directory (PinDir), "" for none. Load
	// adopts the maps pinned there by an earlier run and Attach its
	// links; with FailOpen the links and maps are pinned there once both
	// ports are attached and stay after the process exits, however it
	// exits; without, every pin there is removed then.
	Pin string
	// FailOpen forwards the frames of queues without a registered socket
	// (no worker: statewire is not running) unchanged to the other port
	// and counts them (FailOpen), instead of the miss action.
	FailOpen bool
}

// Program is the fast path: one XDP program per port sharing the flow
// map, the DEVMAP, the stats and the revocation array.
type Program struct {
	opts  Options
	progs [2]*ebpf.Program
	xsks  [2]*ebpf.Map

	flows, devmap, stats, revoked, clock *ebpf.Map
	rev                                  revokeMem

	// Redirects the kernel dropped after the program (offload.c
	// count_redirect_err, count_devmap_xmit): nil tracers when the kernel
	// has no BTF for them.
	egress, redirErrs *ebpf.Map
	tracers           []link.Link

	// offset is CLOCK_MONOTONIC - Options.Now(), measured once at Load.
	offset int64

	mu   sync.Mutex // guards free and gens
	free []uint32
	gens []uint32

	colls []*ebpf.Collection
	links []attached

	failCfg, failStats *ebpf.Map
	lockFD             int  // flock'ed pin directory while this run owns it (lockPins), else -1
	adopted            bool // the flow map came from the pins (RevokeAdopted)
	pinned             bool // pins of this bridge exist: Close keeps them with FailOpen
}

type attached struct {
	ifname  string
	port    int
	adopted bool // taken over from a pin (adoptLink)
	l       link.Link
}

// Load loads the program twice (port A, port B) with their shared maps.
// Nothing is attached yet.
func Load(opts Options) (*Program, error) {
	if opts.Queues == 0 {
		opts.Queues = DefaultQueues
	}
	if opts.MaxFlows == 0 {
		opts.MaxFlows = DefaultMaxFlows
	}
	if opts.Queues < 0 || opts.Queues > 1<<16 {
		return nil, fmt.Errorf("offload: Queues %d out of range 1..65536", opts.Queues)
	}
	if opts.MaxFlows < 0 || opts.MaxFlows > 1<<26 {
		return nil, fmt.Errorf("offload: MaxFlows %d out of range 1..%d", opts.MaxFlows, 1<<26)
	}
	p := &Program{opts: opts, lockFD: -1}
	if err := p.loadPinned(); err != nil {
		p.Close()
		return nil, err
	}
	if err := p.SetFailOpen(opts.FailOpen); err != nil {
		p.Close()
		return nil, err
	}
	p.free = make([]uint32, opts.MaxFlows)
	for i := range p.free {
		p.free[i] = uint32(opts.MaxFlows - 1 - i)
	}
	p.gens = make([]uint32, opts.MaxFlows)
	p.offset = measureOffset(opts.Now)
	return p, nil
}

// loadPinned loads the programs on the maps pinned by an earlier run of
// the bridge (Options.Pin) when there are any and they fit this run (same
// layout and sizes); otherwise, and without a pin directory, on new maps.
func (p *Program) loadPinned() error {
	if p.opts.Pin == "" {
		return p.load(nil, [2]*ebpf.Map{})
	}
	if !p.opts.FailOpen && !bpffsMounted() {
		// Closed mode pins nothing, and without bpffs nothing can be
		// pinned from an earlier run.
		return p.load(nil, [2]*ebpf.Map{})
	}
	mounted, err := EnsureBPFFS()
	if err != nil {
		return fmt.Errorf("offload: %w", err)
	}
	if mounted {
		p.logf("offload: mounted bpffs at %s (it was not mounted; ip and tc use the same place)", BPFFS)
	}
	if err := p.lockPins(); err != nil {
		return err
	}
	shared, xsks, err := loadPinnedMaps(p.opts.Pin)
	if err != nil {
		p.logf("offload: %v: starting on new maps", err)
		return p.load(nil, [2]*ebpf.Map{})
	}
	if len(shared) == 0 && xsks[0] == nil && xsks[1] == nil {
		return p.load(nil, [2]*ebpf.Map{})
	}
	p.pinned = true
	if len(shared) != len(sharedPins) || xsks[0] == nil || xsks[1] == nil {
		closeMaps(shared, xsks)
		p.logf("offload: %s holds only some of the maps of an earlier run: starting on new maps", p.opts.Pin)
		return p.load(nil, [2]*ebpf.Map{})
	}
	err = p.load(shared, xsks)
	if err != nil {
		p.closeColls()
		p.logf("offload: the maps pinned in %s do not fit this run (%v; another version, or --offload-flows changed): "+
			"starting on new maps, the flows the fast path held go up the slow path", p.opts.Pin, err)
		err = p.load(nil, [2]*ebpf.Map{})
	} else {
		p.adopted = true
		p.logf("offload: adopted the maps pinned in %s by an earlier run", p.opts.Pin)
	}
	// The collections hold their own references.
	closeMaps(shared, xsks)
	return err
}

func (p *Program) closeColls() {
	for _, c := range p.colls {
		c.Close()
	}
	p.colls = nil
	p.rev.close()
	p.rev = revokeMem{}
}

// load loads both programs; shared and xsks, when set, are maps to use
// instead of new ones (pinned by an earlier run).
func (p *Program) load(pinned map[string]*ebpf.Map, pinnedXsks [2]*ebpf.Map) error {
	shared := pinned
	for port := range 2 {
		spec, err := p.portSpec(port)
		if err != nil {
			return err
		}
		repl := map[string]*ebpf.Map{}
		for k, m := range shared {
			repl[k] = m
		}
		if pinnedXsks[port] != nil {
			repl["xsks"] = pinnedXsks[port]
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
		if err != nil {
			return fmt.Errorf("offload: load program for port %d: %w", port, err)
		}
		p.colls = append(p.colls, coll)
		p.progs[port] = coll.Programs["statewire_xdp"]
		p.xsks[port] = coll.Maps["xsks"]
		if port == 0 {
			p.flows, p.devmap, p.stats = coll.Maps["flows"], coll.Maps["ports_devmap"], coll.Maps["stats"]
			p.revoked, p.clock = coll.Maps["revoked"], coll.Maps[".bss"]
			p.egress, p.redirErrs = coll.Maps["egress"], coll.Maps["redirect_errs"]
			p.failCfg, p.failStats = coll.Maps["fail_cfg"], coll.Maps["fail_open_stats"]
			shared = map[string]*ebpf.Map{
				"flows": p.flows, "ports_devmap": p.devmap, "stats": p.stats,
				"revoked": p.revoked, ".bss": p.clock,
				"egress": p.egress, "redirect_errs": p.redirErrs,
				"fail_cfg": p.failCfg, "fail_open_stats": p.failStats,
			}
		}
	}
	rev, err := mapRevoked(p.revoked, p.opts.MaxFlows)
	if err != nil {
		return fmt.Errorf("offload: mmap revoked: %w", err)
	}
	p.rev = rev
	if err := p.loadTracers(shared); err != nil {
		p.logf("offload: redirects the kernel drops after the fast path (egress down, MTU) will not be counted: %v", err)
	}
	return nil
}

// portSpec is the collection of port's program (0: A, 1: B) as load
// loads it: the map sizes and constants of p.opts, without the tracing
// programs (loaded once, by loadTracers). TestVerifierBudget loads the
// same spec.
func (p *Program) portSpec(port int) (*ebpf.CollectionSpec, error) {
	spec, err := loadBpf()
	if err != nil {
		return nil, fmt.Errorf("offload: load spec: %w", err)
	}
	delete(spec.Programs, "count_redirect_err")
	delete(spec.Programs, "count_devmap_xmit")
	spec.Maps["flows"].MaxEntries = uint32(p.opts.MaxFlows)
	spec.Maps["revoked"].MaxEntries = uint32(p.opts.MaxFlows)
	spec.Maps["xsks"].MaxEntries = uint32(p.opts.Queues)
	if err := spec.Variables["port_id"].Set(uint32(port)); err != nil {
		return nil, fmt.Errorf("offload: set port_id: %w", err)
	}
	miss := uint32(ActionDrop)
	if p.opts.PassOnMiss {
		miss = ActionPass
	}
	if err := spec.Variables["miss_action"].Set(miss); err != nil {
		return nil, fmt.Errorf("offload: set miss_action: %w", err)
	}
	vlanMask := uint16(0x0fff)
	if p.opts.IgnoreVLAN {
		vlanMask = 0
	}
	if err := spec.Variables["vlan_mask"].Set(vlanMask); err != nil {
		return nil, fmt.Errorf("offload: set vlan_mask: %w", err)
	}
	if err := spec.Variables["slow_only"].Set(uint32(b2u(p.opts.SlowOnly))); err != nil {
		return nil, fmt.Errorf("offload: set slow_only: %w", err)
	}
	return spec, nil
}

// loadTracers loads and attaches offload.c's two tracing programs, which
// count the frames the program redirected and the kernel then dropped.
// They need the kernel's BTF (tp_btf); without it they are left out.
func (p *Program) loadTracers(shared map[string]*ebpf.Map) error {
	info, err := p.devmap.Info()
	if err != nil {
		return fmt.Errorf("DEVMAP info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return errors.New("DEVMAP id unknown")
	}
	spec, err := loadBpf()
	if err != nil {
		return err
	}
	if err := spec.Variables["devmap_id"].Set(uint32(id)); err != nil {
		return err
	}
	var objs struct {
		RedirectErr *ebpf.Program `ebpf:"count_redirect_err"`
		DevmapXmit  *ebpf.Program `ebpf:"count_devmap_xmit"`
	}
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: shared}); err != nil {
		return err
	}
	defer objs.RedirectErr.Close()
	defer objs.DevmapXmit.Close()
	for _, prog := range []*ebpf.Program{objs.RedirectErr, objs.DevmapXmit} {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			p.closeTracers()
			return err
		}
		p.tracers = append(p.tracers, l)
	}
	return nil
}

func (p *Program) closeTracers() {
	for _, l := range p.tracers {
		l.Close()
	}
	p.tracers = nil
}

// measureOffset returns CLOCK_MONOTONIC - now() from the closest of a few
// paired readings (0 when now is nil).
func measureOffset(now func() int64) int64 {
	if now == nil {
		return 0
	}
	best, bestGap := int64(0), int64(-1)
	for range 16 {
		a := monotonic()
		g := now()
		b := monotonic()
		if gap := b - a; bestGap < 0 || gap < bestGap {
			best, bestGap = a+gap/2-g, gap
		}
	}
	return best
}

func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// KernelTime converts a time of the datapath's clock to the program's.
func (p *Program) KernelTime(t int64) uint64 { return uint64(t + p.offset) }

// GoTime converts a time of the program's clock to the datapath's.
func (p *Program) GoTime(k uint64) int64 { return int64(k) - p.offset }

// Now returns the program's current time on the datapath's clock,
// including AdjustClock's shift.
func (p *Program) Now() int64 {
	var adj uint64
	_ = p.clock.Lookup(uint32(0), &adj)
	return p.GoTime(uint64(monotonic()) + adj)
}

// AdjustClock moves the program's clock forward by d (cumulative with
// earlier calls). Tests use it to reach timeouts; the datapath never does.
func (p *Program) AdjustClock(d time.Duration) error {
	var adj uint64
	if err := p.clock.Lookup(uint32(0), &adj); err != nil {
		return fmt.Errorf("offload: adjust clock: %w", err)
	}
	adj += uint64(d)
	if err := p.clock.Put(uint32(0), adj); err != nil {
		return fmt.Errorf("offload: adjust clock: %w", err)
	}
	return nil
}

// EBPF returns the loaded program of port (for test runs and introspection).
func (p *Program) EBPF(port int) *ebpf.Program { return p.progs[port&1] }

// XSKMap returns the queue -> AF_XDP socket map of port.
func (p *Program) XSKMap(port int) *ebpf.Map { return p.xsks[port&1] }

// DevMap returns the DEVMAP (slot PortA, PortB -> ifindex).
func (p *Program) DevMap() *ebpf.Map { return p.devmap }

// FlowMap returns the fast-path flow map (flowtable.Key -> value).
func (p *Program) FlowMap() *ebpf.Map { return p.flows }

// Register points queue of port at the AF_XDP socket fd.
func (p *Program) Register(port, queue, fd int) error {
	if err := p.xsks[port&1].Put(uint32(queue), uint32(fd)); err != nil {
		return fmt.Errorf("offload: register port %d queue %d fd %d: %w", port, queue, fd, err)
	}
	return nil
}

// Unregister removes the socket of queue of port; its frames get the
// miss action.
func (p *Program) Unregister(port, queue int) error {
	if err := p.xsks[port&1].Delete(uint32(queue)); err != nil {
		return fmt.Errorf("offload: unregister port %d queue %d: %w", port, queue, err)
	}
	return nil
}

// SetPorts sets the DEVMAP: frames taken on port A leave by ifindexB and
// the other way round. Until it is called the program takes nothing.
//
// It is called in the ports' network namespace (on a locked thread): the
// tracers that count the redirects the kernel drops tell our ports from
// others with the same ifindex by it.
func (p *Program) SetPorts(ifindexA, ifindexB int) error {
	var ns uint32
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err == nil {
		ns = uint32(st.Ino)
	}
	for i, ifx := range [2]int{ifindexA, ifindexB} {
		if err := p.devmap.Put(uint32(i), uint32(ifx)); err != nil {
			return fmt.Errorf("offload: DEVMAP slot %d = ifindex %d: %w", i, ifx, err)
		}
		if err := p.egress.Put(uint32(i), bpfEgressDev{Ifindex: uint32(ifx), Netns: ns}); err != nil {
			return fmt.Errorf("offload: egress slot %d: %w", i, err)
		}
	}
	return nil
}

func (p *Program) logf(format string, args ...any) {
	if p.opts.Logf != nil {
		p.opts.Logf(format, args...)
	}
}

// Attach attaches port's program to ifname with a bpf_link, in the network
// namespace of the calling thread. A program attached through netlink (not
// tied to any process) that is in the way is detached, the replacement is
// logged and the attach retried; a program held by another live bpf_link
// is not touched: Attach fails naming it.
//
// With Options.Pin, a link an earlier run pinned for port is adopted
// instead: its program is replaced by this one in place, so frames never
// meet a detached port. Once both ports are attached the pins are settled
// (Options.Pin).
func (p *Program) Attach(port int, ifname string, mode Mode) error {
	port &= 1
	if p.opts.Pin != "" {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("offload: %w", err)
		}
		if l, ok := p.adoptLink(port, ifc.Index, ifname); ok {
			p.links = append(p.links, attached{ifname: ifname, port: port, adopted: true, l: l})
			return p.settleIfAttached()
		}
	}
	l, err := AttachLink(p.progs[port], ifname, mode == Generic, func(f string, a ...any) { p.logf("offload: "+f, a...) })
	if err != nil {
		return fmt.Errorf("offload: %w", err)
	}
	p.links = append(p.links, attached{ifname: ifname, port: port, l: l})
	return p.settleIfAttached()
}

func (p *Program) settleIfAttached() error {
	var seen [2]bool
	for _, a := range p.links {
		seen[a.port] = true
	}
	if seen[0] && seen[1] {
		return p.settlePins()
	}
	return nil
}

// AttachLink attaches prog to ifname with a bpf_link (generic: the skb
// path, else the driver), in the network namespace of the calling thread.
// A program attached through netlink (not tied to any process) that is in
// the way is detached, the replacement is logged through logf (nil: not
// logged) and the attach retried; a program held by another live bpf_link
// is not touched: AttachLink fails naming it.
func AttachLink(prog *ebpf.Program, ifname string, generic bool, logf func(string, ...any)) (link.Link, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	flags, mode := link.XDPDriverMode, "native"
	if generic {
		flags, mode = link.XDPGenericMode, "generic"
	}
	opts := link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: flags}
	l, err := link.AttachXDP(opts)
	if err != nil && (errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST)) {
		var id uint32
		id, err = detachNetlink(ifname)
		if err != nil {
			return nil, fmt.Errorf("attach %s (%s): an XDP program is in the way and could not be removed: %w", ifname, mode, err)
		}
		if logf != nil {
			logf("%s: replaced stale XDP program id %d (attached via netlink by an earlier run or another tool)", ifname, id)
		}
		l, err = link.AttachXDP(opts)
	}
	if err != nil {
		return nil, fmt.Errorf("attach %s (%s): %w", ifname, mode, err)
	}
	return l, nil
}

// detachNetlink removes a netlink-attached XDP program (native or generic)
// from ifname and returns its id. A program held by a bpf_link refuses the
// netlink detach with EBUSY, which is returned.
func detachNetlink(ifname string) (uint32, error) {
	nl, err := netlink.LinkByName(ifname)
	if err != nil {
		return 0, err
	}
	x := nl.Attrs().Xdp
	if x == nil || !x.Attached {
		return 0, errors.New("no XDP program reported by netlink")
	}
	id := x.ProgId
	var errs []error
	for _, f := range []int{unix.XDP_FLAGS_DRV_MODE, unix.XDP_FLAGS_SKB_MODE} {
		if err := netlink.LinkSetXdpFdWithFlags(nl, -1, f); err != nil {
			errs = append(errs, err)
		}
	}
	att, _, err := XDPAttached(ifname)
	if err != nil {
		return id, err
	}
	if att {
		return id, fmt.Errorf("program id %d still attached (held by a live bpf_link?): %w", id, errors.Join(errs...))
	}
	return id, nil
}

// XDPAttached reports whether netlink shows an XDP program on ifname (in
// the calling thread's namespace), and its id.
func XDPAttached(ifname string) (bool, uint32, error) {
	nl, err := netlink.LinkByName(ifname)
	if err != nil {
		return false, 0, err
	}
	x := nl.Attrs().Xdp
	if x == nil {
		return false, 0, nil
	}
	return x.Attached, x.ProgId, nil
}

// Detach detaches the programs from every port they were attached to
// (frames then reach the stack), removing the bridge's pins first; the
// maps stay usable, so offered flows can still be taken back. Close
// detaches too, except in fail-open mode.
func (p *Program) Detach() error {
	var errs []error
	if p.opts.Pin != "" && p.lockFD >= 0 {
		// Only the run that holds the directory's lock may remove it
		// (a refused Load must not remove a live run's pins).
		errs = append(errs, removePins(p.opts.Pin))
		p.pinned = false
	}
	for _, a := range p.links {
		if err := a.l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("offload: detach %s: %w", a.ifname, err))
		}
	}
	p.links = nil
	return errors.Join(errs...)
}

// Close detaches the programs and closes them and their maps. The sockets
// registered in the XSKMAPs are not closed. In fail-open mode with pins
// (Options.Pin, FailOpen) nothing is detached: the pins keep the programs
// attached and their maps, and Close only lets go of this process's
// references.
func (p *Program) Close() error {
	p.closeTracers()
	var errs []error
	if p.opts.FailOpen && p.pinned {
		for _, a := range p.links {
			errs = append(errs, a.l.Close())
		}
		p.links = nil
	} else {
		errs = append(errs, p.Detach())
	}
	errs = append(errs, p.rev.close())
	p.rev = revokeMem{}
	for _, c := range p.colls {
		c.Close()
	}
	p.colls = nil
	if p.lockFD >= 0 {
		unix.Close(p.lockFD) // releases the flock
		p.lockFD = -1
	}
	return errors.Join(errs...)
}

// ---- The flow map ------------------------------------------------------

// mapKey is flowtable.Key's 40 bytes in the layout of struct flow_key.
func mapKey(k *flowtable.Key) bpfFlowKey {
	return bpfFlowKey{A: k.A, B: k.B, PortA: k.PortA, PortB: k.PortB, Proto: k.Proto, L3: k.L3, Vlan: k.VLAN}
}

// OfferConfig is what the verdict and the tracker read besides the entry:
// the tracker configuration and whether L4 checksums are verified
// (bridge.Settings.Conntrack and VerifyChecksum).
type OfferConfig struct {
	Conntrack      *statemachine.Config
	VerifyChecksum bool
}

// Eligible reports whether e may be offered at all: TCP ESTABLISHED with
// SEEN_REPLY and ASSURED, or UDP; tracked, not dying, without a helper.
func Eligible(e *flowtable.Entry) bool {
	c := &e.Conn
	if e.Helper != 0 || c.Status&(statemachine.StatusUntracked|statemachine.StatusDying) != 0 {
		return false
	}
	k := e.Key()
	if k.L3 != 4 && k.L3 != 6 {
		return false
	}
	switch k.Proto {
	case packet.ProtoTCP:
		const both = statemachine.StatusSeenReply | statemachine.StatusAssured
		return c.Proto == packet.ProtoTCP && c.State == statemachine.TCPEstablished && c.Status&both == both
	case packet.ProtoUDP:
		return c.Proto == packet.ProtoUDP
	}
	return false
}

// Offer puts e into the fast path with the cached verdict byte of each
// direction (Original, Reply) in the contract's encoding: bit 0 accept,
// bits 1..5 the CtState, bit 6 the ingress port; 0 for none. The caller
// guarantees that the verdicts depend on nothing but the flow, the
// direction, the state and the port (no rule that reads the packet, no raw
// table decision for the flow), and stops judging the flow's packets until
// TakeBack. It returns ErrNotEligible, ErrOffered or ErrFull.
func (p *Program) Offer(e *flowtable.Entry, verdicts [2]uint8, oc OfferConfig) error {
	_, err := p.offer(e, verdicts, oc, false)
	return err
}

// Pending names a pending offer (OfferPending): the slot and generation
// the program writes into the Mark of each frame it punts meanwhile.
type Pending struct {
	Slot, Gen uint32
}

// OfferPending is the first phase of a two-phase offer (package comment,
// "Moving between the levels"): it puts e into the flow map like Offer,
// but pending. The program takes no frame of a pending flow: it punts
// them all, numbers them 1, 2, ... and writes a Mark (slot, generation,
// number) in front of each (XDP metadata). The caller keeps judging the
// flow's frames on its own table (the program changes nothing) and calls
// Activate once it has processed them. TakeBack cancels a pending offer
// without touching e. Errors as Offer's.
func (p *Program) OfferPending(e *flowtable.Entry, verdicts [2]uint8, oc OfferConfig) (Pending, error) {
	return p.offer(e, verdicts, oc, true)
}

// revoked[slot] of a pending flow: gen | pendBit | count<<32 (offload.c).
const (
	pendBit = uint64(1) << 63
	pendOne = uint64(1) << 32
	pendMax = uint64(0x7fffffff)
)

func pendWord(pd Pending, count uint32) uint64 {
	return pendBit | uint64(count)<<32 | uint64(pd.Gen)
}

// Punted returns how many frames of the pending offer pd the program has
// punted and numbered so far, and whether pd is still pending.
func (p *Program) Punted(pd Pending) (n uint32, pending bool) {
	w := p.rev.load(pd.Slot)
	if w&pendBit == 0 || uint32(w) != pd.Gen {
		return 0, false
	}
	return uint32(w >> 32 & pendMax), true
}

// Activate is the second phase: when the program has punted exactly
// punted frames of the pending offer pd (the caller has processed the last
// of them, Mark punted; the kernel may have dropped some before it), it writes e's current state and the
// verdicts into the map and makes the flow active in one compare-and-swap
// of revoked[slot], which fails if the program numbered one more frame in
// between. ok is false (nothing changed but the map value, which the
// program does not read while the flow is pending) when the count differs
// or the flow is no longer pending; ErrNotEligible when e is no longer
// eligible (still pending then).
func (p *Program) Activate(e *flowtable.Entry, verdicts [2]uint8, oc OfferConfig, pd Pending, punted uint32) (ok bool, err error) {
	want := pendWord(pd, punted)
	if p.rev.load(pd.Slot) != want {
		return false, nil
	}
	v, err := p.value(e, verdicts, oc)
	if err != nil {
		return false, err
	}
	v.Slot, v.Gen = pd.Slot, pd.Gen
	k := e.Key()
	mk := mapKey(&k)
	if err := p.flows.Update(&mk, &v, ebpf.UpdateExist|ebpf.UpdateLock); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("offload: activate: %w", err)
	}
	return p.rev.cas(pd.Slot, want, uint64(pd.Gen)), nil
}

// forceTries bounds ActivateNow's compare-and-swap loop: each failure is
// one more frame the program numbered in between (one per frame, a few
// hundred ns apart even in a flood), so a handful always suffices.
const forceTries = 1024

// ActivateNow is the second phase for a worker that cannot catch up with
// the program (package comment, "Under overload"): it writes e's current
// state and the verdicts into the map and makes the flow active at
// whatever count the program has reached, returned as cut. Frames the
// program numbered up to cut were punted before the activation and may
// still be queued for the caller; it must not judge any of them (they
// carry Marks of pd with Seq <= cut), or the program's later frames would
// have overtaken them. ok is false when pd is no longer pending (or the
// program kept numbering through forceTries attempts: try again); errors
// as Activate's.
func (p *Program) ActivateNow(e *flowtable.Entry, verdicts [2]uint8, oc OfferConfig, pd Pending) (cut uint32, ok bool, err error) {
	if _, pending := p.Punted(pd); !pending {
		return 0, false, nil
	}
	v, err := p.value(e, verdicts, oc)
	if err != nil {
		return 0, false, err
	}
	v.Slot, v.Gen = pd.Slot, pd.Gen
	k := e.Key()
	mk := mapKey(&k)
	if err := p.flows.Update(&mk, &v, ebpf.UpdateExist|ebpf.UpdateLock); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("offload: activate: %w", err)
	}
	// The value is written and the program reads none of it while the
	// flow is pending: the swap below is the activation. The count it
	// swaps away is the last number the program gave; the next frame
	// finds gen and is judged on the value.
	for range forceTries {
		w := p.rev.load(pd.Slot)
		if w&pendBit == 0 || uint32(w) != pd.Gen {
			return 0, false, nil
		}
		if p.rev.cas(pd.Slot, w, uint64(pd.Gen)) {
			return uint32(w >> 32 & pendMax), true, nil
		}
	}
	return 0, false, nil
}

// value builds e's map value (without slot and generation).
func (p *Program) value(e *flowtable.Entry, verdicts [2]uint8, oc OfferConfig) (bpfFlowValue, error) {
	if !Eligible(e) {
		return bpfFlowValue{}, ErrNotEligible
	}
	cfg := oc.Conntrack
	k := e.Key()
	t := e.Tuple()
	c := &e.Conn
	v := bpfFlowValue{
		Proto:      k.Proto,
		OrigIsB:    b2u(!(t.Src == k.A && t.SrcPort == k.PortA)),
		Verdict:    verdicts,
		Status:     c.Status,
		TcpState:   uint8(c.State),
		Csum:       b2u(oc.VerifyChecksum),
		Liberal:    b2u(cfg.BeLiberal || !cfg.WindowTracking),
		MaxRetrans: cfg.MaxRetrans,
		Expires:    p.KernelTime(c.Expires),
	}
	to := &cfg.Timeouts
	if k.Proto == packet.ProtoTCP {
		v.ToMain, v.ToAlt, v.ToMaxretrans = uint64(to.TCPEstablished), uint64(to.TCPUnacknowledged), uint64(to.TCPMaxRetrans)
		tc := &c.TCP
		for i := range 2 {
			v.Peer[i].End, v.Peer[i].Maxend, v.Peer[i].Maxwin = tc.Peer[i].End, tc.Peer[i].MaxEnd, tc.Peer[i].MaxWin
			v.Peer[i].Maxack, v.Peer[i].Scale, v.Peer[i].Flags = tc.Peer[i].MaxAck, tc.Peer[i].Scale, tc.Peer[i].Flags
		}
		v.LastSeq, v.LastAck, v.LastEnd, v.LastWin = tc.LastSeq, tc.LastAck, tc.LastEnd, tc.LastWin
		v.LastDir, v.LastIndex, v.Retrans = uint8(tc.LastDir), tc.LastIndex, tc.Retrans
	} else {
		v.ToMain, v.ToAlt = uint64(to.UDP), uint64(to.UDPStream)
		// statemachine Conn.udpCreated: the creation time lives in
		// LastSeq (high word) and LastAck (low word).
		created := int64(uint64(c.TCP.LastSeq)<<32 | uint64(c.TCP.LastAck))
		v.UdpCreated = p.KernelTime(created)
	}
	return v, nil
}

func (p *Program) offer(e *flowtable.Entry, verdicts [2]uint8, oc OfferConfig, pending bool) (Pending, error) {
	v, err := p.value(e, verdicts, oc)
	if err != nil {
		return Pending{}, err
	}
	k := e.Key()

	p.mu.Lock()
	if len(p.free) == 0 {
		p.mu.Unlock()
		return Pending{}, ErrFull
	}
	slot := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	g := p.gens[slot] + 1
	if g == 0 {
		g = 1
	}
	p.gens[slot] = g
	p.mu.Unlock()

	v.Slot, v.Gen = slot, g
	pd := Pending{Slot: slot, Gen: g}
	if pending {
		p.rev.store(slot, pendWord(pd, 0))
	} else {
		p.rev.store(slot, uint64(g))
	}
	mk := mapKey(&k)
	if err := p.flows.Update(&mk, &v, ebpf.UpdateNoExist); err != nil {
		p.rev.store(slot, 0)
		p.release(slot)
		if errors.Is(err, ebpf.ErrKeyExist) {
			return Pending{}, ErrOffered
		}
		if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOMEM) {
			return Pending{}, fmt.Errorf("%w: %v", ErrFull, err)
		}
		return Pending{}, fmt.Errorf("offload: offer: %w", err)
	}
	return pd, nil
}

// MarkLen is the length of the Mark the program writes in front of a frame
// it punts while the frame's flow is pending (XDP metadata: AF_XDP copies
// it into the UMEM right before the frame, in copy and zero-copy mode).
const MarkLen = 16

const markMagic = 0x45505753 // offload.c MARK_MAGIC

// Mark says that the program punted a frame while the frame's flow was
// pending: the flow's Pending and the frame's number (1, 2, ...).
type Mark struct {
	Pending
	Seq uint32
}

// ReadMark reads the Mark in the MarkLen bytes in front of a received
// frame (the zero Mark when there is none) and clears them, so that a
// UMEM frame reused for a later, unmarked frame carries no stale Mark.
func ReadMark(meta []byte) Mark {
	if len(meta) < MarkLen {
		return Mark{}
	}
	meta = meta[len(meta)-MarkLen:]
	if binary.LittleEndian.Uint32(meta) != markMagic {
		return Mark{}
	}
	m := Mark{Pending: Pending{Slot: binary.LittleEndian.Uint32(meta[4:]), Gen: binary.LittleEndian.Uint32(meta[8:])},
		Seq: binary.LittleEndian.Uint32(meta[12:])}
	clear(meta)
	return m
}

func (p *Program) release(slot uint32) {
	p.mu.Lock()
	p.free = append(p.free, slot)
	p.mu.Unlock()
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Usage is what the fast path did with an offered flow.
type Usage struct {
	LastSeen int64     // datapath clock of the last packet taken; 0 if none
	Expires  int64     // Conn.Expires as the fast path keeps it
	Packets  [2]uint64 // packets taken per direction (Original, Reply)
	Bytes    [2]uint64 // their IP lengths
}

func (p *Program) usage(v *bpfFlowValue, u *Usage) {
	*u = Usage{Expires: p.GoTime(v.Expires), Packets: v.Packets, Bytes: v.Bytes}
	if v.LastSeen != 0 {
		u.LastSeen = p.GoTime(v.LastSeen)
	}
}

// Peek reads e's fast-path usage without taking it back. ok is false when
// e is not offered.
func (p *Program) Peek(e *flowtable.Entry, u *Usage) (ok bool, err error) {
	k := e.Key()
	mk := mapKey(&k)
	// The program updates the value holding the flow's lock
	// (revoked[slot] | busy), not a bpf_spin_lock, so there is no locked
	// read: two successive reads whose usage fields agree are a
	// consistent snapshot (Packets and Bytes grow with every packet
	// taken, LastSeen never goes back, Expires does not come back to a
	// value it left: a read torn by an update differs from the next).
	// A flow so busy that no two reads agree is read under its lock,
	// taken from here for the length of one lookup: frames arriving then
	// spin, and after LOCK_TRIES (1024) attempts go to the slow path (PuntBusy).
	var a, b bpfFlowValue
	read := func(v *bpfFlowValue) (bool, error) {
		if err := p.flows.Lookup(&mk, v); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return false, nil
			}
			return false, fmt.Errorf("offload: peek: %w", err)
		}
		return true, nil
	}
	if ok, err := read(&a); !ok || err != nil {
		return ok, err
	}
	for range 4 {
		if ok, err := read(&b); !ok || err != nil {
			return ok, err
		}
		if a.Gen == b.Gen && a.Slot == b.Slot && a.LastSeen == b.LastSeen && a.Expires == b.Expires &&
			a.Packets == b.Packets && a.Bytes == b.Bytes {
			p.usage(&b, u)
			return true, nil
		}
		a = b
	}
	if !p.rev.lock(a.Slot, uint64(a.Gen)) {
		return false, nil // taken back meanwhile
	}
	ok, err = read(&b)
	p.rev.unlock(a.Slot, uint64(a.Gen))
	if !ok || err != nil || b.Gen != a.Gen {
		return false, err
	}
	p.usage(&b, u)
	return true, nil
}

// TakeBack takes e out of the fast path: after it returns no packet of e
// is judged by the program, and e.Conn holds the state the fast path left
// (window data, last_*, retrans, Expires). ok is false when e was not
// offered (e is untouched then).
func (p *Program) TakeBack(e *flowtable.Entry) (ok bool, err error) {
	var u Usage
	return p.TakeBackUsage(e, &u)
}

// TakeBackUsage is TakeBack that also returns the flow's fast-path usage.
func (p *Program) TakeBackUsage(e *flowtable.Entry, u *Usage) (ok bool, err error) {
	k := e.Key()
	mk := mapKey(&k)
	var v bpfFlowValue
	// The slot is constant while the flow is offered, and only the
	// caller offers and takes back: an unlocked read finds it.
	if err := p.flows.Lookup(&mk, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("offload: take back: %w", err)
	}
	slot := v.Slot
	// Revoke: a pending offer is cancelled (the program took nothing, e
	// is the state); an active flow's generation is swapped for 0 once
	// no program holds its lock, and no program writes the value after
	// that (see the package comment).
	if p.rev.revoke(slot, uint64(v.Gen)) {
		if err := p.flows.Delete(&mk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, fmt.Errorf("offload: take back: delete: %w", err)
		}
		p.release(slot)
		*u = Usage{Expires: e.Conn.Expires}
		return true, nil
	}
	if err := p.flows.Lookup(&mk, &v); err != nil {
		return false, fmt.Errorf("offload: take back: read: %w", err)
	}
	if err := p.flows.Delete(&mk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, fmt.Errorf("offload: take back: delete: %w", err)
	}
	p.release(slot)
	p.usage(&v, u)
	c := &e.Conn
	c.Expires = u.Expires
	if k.Proto == packet.ProtoTCP {
		tc := &c.TCP
		for i := range 2 {
			tc.Peer[i].End, tc.Peer[i].MaxEnd, tc.Peer[i].MaxWin = v.Peer[i].End, v.Peer[i].Maxend, v.Peer[i].Maxwin
			tc.Peer[i].MaxAck, tc.Peer[i].Scale, tc.Peer[i].Flags = v.Peer[i].Maxack, v.Peer[i].Scale, v.Peer[i].Flags
		}
		tc.LastSeq, tc.LastAck, tc.LastEnd, tc.LastWin = v.LastSeq, v.LastAck, v.LastEnd, v.LastWin
		tc.LastDir, tc.LastIndex, tc.Retrans = statemachine.Dir(v.LastDir), v.LastIndex, v.Retrans
	}
	return true, nil
}

// PortStats are the fast path's counters of one ingress port, summed over
// CPUs.
type PortStats struct {
	FastPackets uint64 // frames forwarded to the other port
	FastBytes   uint64 // their frame lengths
	Punts       [NumPuntReasons]uint64
	// RedirectErrors counts the frames of FastPackets the kernel dropped
	// after the program had redirected them: the egress port down, the
	// frame too long for its MTU, its driver refusing them (a veth whose
	// peer is down). Not counted when the kernel lacks BTF (logged at Load).
	RedirectErrors uint64
	// CsumCompleted counts the frames of FastPackets that came with a
	// partial checksum (packet.Packet.ChecksumPartial) and left with it
	// completed.
	CsumCompleted uint64
}

// Stats returns the counters of both ports (index PortA, PortB).
func (p *Program) Stats() ([2]PortStats, error) {
	var out [2]PortStats
	for port := range 2 {
		var per []bpfPortStats
		if err := p.stats.Lookup(uint32(port), &per); err != nil {
			return out, fmt.Errorf("offload: stats: %w", err)
		}
		for _, s := range per {
			out[port].FastPackets += s.FastPackets
			out[port].FastBytes += s.FastBytes
			for i := range out[port].Punts {
				out[port].Punts[i] += s.Punt[i]
			}
			out[port].CsumCompleted += s.CsumCompleted
		}
		var errs []uint64
		if err := p.redirErrs.Lookup(uint32(port), &errs); err != nil {
			return out, fmt.Errorf("offload: stats: %w", err)
		}
		for _, n := range errs {
			out[port].RedirectErrors += n
		}
	}
	return out, nil
}

// Tracing reports whether the redirects the kernel drops after the
// program are counted (PortStats.RedirectErrors).
func (p *Program) Tracing() bool { return len(p.tracers) == 2 }
