package lab

import (
	"context"
	"fmt"
	"net/netip"
)

// Parallel is a second bridge namespace on a path parallel to the lab's,
// for a pair of bridges (one active, one standing by) and the sync link
// between them (AddParallel):
//
//	                 PortA [BridgeNS] PortB
//	[left] LeftSwitch                      RightSwitch [right]
//	                 PortA [NS]       PortB
//	                 SyncIf (BridgeNS) <-veth-> SyncIf (NS)
//
// Each host's address moves from its veth to a Linux bridge (the host's
// "switch") joining both paths. The switches forget every MAC address at
// once (ageing 0: they flood like hubs), so frames take whichever path
// forwards after a failover without waiting for a learned address to age.
type Parallel struct {
	// NS is the second bridge namespace; PortA and PortB are its ports
	// (PortA faces left). They are created administratively down.
	NS           string
	PortA, PortB string
	// PeerA and PeerB are the peers of PortA and PortB, ports of the
	// hosts' switches (in LeftNS, RightNS).
	PeerA, PeerB string
	// LeftSwitch and RightSwitch are the hosts' bridges (in LeftNS,
	// RightNS), holding the hosts' addresses and MACs.
	LeftSwitch, RightSwitch string
	// SyncIf[0] is in BridgeNS with SyncAddr[0], SyncIf[1] in NS with
	// SyncAddr[1] (a /30 of 198.19.255.0/24).
	SyncIf   [2]string
	SyncAddr [2]netip.Addr
}

// Sync link addresses.
var (
	SyncIPv4  = netip.MustParsePrefix("198.19.255.1/30")
	SyncIPv4b = netip.MustParsePrefix("198.19.255.2/30")
)

// AddParallel builds the second path and the sync link. The lab must have
// been built with Mode None, without IPv6, VLAN or Bare. Close removes it
// with the rest.
func (l *Lab) AddParallel(ctx context.Context) (*Parallel, error) {
	o := l.Opts
	if o.Mode != None || o.IPv6 || o.VLAN != 0 || o.Bare {
		return nil, fmt.Errorf("%w: a parallel path needs Mode None without IPv6, VLAN or Bare", ErrUnsupported)
	}
	p := &Parallel{
		NS:    l.Prefix + "-br2",
		PortA: l.Prefix + "-a2", PortB: l.Prefix + "-b2",
		PeerA: l.Prefix + "-l2", PeerB: l.Prefix + "-r2",
		LeftSwitch: l.Prefix + "-lsw", RightSwitch: l.Prefix + "-rsw",
		SyncIf:   [2]string{l.Prefix + "-s", l.Prefix + "-s2"},
		SyncAddr: [2]netip.Addr{SyncIPv4.Addr(), SyncIPv4b.Addr()},
	}
	l.extraNS = append(l.extraNS, p.NS)
	if err := run(ctx, "ip", "netns", "add", p.NS); err != nil {
		return nil, err
	}
	if err := run(ctx, "ip", "-n", p.NS, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	if err := sysctl(ctx, p.NS, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return nil, err
	}
	q := fmt.Sprint(o.Queues)
	for _, h := range []struct {
		ns, hostIf, sw, port, peer string
		addr                       netip.Prefix
		mac                        string
	}{
		{l.LeftNS, l.LeftIf, p.LeftSwitch, p.PortA, p.PeerA, LeftIPv4, l.LeftMAC.String()},
		{l.RightNS, l.RightIf, p.RightSwitch, p.PortB, p.PeerB, RightIPv4, l.RightMAC.String()},
	} {
		steps := [][]string{
			{"-n", h.ns, "link", "add", h.sw, "type", "bridge", "stp_state", "0", "forward_delay", "0",
				"mcast_snooping", "0", "ageing_time", "0"},
			{"-n", h.ns, "link", "set", h.sw, "address", h.mac},
			{"-n", h.ns, "addr", "del", h.addr.String(), "dev", h.hostIf},
			{"-n", h.ns, "link", "set", h.hostIf, "master", h.sw},
			{"-n", h.ns, "addr", "add", h.addr.String(), "dev", h.sw},
			{"-n", p.NS, "link", "add", h.port, "numtxqueues", q, "numrxqueues", q, "type", "veth",
				"peer", "name", h.peer, "netns", h.ns, "numtxqueues", q, "numrxqueues", q},
			{"-n", h.ns, "link", "set", h.peer, "master", h.sw},
			{"-n", h.ns, "link", "set", h.peer, "up"},
			{"-n", h.ns, "link", "set", h.sw, "up"},
		}
		for _, s := range steps {
			if err := run(ctx, "ip", s...); err != nil {
				return nil, err
			}
		}
		if o.OffloadsOff {
			if err := offloadsOff(ctx, p.NS, h.port); err != nil {
				return nil, err
			}
			if err := offloadsOff(ctx, h.ns, h.peer); err != nil {
				return nil, err
			}
		}
	}
	for _, s := range [][]string{
		{"-n", l.BridgeNS, "link", "add", p.SyncIf[0], "type", "veth", "peer", "name", p.SyncIf[1], "netns", p.NS},
		{"-n", l.BridgeNS, "addr", "add", SyncIPv4.String(), "dev", p.SyncIf[0]},
		{"-n", p.NS, "addr", "add", SyncIPv4b.String(), "dev", p.SyncIf[1]},
		{"-n", l.BridgeNS, "link", "set", p.SyncIf[0], "up"},
		{"-n", p.NS, "link", "set", p.SyncIf[1], "up"},
	} {
		if err := run(ctx, "ip", s...); err != nil {
			return nil, err
		}
	}
	return p, nil
}
