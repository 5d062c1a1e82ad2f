package bridge

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// The expected lines are the kernel's format (nf_log_syslog.c) for the
// same bytes, written out by hand from that source: the fields, their
// order, the spacing and the hex cases. The kernel bridge's own lines for
// the same frames (IN=br0 ... PHYSIN=...) are compared in e2e
// TestRejectLogAgainstKernel where the kernel log is readable.
func TestLogLineFormat(t *testing.T) {
	syn := pt.TCP4("198.18.0.1", "198.18.0.2", 40000, 80, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPEce | packet.TCPCwr, Seq: 1000, Window: 64240, MSS: 1460})
	opt := pt.IPv4Options(pt.UDP4("198.18.0.1", "198.18.0.2", 5353, 53, []byte("abc")), []byte{0x94, 4, 0, 0})
	df := append([]byte(nil), syn...)
	df[20] = 0x40 // DF
	df[15] = 0xb8 // TOS: DSCP EF
	pt.FixChecksums(df)
	echo6 := pt.ICMP6Echo("2001:db8::1", "2001:db8::2", 128, 7, 9, []byte("x"))
	unreach := pt.ICMP4Error("198.18.0.2", "198.18.0.1", 3, 3, pt.Quote(pt.UDP4("198.18.0.1", "198.18.0.2", 5353, 53, nil), 0))
	frag := pt.Fragments4(pt.UDP4("198.18.0.1", "198.18.0.2", 1, 2, make([]byte, 100)), 64)[1]
	tagged := pt.VLAN(pt.UDP4("198.18.0.1", "198.18.0.2", 5353, 53, nil), packet.EtherTypeVLAN, 42)
	const mac = "MAC=02:00:00:00:00:02:02:00:00:00:00:01:08:00 "
	cases := []struct {
		spec  rules.LogSpec
		frame []byte
		want  string
	}{
		{rules.LogSpec{Prefix: "DROP: "}, syn,
			"DROP: IN=a OUT=b PHYSIN=a PHYSOUT=b " + mac + "SRC=198.18.0.1 DST=198.18.0.2 LEN=44 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=TCP SPT=40000 DPT=80 WINDOW=64240 RES=0x00 CWR ECE SYN URGP=0"},
		{rules.LogSpec{Flags: rules.LogTCPSeq | rules.LogTCPOpt}, syn,
			"IN=a OUT=b PHYSIN=a PHYSOUT=b " + mac + "SRC=198.18.0.1 DST=198.18.0.2 LEN=44 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=TCP SPT=40000 DPT=80 SEQ=1000 ACK=0 WINDOW=64240 RES=0x00 CWR ECE SYN URGP=0 OPT (020405B4)"},
		{rules.LogSpec{Prefix: "x "}, df,
			"x IN=a OUT=b PHYSIN=a PHYSOUT=b " + mac + "SRC=198.18.0.1 DST=198.18.0.2 LEN=44 TOS=0x18 PREC=0xA0 TTL=64 ID=4660 DF PROTO=TCP SPT=40000 DPT=80 WINDOW=64240 RES=0x00 CWR ECE SYN URGP=0"},
		{rules.LogSpec{Flags: rules.LogIPOpt | rules.LogMACDecode}, opt,
			"IN=a OUT=b PHYSIN=a PHYSOUT=b MACSRC=02:00:00:00:00:01 MACDST=02:00:00:00:00:02 MACPROTO=0800 SRC=198.18.0.1 DST=198.18.0.2 LEN=35 TOS=0x00 PREC=0x00 TTL=64 ID=4660 OPT (94040000) PROTO=UDP SPT=5353 DPT=53 LEN=11"},
		{rules.LogSpec{}, echo6,
			"IN=a OUT=b PHYSIN=a PHYSOUT=b MAC=02:00:00:00:00:02:02:00:00:00:00:01:86:dd SRC=2001:0db8:0000:0000:0000:0000:0000:0001 DST=2001:0db8:0000:0000:0000:0000:0000:0002 LEN=49 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=128 CODE=0 ID=7 SEQ=9"},
		{rules.LogSpec{}, unreach,
			"IN=a OUT=b PHYSIN=a PHYSOUT=b " + mac + "SRC=198.18.0.2 DST=198.18.0.1 LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ICMP TYPE=3 CODE=3 [SRC=198.18.0.1 DST=198.18.0.2 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=UDP SPT=5353 DPT=53 LEN=8 ]"},
		{rules.LogSpec{}, frag,
			"IN=a OUT=b PHYSIN=a PHYSOUT=b " + mac + "SRC=198.18.0.1 DST=198.18.0.2 LEN=64 TOS=0x00 PREC=0x00 TTL=64 ID=4660 FRAG:8 PROTO=UDP"},
		{rules.LogSpec{Flags: rules.LogMACDecode}, tagged,
			"IN=a OUT=b PHYSIN=a PHYSOUT=b MACSRC=02:00:00:00:00:01 MACDST=02:00:00:00:00:02 VPROTO=8100 VID=42 MACPROTO=0800 SRC=198.18.0.1 DST=198.18.0.2 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=UDP SPT=5353 DPT=53 LEN=8"},
	}
	for _, c := range cases {
		var p packet.Packet
		packet.Parse(c.frame, 0, packet.Options{}, &p)
		got := string(AppendLogLine(nil, &c.spec, "a", "b", c.frame, &p))
		if got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}

// captureHandler records the messages of a slog logger.
type captureHandler struct {
	mu    sync.Mutex
	lines []string
	lvls  []slog.Level
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.lines = append(h.lines, r.Message)
	h.lvls = append(h.lvls, r.Level)
	h.mu.Unlock()
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

// Through the pipeline: REJECT drops with its answer kind and is never
// cached; LOG lines are written per packet at the rule's level, the
// packet goes on to the next rule, and a flood is limited to the burst
// and then logRate a second, with the suppressed lines counted.
func TestPipelineRejectAndLog(t *testing.T) {
	s := DefaultSettings()
	s.Rules = loadRules(t, `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p tcp --dport 22 -j LOG --log-prefix "ssh: " --log-level 6
-A FORWARD -p tcp --dport 22 -j REJECT --reject-with tcp-reset
-A FORWARD -p udp --dport 53 -j REJECT
-A FORWARD -p udp --dport 54 -j LOG --log-prefix "flood: "
COMMIT
`)
	pl := newTestPipeline(t, s, 1024)
	h := &captureHandler{}
	pl.ctl.SetLogger(slog.New(h))
	now := int64(time.Hour)
	syn := pt.TCP4("198.18.0.1", "198.18.0.2", 40000, 22, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1})
	for i := 0; i < 3; i++ {
		r := pl.Process(syn, 0, PortA, now)
		if r.Verdict != Drop || r.Drop != DropReject || r.Reject != rules.RejectTCPReset || r.State != statemachine.StateNew {
			t.Fatalf("SYN to 22: got %v %v %v %v, want DROP reject tcp-reset NEW", r.Verdict, r.Drop, r.Reject, r.State)
		}
		if ans := pl.RejectAnswer(syn, r.Reject, now); len(ans) != 54 {
			t.Fatalf("answer: %d bytes, want a 54-byte RST", len(ans))
		}
	}
	if len(h.lines) != 3 || !strings.HasPrefix(h.lines[0], "ssh: IN=porta OUT=portb PHYSIN=porta PHYSOUT=portb MAC=") || h.lvls[0] != slog.LevelInfo {
		t.Fatalf("lines: %q (levels %v), want 3 ssh: lines at info", h.lines, h.lvls)
	}
	udp := pt.UDP4("198.18.0.1", "198.18.0.2", 5353, 53, []byte("q"))
	r := pl.Process(udp, 0, PortA, now)
	if r.Drop != DropReject || r.Reject != rules.RejectPortUnreach {
		t.Fatalf("UDP to 53: got %v %v, want reject icmp-port-unreachable", r.Drop, r.Reject)
	}
	// A flood through the LOG rule (accepted by the policy after it).
	flood := pt.UDP4("198.18.0.1", "198.18.0.2", 5353, 54, []byte("f"))
	const n = 1000
	for i := 0; i < n; i++ {
		if r := pl.Process(flood, 0, PortA, now+int64(i)*int64(time.Millisecond)); r.Verdict != Accept {
			t.Fatalf("flood frame %d: %v, want ACCEPT after LOG", i, r.Verdict)
		}
	}
	written := 0
	for _, l := range h.lines {
		if strings.HasPrefix(l, "flood: ") {
			written++
		}
	}
	// One second of flood: the burst and logRate more, at most.
	st := pl.Stats().Targets
	if written < logBurst || written > logBurst+logRate+1 || uint64(written)+st.LogSuppressed != n {
		t.Errorf("flood of %d frames: %d lines, %d suppressed; want %d..%d lines and the rest suppressed", n, written, st.LogSuppressed, logBurst, logBurst+logRate+1)
	}
	if pl.Stats().VerdictCacheHits != 0 {
		t.Errorf("%d cached verdicts: a LOG or REJECT verdict must never be cached", pl.Stats().VerdictCacheHits)
	}
	t.Logf("flood of %d frames in 1 s: %d LOG lines written, %d suppressed", n, written, st.LogSuppressed)
	_ = bytes.Equal
}

// FuzzLogLine: no frame makes the LOG line formatter panic, whatever the
// parser made of it and with every option on.
func FuzzLogLine(f *testing.F) {
	f.Add(pt.TCP4("198.18.0.1", "198.18.0.2", 1, 2, pt.TCPFields{Flags: packet.TCPSyn, MSS: 1460}))
	f.Add(pt.ICMP6Error("2001:db8::2", "2001:db8::1", 1, 4, 0, pt.Quote(pt.UDP6("2001:db8::1", "2001:db8::2", 1, 2, nil), 0)))
	f.Add(pt.Frag6(pt.UDP6("2001:db8::1", "2001:db8::2", 1, 2, make([]byte, 64)), 7, 16, 32, true))
	f.Add(pt.IPv4Options(pt.ICMP4Error("198.18.0.2", "198.18.0.1", 5, 1, pt.Quote(pt.UDP4("198.18.0.1", "198.18.0.2", 1, 2, nil), 0)), []byte{1, 1, 1, 1}))
	spec := rules.LogSpec{Prefix: "p ", Flags: rules.LogTCPSeq | rules.LogTCPOpt | rules.LogIPOpt | rules.LogMACDecode}
	var b []byte
	f.Fuzz(func(t *testing.T, frame []byte) {
		var p packet.Packet
		packet.Parse(frame, 0, packet.Options{}, &p)
		b = AppendLogLine(b[:0], &spec, "a", "b", frame, &p)
		spec.Flags ^= rules.LogMACDecode
		b = AppendLogLine(b[:0], &spec, "a", "b", frame, &p)
	})
}
