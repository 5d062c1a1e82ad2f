package rules

import (
	"strconv"
	"strings"
)

// LogFlags are LOG's switches, with xt_LOG's bit values.
type LogFlags uint8

// LOG options (XT_LOG_*).
const (
	LogTCPSeq    LogFlags = 0x01 // --log-tcp-sequence
	LogTCPOpt    LogFlags = 0x02 // --log-tcp-options
	LogIPOpt     LogFlags = 0x04 // --log-ip-options
	LogUID       LogFlags = 0x08 // --log-uid (read and saved; a bridge has no local socket to name)
	LogMACDecode LogFlags = 0x20 // --log-macdecode
)

// LogSpec is what a LOG rule asks for.
type LogSpec struct {
	Prefix string // --log-prefix, at most maxLogPrefix bytes
	Level  uint8  // syslog level 0 (emerg) .. 7 (debug), default 4 (warning)
	Flags  LogFlags
}

// maxLogPrefix is xt_LOG's prefix size (30) less the NUL: iptables cuts a
// longer prefix to this.
const maxLogPrefix = 29

// defaultLogLevel is LOG's default (LOG_WARNING): iptables-save omits it.
const defaultLogLevel = 4

// logLevels are libxt_LOG's level names.
var logLevels = map[string]uint8{
	"emerg": 0, "panic": 0, "alert": 1, "crit": 2, "error": 3, "err": 3,
	"warning": 4, "warn": 4, "notice": 5, "info": 6, "debug": 7,
}

// MaxLogHits is how many LOG rules one evaluation reports. A packet that
// matches more (a rule set that logs it at every step) has the others
// counted in LogHits.Over.
const MaxLogHits = 4

// LogHits collects the LOG rules a packet matched on its way through the
// FORWARD chain, in order: FilterLog fills it, the caller writes the
// lines. Fixed size, so evaluating allocates nothing.
type LogHits struct {
	N    uint8
	Over uint8 // LOG rules matched beyond MaxLogHits
	Rule [MaxLogHits]int32
}

func (h *LogHits) add(rule int32) {
	if int(h.N) < len(h.Rule) {
		h.Rule[h.N] = rule
		h.N++
	} else if h.Over < 255 {
		h.Over++
	}
}

// Log returns the LOG settings of rule i (a LogHits.Rule), or nil when i is
// not a LOG rule.
func (rs *RuleSet) Log(i int32) *LogSpec {
	if i < 0 || int(i) >= len(rs.src) || rs.src[i].target != tLog {
		return nil
	}
	return &rs.src[i].log
}

// parseLogOption reads one LOG option; the rule's target is LOG.
func (p *parser) parseLogOption(r *rule, opt string, value func() (string, error)) error {
	set := func(f LogFlags) error {
		if r.log.Flags&f != 0 {
			return p.errf(ErrSyntax, "option %q given twice", opt)
		}
		r.log.Flags |= f
		return nil
	}
	switch opt {
	case "--log-prefix":
		v, err := value()
		if err != nil {
			return err
		}
		if strings.ContainsAny(v, "\n\r") {
			return p.errf(ErrSyntax, "newlines are not allowed in --log-prefix")
		}
		if len(v) > maxLogPrefix {
			v = v[:maxLogPrefix] // as iptables does
		}
		r.log.Prefix = v
	case "--log-level":
		v, err := value()
		if err != nil {
			return err
		}
		if n, err := strconv.ParseUint(v, 10, 8); err == nil && n <= 7 {
			r.log.Level = uint8(n)
		} else if l, ok := logLevels[strings.ToLower(v)]; ok {
			r.log.Level = l
		} else {
			return p.errf(ErrSyntax, "log level %q unknown (0..7 or emerg, alert, crit, error, warning, notice, info, debug)", v)
		}
	case "--log-tcp-sequence":
		return set(LogTCPSeq)
	case "--log-tcp-options":
		return set(LogTCPOpt)
	case "--log-ip-options":
		return set(LogIPOpt)
	case "--log-uid":
		return set(LogUID)
	case "--log-macdecode":
		return set(LogMACDecode)
	}
	return nil
}

// isLogOption reports whether opt is one of LOG's options.
func isLogOption(opt string) bool {
	switch opt {
	case "--log-prefix", "--log-level", "--log-tcp-sequence", "--log-tcp-options",
		"--log-ip-options", "--log-uid", "--log-macdecode":
		return true
	}
	return false
}

// logString is what iptables-save prints after -j LOG (libxt_LOG's save).
func logString(l *LogSpec) string {
	var b strings.Builder
	if l.Prefix != "" {
		b.WriteString(" --log-prefix " + quote(l.Prefix))
	}
	if l.Level != defaultLogLevel {
		b.WriteString(" --log-level " + strconv.Itoa(int(l.Level)))
	}
	for _, f := range []struct {
		bit  LogFlags
		name string
	}{{LogTCPSeq, "--log-tcp-sequence"}, {LogTCPOpt, "--log-tcp-options"}, {LogIPOpt, "--log-ip-options"},
		{LogUID, "--log-uid"}, {LogMACDecode, "--log-macdecode"}} {
		if l.Flags&f.bit != 0 {
			b.WriteString(" " + f.name)
		}
	}
	return b.String()
}

// targetOption reads an option of the REJECT or LOG target. handled is
// false for every other word.
func (p *parser) targetOption(r *rule, opt string, neg bool, value func() (string, error)) (handled bool, err error) {
	switch {
	case opt == "--reject-with":
		if r.target != tReject {
			return true, p.errf(ErrSyntax, "option %q needs -j REJECT", opt)
		}
		if neg {
			return true, p.errf(ErrSyntax, "%q cannot be negated", opt)
		}
		if r.rejectSet {
			return true, p.errf(ErrSyntax, "option %q given twice", opt)
		}
		r.rejectSet = true
		v, err := value()
		if err != nil {
			return true, err
		}
		return true, p.parseRejectWith(r, v)
	case isLogOption(opt):
		if r.target != tLog {
			return true, p.errf(ErrSyntax, "option %q needs -j LOG", opt)
		}
		if neg {
			return true, p.errf(ErrSyntax, "%q cannot be negated", opt)
		}
		return true, p.parseLogOption(r, opt, value)
	}
	return false, nil
}
