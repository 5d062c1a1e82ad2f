package bridge

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// The kernel logs INVALID packets (nf_l4proto_log_invalid) under
// net_ratelimit: 10 messages per 5 seconds. Each worker limits itself the
// same way before it formats anything, so a flood of invalid packets costs
// a comparison per packet, and the logger's own per-message limit
// (control.RateLimit) applies on top.
const (
	logInvalidBurst    = 10
	logInvalidInterval = int64(5 * time.Second)
)

// LogInvalidAll is the Settings.LogInvalid value that logs every protocol.
const LogInvalidAll = 255

// rateLimit is a fixed-window limiter driven by the packet clock. Owner
// only.
type rateLimit struct {
	start      int64
	n          int
	suppressed int
}

// allow counts one event at now and reports whether it may pass; passed
// tells how many were suppressed since the last one that passed.
func (l *rateLimit) allow(now int64) (ok bool, suppressed int) {
	if now-l.start >= logInvalidInterval || now < l.start {
		l.start, l.n = now, 0
	}
	l.n++
	if l.n > logInvalidBurst {
		l.suppressed++
		return false, 0
	}
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// invalidReason names why a packet was INVALID: the parser's reason, the
// tracker's, or the pipeline's own.
func invalidReason(p *packet.Packet, r *Result) string {
	switch {
	case r.Parse != packet.ReasonOK:
		return r.Parse.String()
	case r.Invalid != statemachine.ReasonNone:
		return r.Invalid.String()
	case p.IsICMPError():
		return "icmp-error-no-connection"
	}
	return "no-tuple"
}

// logInvalid logs an INVALID packet when Settings.LogInvalid selects its
// protocol, in the kernel's style: "nf_ct_proto_6: <reason>" with the
// tuple as attributes. Off the fast path: called only for INVALID packets
// with logging on, and it formats only what the limiter lets through.
func (pl *Pipeline) logInvalid(s *Settings, p *packet.Packet, in Port, r *Result, now int64) {
	if s.LogInvalid != LogInvalidAll && s.LogInvalid != p.Proto {
		return
	}
	lg := pl.ctl.Logger()
	if lg == nil {
		return
	}
	ok, suppressed := pl.invLog.allow(now)
	if !ok {
		return
	}
	attrs := []slog.Attr{
		slog.String("in", in.String()),
		slog.String("src", flowtable.AddrString(p.Src)),
		slog.String("dst", flowtable.AddrString(p.Dst)),
	}
	if p.Proto == packet.ProtoTCP || p.Proto == packet.ProtoUDP {
		attrs = append(attrs, slog.Int("sport", int(p.SrcPort)), slog.Int("dport", int(p.DstPort)))
	}
	if r.Tracked && p.Proto == packet.ProtoTCP {
		attrs = append(attrs, slog.String("state", r.TCPState.String()))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	lg.LogAttrs(context.Background(), slog.LevelWarn, "nf_ct_proto_"+strconv.Itoa(int(p.Proto))+": "+invalidReason(p, r), attrs...)
}
