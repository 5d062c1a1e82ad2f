package statemachine

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Timeouts are the per-state timeouts, named after the kernel sysctls
// (net.netfilter.nf_conntrack_*_timeout_*). Values are durations so that
// now + timeout is one addition on the hot path.
type Timeouts struct {
	TCPSynSent        time.Duration // nf_conntrack_tcp_timeout_syn_sent, 120 s
	TCPSynRecv        time.Duration // nf_conntrack_tcp_timeout_syn_recv, 60 s
	TCPEstablished    time.Duration // nf_conntrack_tcp_timeout_established, 432000 s
	TCPFinWait        time.Duration // nf_conntrack_tcp_timeout_fin_wait, 120 s
	TCPCloseWait      time.Duration // nf_conntrack_tcp_timeout_close_wait, 60 s
	TCPLastAck        time.Duration // nf_conntrack_tcp_timeout_last_ack, 30 s
	TCPTimeWait       time.Duration // nf_conntrack_tcp_timeout_time_wait, 120 s
	TCPClose          time.Duration // nf_conntrack_tcp_timeout_close, 10 s
	TCPSynSent2       time.Duration // no kernel sysctl (fixed 120 s); ours: statewire_tcp_timeout_syn_sent2
	TCPMaxRetrans     time.Duration // nf_conntrack_tcp_timeout_max_retrans, 300 s
	TCPUnacknowledged time.Duration // nf_conntrack_tcp_timeout_unacknowledged, 300 s
	UDP               time.Duration // nf_conntrack_udp_timeout, 30 s
	UDPStream         time.Duration // nf_conntrack_udp_timeout_stream, 120 s
	ICMP              time.Duration // nf_conntrack_icmp_timeout, 30 s
	ICMPv6            time.Duration // nf_conntrack_icmpv6_timeout, 30 s
	Generic           time.Duration // nf_conntrack_generic_timeout, 600 s
}

// Config is the tracker configuration. It is read on every packet and must
// not be changed while a worker uses it: publish a new Config instead.
type Config struct {
	Timeouts Timeouts
	// WindowTracking enables the sequence/window checks (default true).
	// When false every window-check failure is accepted, as with
	// BeLiberal, and the RST sequence checks are skipped: only the state
	// table decides.
	WindowTracking bool
	// Loose is nf_conntrack_tcp_loose: pick up connections from a
	// non-SYN first packet (default true).
	Loose bool
	// BeLiberal is nf_conntrack_tcp_be_liberal: window-check failures are
	// accepted (default false).
	BeLiberal bool
	// IgnoreInvalidRST is nf_conntrack_tcp_ignore_invalid_rst (default false).
	IgnoreInvalidRST bool
	// MaxRetrans is nf_conntrack_tcp_max_retrans (default 3).
	MaxRetrans uint8
}

// DefaultConfig returns the kernel's defaults (current mainline values).
func DefaultConfig() Config {
	c := Config{
		Timeouts: Timeouts{
			TCPSynSent:        120 * time.Second,
			TCPSynRecv:        60 * time.Second,
			TCPEstablished:    432000 * time.Second,
			TCPFinWait:        120 * time.Second,
			TCPCloseWait:      60 * time.Second,
			TCPLastAck:        30 * time.Second,
			TCPTimeWait:       120 * time.Second,
			TCPClose:          10 * time.Second,
			TCPSynSent2:       120 * time.Second,
			TCPMaxRetrans:     300 * time.Second,
			TCPUnacknowledged: 300 * time.Second,
			UDP:               30 * time.Second,
			UDPStream:         120 * time.Second,
			ICMP:              30 * time.Second,
			ICMPv6:            30 * time.Second,
			Generic:           600 * time.Second,
		},
		WindowTracking: true,
		Loose:          true,
		MaxRetrans:     3,
	}
	return c
}

// tcpTimeout returns the timeout of a TCP state (the kernel's
// timeouts[state]; NONE mirrors SYN_SENT as the kernel's timeouts[0] does).
func (c *Config) tcpTimeout(s TCPState) time.Duration {
	t := &c.Timeouts
	switch s {
	case TCPSynRecv:
		return t.TCPSynRecv
	case TCPEstablished:
		return t.TCPEstablished
	case TCPFinWait:
		return t.TCPFinWait
	case TCPCloseWait:
		return t.TCPCloseWait
	case TCPLastAck:
		return t.TCPLastAck
	case TCPTimeWait:
		return t.TCPTimeWait
	case TCPClose:
		return t.TCPClose
	case TCPSynSent2:
		return t.TCPSynSent2
	}
	return t.TCPSynSent
}

// ErrUnknownSysctl is returned by Set and Get for a name not in SysctlNames.
var ErrUnknownSysctl = errors.New("statemachine: unknown sysctl")

// ErrBadValue is returned by Set for a value that does not parse or is out
// of range.
var ErrBadValue = errors.New("statemachine: bad sysctl value")

type sysctlKind uint8

const (
	kindTimeout sysctlKind = iota
	kindBool
	kindUint8
)

type sysctl struct {
	name string
	kind sysctlKind
	dur  func(*Config) *time.Duration
	flag func(*Config) *bool
	u8   func(*Config) *uint8
}

var sysctls = []sysctl{
	{name: "nf_conntrack_tcp_timeout_syn_sent", dur: func(c *Config) *time.Duration { return &c.Timeouts.TCPSynSent }},
	{name: "nf_conntrack_tcp_timeout_syn_recv", dur: func(c *Config) *time.Duration { return &c.Timeouts.TCPSynRecv }},
	{name: "nf_conntrack_tcp_timeout_established", dur: func(c *Config) *time.Duration { return &c.Timeouts.TCPEstablished }},
	{name: "nf_conntrack_tcp_timeout_fin_wait", dur: func(c *Config) *time.Duration { return &c.Timeouts.TCPFinWait }},
	{name: "nf_conntrack_tcp_timeout_close_wait", dur: func(c *Config) *time.Duration { return &c.Timeouts.TCPCloseWait }},
	{name: "nf_conntrack_tcp_timeout_last_ack", dur: func(c *Config) *time.Duration { return &c.Timeouts.TCPLastAck }},
	{name: "nf_conntrack_tcp_timeout_time_wait", dur: func(c *Config) *time.Duration { return &c.Timeouts.TCPTimeWait }},
	{name: "nf_conntrack_tcp_timeout_close", dur: func(c *Config) *time.Duration { return &c.Timeouts.TCPClose }},
	{name: "nf_conntrack_tcp_timeout_max_retrans", dur: func(c *Config) *time.Duration { return &c.Timeouts.TCPMaxRetrans }},
	{name: "nf_conntrack_tcp_timeout_unacknowledged", dur: func(c *Config) *time.Duration { return &c.Timeouts.TCPUnacknowledged }},
	{name: "statewire_tcp_timeout_syn_sent2", dur: func(c *Config) *time.Duration { return &c.Timeouts.TCPSynSent2 }},
	{name: "nf_conntrack_udp_timeout", dur: func(c *Config) *time.Duration { return &c.Timeouts.UDP }},
	{name: "nf_conntrack_udp_timeout_stream", dur: func(c *Config) *time.Duration { return &c.Timeouts.UDPStream }},
	{name: "nf_conntrack_icmp_timeout", dur: func(c *Config) *time.Duration { return &c.Timeouts.ICMP }},
	{name: "nf_conntrack_icmpv6_timeout", dur: func(c *Config) *time.Duration { return &c.Timeouts.ICMPv6 }},
	{name: "nf_conntrack_generic_timeout", dur: func(c *Config) *time.Duration { return &c.Timeouts.Generic }},
	{name: "nf_conntrack_tcp_loose", kind: kindBool, flag: func(c *Config) *bool { return &c.Loose }},
	{name: "nf_conntrack_tcp_be_liberal", kind: kindBool, flag: func(c *Config) *bool { return &c.BeLiberal }},
	{name: "nf_conntrack_tcp_ignore_invalid_rst", kind: kindBool, flag: func(c *Config) *bool { return &c.IgnoreInvalidRST }},
	{name: "nf_conntrack_tcp_max_retrans", kind: kindUint8, u8: func(c *Config) *uint8 { return &c.MaxRetrans }},
	{name: "statewire_tcp_window_tracking", kind: kindBool, flag: func(c *Config) *bool { return &c.WindowTracking }},
}

// SysctlNames lists every name Set and Get accept, in a stable order.
func SysctlNames() []string {
	out := make([]string, len(sysctls))
	for i := range sysctls {
		out[i] = sysctls[i].name
	}
	return out
}

func findSysctl(name string) *sysctl {
	for i := range sysctls {
		if sysctls[i].name == name {
			return &sysctls[i]
		}
	}
	return nil
}

// Set sets the value addressed by a kernel sysctl name: timeouts in whole
// seconds, flags as 0 or 1, nf_conntrack_tcp_max_retrans as 0..255.
func (c *Config) Set(name, value string) error {
	s := findSysctl(name)
	if s == nil {
		return fmt.Errorf("%w: %q", ErrUnknownSysctl, name)
	}
	switch s.kind {
	case kindTimeout:
		n, err := strconv.ParseUint(value, 10, 32) // the kernel's are unsigned int seconds
		if err != nil {
			return fmt.Errorf("%w: %s=%q: %v", ErrBadValue, name, value, err)
		}
		*s.dur(c) = time.Duration(n) * time.Second
	case kindBool:
		switch value {
		case "0":
			*s.flag(c) = false
		case "1":
			*s.flag(c) = true
		default:
			return fmt.Errorf("%w: %s=%q: want 0 or 1", ErrBadValue, name, value)
		}
	case kindUint8:
		n, err := strconv.ParseUint(value, 10, 8)
		if err != nil {
			return fmt.Errorf("%w: %s=%q: %v", ErrBadValue, name, value, err)
		}
		*s.u8(c) = uint8(n)
	}
	return nil
}

// Get returns the value addressed by a sysctl name in the format Set
// accepts, or "" for an unknown name.
func (c *Config) Get(name string) string {
	s := findSysctl(name)
	if s == nil {
		return ""
	}
	switch s.kind {
	case kindTimeout:
		return strconv.FormatInt(int64(*s.dur(c)/time.Second), 10)
	case kindBool:
		if *s.flag(c) {
			return "1"
		}
		return "0"
	default:
		return strconv.FormatUint(uint64(*s.u8(c)), 10)
	}
}
