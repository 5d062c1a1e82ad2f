package main

import (
	"flag"
	"fmt"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// conntrackFlags are the flags shared by every command that runs the
// pipeline: rules, tracking switches, every timeout under its sysctl name,
// and the table size.
type conntrackFlags struct {
	rules, rules6  string
	ipsets         fileList
	windowTracking bool
	loose, liberal bool
	checksum       bool
	autoHelpers    bool
	nonIP          string
	maxFlows       int
	hashsize       int
	vlanZones      bool
	ct             statemachine.Config
	sysctls        map[string]*string
}

func addConntrackFlags(fs *flag.FlagSet, live bool) *conntrackFlags {
	cf := &conntrackFlags{ct: statemachine.DefaultConfig(), sysctls: map[string]*string{}}
	fs.StringVar(&cf.rules, "rules", "", "iptables-save file with the FORWARD (and raw) rules; default: accept everything")
	fs.StringVar(&cf.rules6, "rules6", "", "ip6tables-save file for IPv6 (default: --rules applies to both families)")
	fs.Var(&cf.ipsets, "ipsets", ipsetsHelp)
	fs.BoolVar(&cf.windowTracking, "tcp-window-tracking", true, "check TCP sequence numbers and windows (van Rooij); false: state table only")
	fs.BoolVar(&cf.loose, "tcp-loose", cf.ct.Loose, "pick up established TCP connections mid-stream (nf_conntrack_tcp_loose)")
	fs.BoolVar(&cf.liberal, "tcp-be-liberal", cf.ct.BeLiberal, "accept out-of-window TCP packets (nf_conntrack_tcp_be_liberal)")
	fs.BoolVar(&cf.checksum, "checksum", live, "verify TCP/UDP/ICMP checksums; bad ones are INVALID (nf_conntrack_checksum). Off for captures from offloading NICs")
	fs.BoolVar(&cf.autoHelpers, "auto-helpers", false, "attach helpers by classic port: ftp 21, irc 6667, tftp 69, amanda 10080 (off, as in current kernels; use -j CT --helper rules)")
	fs.IntVar(&cf.maxFlows, "max-flows", 0, "most tracked connections (nf_conntrack_max); default from RAM like the kernel")
	fs.IntVar(&cf.hashsize, "hashsize", 0, "hash buckets (nf_conntrack_buckets); default from RAM like the kernel")
	fs.BoolVar(&cf.vlanZones, "vlan-zones", true, vlanZonesHelp)
	if live {
		fs.StringVar(&cf.nonIP, "non-ip", "forward", "non-IP frames (ARP, LLDP, STP): forward or drop")
	} else {
		cf.nonIP = "forward"
	}
	for _, name := range statemachine.SysctlNames() {
		v := new(string)
		cf.sysctls[name] = v
		fs.StringVar(v, name, cf.ct.Get(name), "sysctl net.netfilter."+name)
	}
	return cf
}

// settings builds the pipeline settings and table config from the flags.
func (cf *conntrackFlags) settings(ports [2]string) (*bridge.Settings, flowtable.Config, error) {
	s := bridge.DefaultSettings()
	s.Conntrack = statemachine.DefaultConfig()
	for name, v := range cf.sysctls {
		if *v == s.Conntrack.Get(name) {
			continue
		}
		if err := s.Conntrack.Set(name, *v); err != nil {
			return nil, flowtable.Config{}, fmt.Errorf("--%s=%s: %w", name, *v, err)
		}
	}
	// The friendly switches win over their sysctl spellings only when set
	// away from the default.
	def := statemachine.DefaultConfig()
	if cf.loose != def.Loose {
		s.Conntrack.Loose = cf.loose
	}
	if cf.liberal != def.BeLiberal {
		s.Conntrack.BeLiberal = cf.liberal
	}
	s.Conntrack.WindowTracking = cf.windowTracking
	s.VerifyChecksum = cf.checksum
	s.AutoHelpers = cf.autoHelpers
	switch cf.nonIP {
	case "forward":
		s.NonIP = bridge.Accept
	case "drop":
		s.NonIP = bridge.Drop
	default:
		return nil, flowtable.Config{}, fmt.Errorf("--non-ip must be forward or drop, got %q", cf.nonIP)
	}
	if cf.rules != "" || cf.rules6 != "" || len(cf.ipsets) > 0 {
		rs, err := rules.LoadFilesSets(cf.rules, cf.rules6, cf.ipsets, ports)
		if err != nil {
			return nil, flowtable.Config{}, err
		}
		s.Rules = rs
	}
	if cf.maxFlows < 0 || cf.hashsize < 0 {
		return nil, flowtable.Config{}, fmt.Errorf("--max-flows and --hashsize must not be negative")
	}
	return s, flowtable.Config{MaxEntries: cf.maxFlows, Buckets: cf.hashsize, IgnoreVLAN: !cf.vlanZones}, nil
}

// vlanZonesHelp is the help text of --vlan-zones, shared by run, replay,
// demo and conformance.
const vlanZonesHelp = "the VLAN id is part of the connection key (a zone): the same tuple on two VLANs is two connections, " +
	"the safe choice on a trunk. false: the kernel's keys, VLAN ignored; use it where one direction is tagged and the other not " +
	"(a capture point or trunk that tags one way), or every connection splits in two"
