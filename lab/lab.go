package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Mode says what connects the two bridge-side ports.
type Mode int

const (
	// None leaves PortA and PortB unconnected in the bridge namespace, for
	// statewire to attach its AF_XDP sockets to.
	None Mode = iota
	// KernelBridge enslaves PortA and PortB to a Linux bridge.
	KernelBridge
	// KernelBridgeConntrack is KernelBridge plus br_netfilter
	// (bridge-nf-call-iptables/ip6tables=1) and an nftables ruleset
	// (Options.Ruleset, default DefaultRuleset) in the bridge namespace.
	KernelBridgeConntrack
	// XDPRedirect is reserved for an XDP program redirecting PortA<->PortB;
	// New returns ErrUnsupported for it today.
	XDPRedirect
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case None:
		return "none"
	case KernelBridge:
		return "kernel-bridge"
	case KernelBridgeConntrack:
		return "kernel-bridge-conntrack"
	case XDPRedirect:
		return "xdp-redirect"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// ErrUnsupported is returned by New for modes that are not built yet, and
// (wrapped) when the running kernel lacks a device type the options need,
// e.g. VLAN without CONFIG_VLAN_8021Q.
var ErrUnsupported = errors.New("lab: unsupported")

// Options configure New. The zero value is a None-mode lab with one queue,
// MTU 1500, IPv4 only, untagged.
type Options struct {
	// Queues is the number of TX and RX queues of every veth (default 1).
	Queues int
	// MTU of every veth, 0 for the kernel default (1500).
	MTU int
	// IPv6 adds 2001:2::1/64 and 2001:2::2/64 (nodad). Without it IPv6 is
	// disabled on the hosts, so they send no ND/MLD at all.
	IPv6 bool
	// VLAN, when 1..4094, adds a tagged subinterface on both hosts with
	// 198.18.1.1/24 and 198.18.1.2/24 (and 2001:2:0:1::1,2/64 with IPv6).
	VLAN int
	// Bare leaves the hosts without any address and with IPv6 disabled, so
	// they never send a frame of their own (for pcap replay).
	Bare bool
	// Mode selects what sits between PortA and PortB.
	Mode Mode
	// Ruleset is the nftables ruleset loaded (nft -f) in the bridge
	// namespace in KernelBridgeConntrack mode; "" means DefaultRuleset.
	// The strings {PortA} and {PortB} are replaced by the port names.
	Ruleset string
	// Sysctls are extra `key=value` sysctls set in the bridge namespace
	// after the ruleset is loaded (conntrack settings live per namespace).
	Sysctls []string
	// OffloadsOff turns checksum offload, TSO, GSO and GRO off on every
	// veth, so that every frame looks like a frame on a cable (see the
	// package doc). Without it the veths keep the kernel's defaults, as
	// a first-time user's do: the hosts hand over TCP and UDP frames with
	// partial checksums (CHECKSUM_PARTIAL), which statewire completes.
	OffloadsOff bool
}

// DefaultRuleset is the KernelBridgeConntrack ruleset: a stateful firewall
// equivalent to statewire's default rules. Connections may be opened from
// PortA (left) only; IPv6 neighbour discovery, which conntrack leaves
// UNTRACKED, passes both ways. With br_netfilter the inet forward hook sees the bridge
// as the input device, not the port, so the port is recorded as a packet
// mark in the bridge family first.
const DefaultRuleset = `table bridge swport {
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		iifname "{PortA}" meta mark set 1
		iifname "{PortB}" meta mark set 2
	}
}
table inet swfw {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
		ct state new meta mark 1 accept
	}
}
`

// Addresses of the hosts, one L2 segment through the bridge namespace.
var (
	LeftIPv4      = netip.MustParsePrefix("198.18.0.1/24")
	RightIPv4     = netip.MustParsePrefix("198.18.0.2/24")
	LeftIPv6      = netip.MustParsePrefix("2001:2::1/64")
	RightIPv6     = netip.MustParsePrefix("2001:2::2/64")
	LeftVLANIPv4  = netip.MustParsePrefix("198.18.1.1/24")
	RightVLANIPv4 = netip.MustParsePrefix("198.18.1.2/24")
	LeftVLANIPv6  = netip.MustParsePrefix("2001:2:0:1::1/64")
	RightVLANIPv6 = netip.MustParsePrefix("2001:2:0:1::2/64")
)

// Lab is one set of namespaces and veths. The string fields are names to
// pass to Do, Command, `ip netns exec` or `ip -n`.
type Lab struct {
	// Prefix is "sw" plus six hex digits, common to every name below.
	Prefix string
	// LeftNS, RightNS and BridgeNS are the namespace names.
	LeftNS, RightNS, BridgeNS string
	// LeftIf and RightIf are the host ends of the veths (in LeftNS, RightNS).
	LeftIf, RightIf string
	// LeftVLANIf and RightVLANIf are the tagged subinterfaces ("" without VLAN).
	LeftVLANIf, RightVLANIf string
	// PortA and PortB are the bridge-side ends (in BridgeNS); PortA faces left.
	PortA, PortB string
	// BridgeIf is the Linux bridge in BridgeNS ("" in mode None).
	BridgeIf string
	// LeftMAC and RightMAC are the hosts' MAC addresses.
	LeftMAC, RightMAC net.HardwareAddr
	// Opts are the options the lab was built with (defaults filled in).
	Opts Options

	extraNS []string // namespaces AddParallel made
	closed  bool
}

// NewT builds a lab for a test and removes it in t.Cleanup, which also runs
// after t.Fatal or a panic in the test body, and fails t if a namespace of
// the lab is still there afterwards (something held it). It calls
// RequireRoot first, so unprivileged runs skip (or fail in CI).
func NewT(t testing.TB, opts Options) *Lab {
	t.Helper()
	RequireRoot(t)
	l, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
		if err := l.checkGone(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// New builds a lab. On error everything made so far is removed. The caller
// must Close the lab.
func New(ctx context.Context, opts Options) (*Lab, error) {
	if opts.Queues <= 0 {
		opts.Queues = 1
	}
	if opts.VLAN < 0 || opts.VLAN > 4094 {
		return nil, fmt.Errorf("lab: VLAN %d out of range 0..4094", opts.VLAN)
	}
	if opts.Mode == XDPRedirect {
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, opts.Mode)
	}
	if opts.Mode < None || opts.Mode > XDPRedirect {
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, opts.Mode)
	}
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	p := "sw" + hex.EncodeToString(rnd[:])
	l := &Lab{
		Prefix:   p,
		LeftNS:   p + "-left",
		RightNS:  p + "-right",
		BridgeNS: p + "-br",
		LeftIf:   p + "-l",
		RightIf:  p + "-r",
		PortA:    p + "-a",
		PortB:    p + "-b",
		Opts:     opts,
	}
	if err := writeOwner(p); err != nil {
		return nil, err
	}
	if err := l.build(ctx); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = fmt.Errorf("%w (and cleanup: %v)", err, cerr)
		}
		return nil, err
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context) error {
	o := l.Opts
	for _, ns := range []string{l.LeftNS, l.RightNS, l.BridgeNS} {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		if err := run(ctx, "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	// Sysctls before the links exist, so the "default" values apply to them.
	// Bridge side: no IPv6 on the ports or the bridge (they have no
	// addresses and must not send RS/MLD/DAD).
	if err := sysctl(ctx, l.BridgeNS,
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return err
	}
	for _, ns := range []string{l.LeftNS, l.RightNS} {
		var kv []string
		if o.IPv6 && !o.Bare {
			// Keep IPv6 but quiet: no DAD, no router solicitations, no RA,
			// no link-local address (so no MLD for its solicited-node group).
			kv = []string{
				"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
				"net.ipv6.conf.all.dad_transmits=0", "net.ipv6.conf.default.dad_transmits=0",
				"net.ipv6.conf.all.router_solicitations=0", "net.ipv6.conf.default.router_solicitations=0",
				"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0",
				"net.ipv6.conf.default.addr_gen_mode=1",
			}
		} else {
			kv = []string{"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"}
		}
		if err := sysctl(ctx, ns, kv...); err != nil {
			return err
		}
	}
	q := strconv.Itoa(o.Queues)
	for _, v := range []struct{ port, host, hostNS string }{
		{l.PortA, l.LeftIf, l.LeftNS},
		{l.PortB, l.RightIf, l.RightNS},
	} {
		// Made directly inside the namespaces: nothing ever appears in the
		// root namespace, so a kill between steps leaves only namespaces.
		args := []string{"-n", l.BridgeNS, "link", "add", v.port,
			"numtxqueues", q, "numrxqueues", q}
		if o.MTU > 0 {
			args = append(args, "mtu", strconv.Itoa(o.MTU))
		}
		args = append(args, "type", "veth", "peer", "name", v.host, "netns", v.hostNS,
			"numtxqueues", q, "numrxqueues", q)
		if o.MTU > 0 {
			args = append(args, "mtu", strconv.Itoa(o.MTU))
		}
		if err := run(ctx, "ip", args...); err != nil {
			return err
		}
		if o.OffloadsOff {
			if err := offloadsOff(ctx, l.BridgeNS, v.port); err != nil {
				return err
			}
			if err := offloadsOff(ctx, v.hostNS, v.host); err != nil {
				return err
			}
		}
	}
	if o.Mode == KernelBridge || o.Mode == KernelBridgeConntrack {
		l.BridgeIf = l.Prefix + "-br"
		// STP off and forward delay 0: ports forward at once and send no
		// BPDUs; no multicast snooping, so the bridge sends no queries and
		// floods multicast like a hub.
		if err := run(ctx, "ip", "-n", l.BridgeNS, "link", "add", l.BridgeIf, "type", "bridge",
			"stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"); err != nil {
			return err
		}
		for _, port := range []string{l.PortA, l.PortB} {
			if err := run(ctx, "ip", "-n", l.BridgeNS, "link", "set", port, "master", l.BridgeIf); err != nil {
				return err
			}
		}
		if err := run(ctx, "ip", "-n", l.BridgeNS, "link", "set", l.BridgeIf, "up"); err != nil {
			return err
		}
	}
	if o.Mode == KernelBridgeConntrack {
		if err := l.loadConntrack(ctx); err != nil {
			return err
		}
	}
	for _, port := range []string{l.PortA, l.PortB} {
		if err := run(ctx, "ip", "-n", l.BridgeNS, "link", "set", port, "up"); err != nil {
			return err
		}
	}
	for _, h := range []struct {
		ns, ifc  string
		v4, v6   netip.Prefix
		vv4, vv6 netip.Prefix
		vlanIf   *string
	}{
		{l.LeftNS, l.LeftIf, LeftIPv4, LeftIPv6, LeftVLANIPv4, LeftVLANIPv6, &l.LeftVLANIf},
		{l.RightNS, l.RightIf, RightIPv4, RightIPv6, RightVLANIPv4, RightVLANIPv6, &l.RightVLANIf},
	} {
		if err := l.hostAddrs(ctx, h.ns, h.ifc, h.v4, h.v6); err != nil {
			return err
		}
		if err := run(ctx, "ip", "-n", h.ns, "link", "set", h.ifc, "up"); err != nil {
			return err
		}
		if o.VLAN > 0 {
			vif := h.ifc + "." + strconv.Itoa(o.VLAN)
			if err := run(ctx, "ip", "-n", h.ns, "link", "add", "link", h.ifc, "name", vif,
				"type", "vlan", "id", strconv.Itoa(o.VLAN)); err != nil {
				if strings.Contains(err.Error(), "Unknown device type") {
					return fmt.Errorf("%w: kernel has no 802.1Q VLAN devices: %v", ErrUnsupported, err)
				}
				return err
			}
			*h.vlanIf = vif
			if err := l.hostAddrs(ctx, h.ns, vif, h.vv4, h.vv6); err != nil {
				return err
			}
			if err := run(ctx, "ip", "-n", h.ns, "link", "set", vif, "up"); err != nil {
				return err
			}
		}
	}
	var err error
	if l.LeftMAC, err = l.mac(l.LeftNS, l.LeftIf); err != nil {
		return err
	}
	if l.RightMAC, err = l.mac(l.RightNS, l.RightIf); err != nil {
		return err
	}
	return nil
}

func (l *Lab) hostAddrs(ctx context.Context, ns, ifc string, v4, v6 netip.Prefix) error {
	if l.Opts.Bare {
		return nil
	}
	if err := run(ctx, "ip", "-n", ns, "addr", "add", v4.String(), "dev", ifc); err != nil {
		return err
	}
	if l.Opts.IPv6 {
		if err := run(ctx, "ip", "-n", ns, "addr", "add", v6.String(), "dev", ifc, "nodad"); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) loadConntrack(ctx context.Context) error {
	// br_netfilter's switches are per namespace since Linux 5.3; they make
	// bridged IPv4/IPv6 (and single-tagged VLAN) frames traverse the inet
	// hooks, where conntrack and the ruleset see them.
	if err := sysctl(ctx, l.BridgeNS,
		"net.bridge.bridge-nf-call-iptables=1",
		"net.bridge.bridge-nf-call-ip6tables=1",
		"net.bridge.bridge-nf-filter-vlan-tagged=1"); err != nil {
		return fmt.Errorf("%w (is br_netfilter loaded?)", err)
	}
	rs := l.Opts.Ruleset
	if rs == "" {
		rs = DefaultRuleset
	}
	rs = strings.NewReplacer("{PortA}", l.PortA, "{PortB}", l.PortB).Replace(rs)
	if err := l.LoadRuleset(ctx, rs); err != nil {
		return err
	}
	if len(l.Opts.Sysctls) > 0 {
		if err := sysctl(ctx, l.BridgeNS, l.Opts.Sysctls...); err != nil {
			return err
		}
	}
	return nil
}

// LoadRuleset replaces the bridge namespace's nftables ruleset with rs.
func (l *Lab) LoadRuleset(ctx context.Context, rs string) error {
	cmd := l.CommandContext(ctx, l.BridgeNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader("flush ruleset\n" + rs)
	return runCmd(cmd)
}

func (l *Lab) mac(ns, ifc string) (net.HardwareAddr, error) {
	var hw net.HardwareAddr
	err := l.Do(ns, func() error {
		ifi, err := net.InterfaceByName(ifc)
		if err != nil {
			return err
		}
		hw = ifi.HardwareAddr
		return nil
	})
	return hw, err
}

// Close removes the namespaces (which takes every veth, VLAN and bridge in
// them along), the bpffs pins of statewire runs named after the lab
// (PinRoot/PREFIX..., --fail-mode=open) and the ownership record. It is idempotent and tries every
// step even after an error.
func (l *Lab) Close() error {
	if l == nil || l.closed {
		return nil
	}
	l.closed = true
	ctx := context.Background()
	var errs []error
	for _, ns := range append([]string{l.LeftNS, l.RightNS, l.BridgeNS}, l.extraNS...) {
		if !nsExists(ns) {
			continue
		}
		if err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	// Links that could only be left behind in the root namespace if a
	// command was interrupted half-way.
	for _, ifc := range []string{l.LeftIf, l.RightIf, l.PortA, l.PortB} {
		if _, err := net.InterfaceByName(ifc); err == nil {
			if err := run(ctx, "ip", "link", "del", ifc); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// XDP programs a statewire run of this lab left pinned
	// (--fail-mode=open, --name PREFIX...): with the namespaces gone
	// their links are defunct, but the pins still hold programs and maps.
	errs = append(errs, removePins(l.Prefix))
	// State files of `statewire run` on the lab's ports (default name
	// PORTA-PORTB, or a --name built on the prefix): tens of MB each; and
	// the control sockets a killed run (kill -9) could not remove.
	for _, pattern := range []string{"*" + l.Prefix + "*.table", "*" + l.Prefix + "*.sock"} {
		if files, err := filepath.Glob(filepath.Join(stateDir, pattern)); err == nil {
			for _, f := range files {
				os.Remove(f)
			}
		}
	}
	removeOwner(l.Prefix)
	return errors.Join(errs...)
}

// stateDir is where `statewire run` keeps its state files by default
// (control.SocketDir; lab cannot import control).
const stateDir = "/run/statewire"
