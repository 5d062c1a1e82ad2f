package bridge

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/statewire/statewire/offload"
)

// OffloadMode selects the XDP fast path (package offload) of a Datapath.
type OffloadMode uint8

const (
	// OffloadOff: every frame goes to the AF_XDP sockets (the program
	// loaded slow-only: it parses nothing). The zero value.
	OffloadOff OffloadMode = iota
	// OffloadAuto: the fast path when it loads and attaches in native mode
	// and every port can take XDP redirects (on veth: its peer has NAPI,
	// GRO on or an XDP program); otherwise off, and the log says why.
	OffloadAuto
	// OffloadOn: the fast path, or Start fails saying why.
	OffloadOn
)

var offloadNames = [...]string{"off", "auto", "on"}

func (m OffloadMode) String() string {
	if int(m) < len(offloadNames) {
		return offloadNames[m]
	}
	return fmt.Sprintf("offload(%d)", int(m))
}

// ParseOffloadMode parses "off", "auto" or "on".
func ParseOffloadMode(s string) (OffloadMode, error) {
	for i, n := range offloadNames {
		if s == n {
			return OffloadMode(i), nil
		}
	}
	return OffloadOff, fmt.Errorf("offload mode %q: must be auto, on or off", s)
}

// FastStats are the XDP fast path's counters (offload.Program.Stats), by
// ingress port. Fast-path frames never reach the AF_XDP sockets: they are
// not in QueueStats and not in CheckConservation's sums, which count what
// the sockets received; FastPackets counts them beside those.
type FastStats struct {
	On    bool                 // the fast path is running
	Ports [2]offload.PortStats // by ingress port
	// FailOpen counts the frames the program forwarded unjudged
	// (--fail-mode=open) because no worker was registered, by ingress
	// port; the map is adopted across restarts, so this includes the
	// frames of the gaps between processes.
	FailOpen [2]offload.FailOpenStats
}

// Packets returns the frames the fast path forwarded that arrived on p.
func (f *FastStats) Packets(p Port) uint64 { return f.Ports[p&1].FastPackets }

// Offload reports whether the datapath runs the XDP fast path, and, when
// it does not although asked (auto), why.
func (dp *Datapath) Offload() (on bool, why string) {
	return dp.fastOn, dp.fastWhy
}

func pinDirErr(name string) error {
	_, err := offload.PinDir(name)
	return err
}

// pinDir is the bridge's bpffs directory, "" without a name.
func (dp *Datapath) pinDir() string {
	if dp.cfg.Name == "" {
		return ""
	}
	d, err := offload.PinDir(dp.cfg.Name)
	if err != nil {
		return ""
	}
	return d
}

// openProgram loads the XDP program (fast: it may be offered flows; else
// slow-only), adopting the maps an earlier run of the same name pinned,
// and points its DEVMAP at the ports; open registers the sockets and
// attaches it.
func (dp *Datapath) openProgram(idx [2]int, fast bool) error {
	flows := dp.cfg.OffloadFlows
	if flows == 0 {
		flows = dp.table.Config().MaxEntries
	}
	pin := ""
	if dp.cfg.Name != "" {
		var err error
		if pin, err = offload.PinDir(dp.cfg.Name); err != nil {
			return err
		}
	}
	prog, err := offload.Load(offload.Options{
		MaxFlows: flows, Queues: offload.DefaultQueues, Now: dp.Now, Logf: dp.cfg.Logf,
		IgnoreVLAN: dp.table.Config().IgnoreVLAN,
		SlowOnly:   !fast, Pin: pin, FailOpen: dp.cfg.FailOpen,
	})
	if err != nil {
		if fast {
			return fmt.Errorf("load the XDP fast path: %w", err)
		}
		return fmt.Errorf("load the XDP program: %w", err)
	}
	dp.fast = prog
	dp.failStats.Store(prog)
	if err := prog.SetPorts(idx[0], idx[1]); err != nil {
		return err
	}
	return nil
}

// checkFailOpen refuses --fail-mode=open where it cannot work or would let
// frames through unjudged while statewire runs: a veth port whose peer
// cannot take XDP redirects (the program could not forward), or a port
// with receive queues no worker serves (their frames would find no socket
// and be forwarded unjudged).
func (dp *Datapath) checkFailOpen(names [2]string) error {
	for _, n := range names {
		if err := checkRedirect(n); err != nil {
			return fmt.Errorf("--fail-mode=open forwards frames with XDP redirects while statewire is down: %w", err)
		}
		l, err := netlink.LinkByName(n)
		if err != nil {
			return err
		}
		if rx := l.Attrs().NumRxQueues; rx > dp.cfg.Queues {
			return fmt.Errorf("--fail-mode=open: %s has %d receive queues and --queues is %d: frames on queues %d..%d would pass unjudged "+
				"while statewire runs (set --queues %d, or ethtool -L %s combined %d)", n, rx, dp.cfg.Queues, dp.cfg.Queues, rx-1, rx, n, dp.cfg.Queues)
		}
	}
	return nil
}

// checkRedirect reports why XDP redirects into ifname would fail, or nil:
// a veth delivers a redirected frame only when its peer runs NAPI (GRO on,
// or an XDP program attached to the peer). The peer is looked for in this
// namespace and in the named ones (ip netns); a peer that cannot be found
// cannot be checked, and that is an error too.
func checkRedirect(ifname string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	if l.Type() != "veth" {
		return nil
	}
	peer := l.Attrs().ParentIndex
	if peer == 0 {
		return fmt.Errorf("%s is a veth whose peer netlink does not name: cannot check that XDP redirects into it work", ifname)
	}
	ns, err := peerNamespace(l.Attrs().NetNsID)
	if err != nil {
		return fmt.Errorf("%s is a veth; its peer's namespace (nsid %d): %w", ifname, l.Attrs().NetNsID, err)
	}
	defer ns.Close()
	var napi bool
	var pname string
	err = inNamespace(ns, func() error {
		pl, err := netlink.LinkByIndex(peer)
		if err != nil {
			return err
		}
		pname = pl.Attrs().Name
		if x := pl.Attrs().Xdp; x != nil && x.Attached {
			napi = true
			return nil
		}
		napi, err = groOn(pname)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s is a veth; checking its peer: %w", ifname, err)
	}
	if !napi {
		return fmt.Errorf("%s is a veth whose peer %s has neither GRO on nor an XDP program: frames redirected into %s would be dropped (ethtool -K %s gro on)",
			ifname, pname, ifname, pname)
	}
	return nil
}

// peerNamespace returns the namespace of nsid as seen from the calling
// thread's (-1: this one).
func peerNamespace(nsid int) (netns.NsHandle, error) {
	if nsid < 0 {
		return netns.Get()
	}
	paths, _ := filepath.Glob("/var/run/netns/*")
	for _, p := range paths {
		h, err := netns.GetFromPath(p)
		if err != nil {
			continue
		}
		if id, err := netlink.GetNetNsIdByFd(int(h)); err == nil && id == nsid {
			return h, nil
		}
		h.Close()
	}
	return netns.None(), errors.New("not found among the named namespaces (ip netns)")
}

// inNamespace runs fn on this OS thread switched into ns.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cur, err := netns.Get()
	if err != nil {
		return err
	}
	defer cur.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	ferr := fn()
	if err := netns.Set(cur); err != nil {
		panic(fmt.Sprintf("bridge: cannot return to the datapath's network namespace: %v", err))
	}
	return ferr
}

// groOn reads ifname's GRO flag (ETHTOOL_GGRO) in the calling thread's
// namespace.
func groOn(ifname string) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	const ethtoolGGRO = 0x2b
	val := struct{ cmd, data uint32 }{cmd: ethtoolGGRO}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data uintptr
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = uintptr(unsafe.Pointer(&val))
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return false, fmt.Errorf("ETHTOOL_GGRO %s: %w", ifname, errno)
	}
	runtime.KeepAlive(&val)
	return val.data != 0, nil
}
