package statemachine

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDefaultsAndSysctl(t *testing.T) {
	cfg := DefaultConfig()
	want := map[string]string{
		"nf_conntrack_tcp_timeout_syn_sent":       "120",
		"nf_conntrack_tcp_timeout_syn_recv":       "60",
		"nf_conntrack_tcp_timeout_established":    "432000",
		"nf_conntrack_tcp_timeout_fin_wait":       "120",
		"nf_conntrack_tcp_timeout_close_wait":     "60",
		"nf_conntrack_tcp_timeout_last_ack":       "30",
		"nf_conntrack_tcp_timeout_time_wait":      "120",
		"nf_conntrack_tcp_timeout_close":          "10",
		"nf_conntrack_tcp_timeout_max_retrans":    "300",
		"nf_conntrack_tcp_timeout_unacknowledged": "300",
		"statewire_tcp_timeout_syn_sent2":         "120",
		"nf_conntrack_udp_timeout":                "30",
		"nf_conntrack_udp_timeout_stream":         "120",
		"nf_conntrack_icmp_timeout":               "30",
		"nf_conntrack_icmpv6_timeout":             "30",
		"nf_conntrack_generic_timeout":            "600",
		"nf_conntrack_tcp_loose":                  "1",
		"nf_conntrack_tcp_be_liberal":             "0",
		"nf_conntrack_tcp_ignore_invalid_rst":     "0",
		"nf_conntrack_tcp_max_retrans":            "3",
		"statewire_tcp_window_tracking":           "1",
	}
	names := SysctlNames()
	if len(names) != len(want) {
		t.Fatalf("SysctlNames has %d names, want %d", len(names), len(want))
	}
	for _, n := range names {
		w, ok := want[n]
		if !ok {
			t.Errorf("unexpected sysctl %q", n)
			continue
		}
		if got := cfg.Get(n); got != w {
			t.Errorf("Get(%q) = %q, want %q", n, got, w)
		}
	}
	for _, n := range names {
		v := "1"
		if !strings.Contains(n, "loose") {
			v = "0"
		}
		if strings.Contains(n, "timeout") || strings.HasSuffix(n, "max_retrans") {
			v = "7"
		}
		if err := cfg.Set(n, v); err != nil {
			t.Fatalf("Set(%q, %q): %v", n, v, err)
		}
		if got := cfg.Get(n); got != v {
			t.Errorf("after Set(%q, %q): Get = %q", n, v, got)
		}
	}
	if cfg.Timeouts.TCPEstablished != 7*time.Second || cfg.tcpTimeout(TCPEstablished) != 7*time.Second {
		t.Errorf("Set did not reach Timeouts: %v", cfg.Timeouts.TCPEstablished)
	}
	if err := cfg.Set("nf_conntrack_bogus", "1"); !errors.Is(err, ErrUnknownSysctl) {
		t.Errorf("unknown name: %v, want ErrUnknownSysctl", err)
	}
	for _, tt := range [][2]string{{"nf_conntrack_tcp_loose", "2"}, {"nf_conntrack_udp_timeout", "-1"}, {"nf_conntrack_tcp_max_retrans", "256"}} {
		if err := cfg.Set(tt[0], tt[1]); !errors.Is(err, ErrBadValue) {
			t.Errorf("Set(%q, %q): %v, want ErrBadValue", tt[0], tt[1], err)
		}
	}
}

func TestNames(t *testing.T) {
	for s, want := range map[TCPState]string{TCPNone: "NONE", TCPSynSent: "SYN_SENT", TCPEstablished: "ESTABLISHED", TCPSynSent2: "SYN_SENT2", TCPClose: "CLOSE", 200: "UNKNOWN"} {
		if got := s.String(); got != want {
			t.Errorf("TCPState(%d) = %q, want %q", s, got, want)
		}
	}
	for s, want := range map[CtState]string{StateNew: "NEW", StateEstablished: "ESTABLISHED", StateRelated: "RELATED", StateInvalid: "INVALID", StateUntracked: "UNTRACKED", 0: "UNKNOWN"} {
		if got := s.String(); got != want {
			t.Errorf("CtState(%d) = %q, want %q", s, got, want)
		}
	}
	for r := ReasonNone; r < NumInvalidReasons; r++ {
		if r.String() == "unknown" || r.String() == "" {
			t.Errorf("InvalidReason(%d) has no name", r)
		}
	}
}
