package rules

import (
	"strconv"
	"strings"
)

// -m limit is xt_limit (net/netfilter/xt_limit.c) with its integer
// arithmetic kept: a token bucket in "credits", refilled per jiffy, capped,
// and charged one cost per matching packet.
//
// The kernel counts time in jiffies of CONFIG_HZ. statewire uses HZ 1000;
// CREDITS_PER_JIFFY is then 32, and HZ*CREDITS_PER_JIFFY is 32000, the
// same as with HZ 250 (128 credits per jiffy) of Debian's kernels: bucket
// sizes and costs are identical, only the refill step is finer (1 ms
// instead of 4 ms).
const (
	limitScale      = 10000 // XT_LIMIT_SCALE: avg is seconds per packet × 10000
	limitHZ         = 1000
	creditsPerJiffy = 32 // POW2_BELOW32(0xFFFFFFFF / (HZ*60*60*24))
	limitBurstMax   = 10000
	limitDefAvg     = limitScale * 3600 / 3 // 3/hour
	limitDefBurst   = 5
)

// limitArgs are one -m limit rule's parameters; cost and capacity are
// derived as limit_mt_check does.
type limitArgs struct {
	avg, burst uint32
	cost, cap  uint32
	slot       int32 // index into Local.limits (compileCtx)
}

// limitState is one worker's bucket of one rule (struct xt_limit_priv).
type limitState struct {
	prev   int64 // jiffies of the last test
	credit uint32
	init   bool
}

// user2credits is xt_limit's precision saver, in uint32 like the kernel.
func user2credits(user uint32) uint32 {
	if user > 0xFFFFFFFF/(limitHZ*creditsPerJiffy) {
		return (user / limitScale) * limitHZ * creditsPerJiffy
	}
	return (user * limitHZ * creditsPerJiffy) / limitScale
}

// setup derives cost and cap, refusing what limit_mt_check refuses: a zero
// burst, and avg*burst overflowing 32 bits (so that the bucket would be
// smaller than one packet's cost).
func (a *limitArgs) setup() bool {
	if a.burst == 0 || user2credits(a.avg*a.burst) < user2credits(a.avg) {
		return false
	}
	a.cap = user2credits(a.avg * a.burst)
	a.cost = user2credits(a.avg)
	return true
}

// take is limit_mt: refill by the jiffies since the last test (the sum
// truncated to 32 bits as the kernel's u32 credit is), cap, and spend one
// cost if there is enough. The bucket starts full at its first test (the
// kernel fills it when the rule is loaded; no packet can tell the
// difference, the credit being capped).
func (l *limitState) take(now int64, a *limitArgs) bool {
	j := now / (1e9 / limitHZ)
	if !l.init {
		l.init, l.prev, l.credit = true, j, a.cap
	}
	if j < l.prev {
		j = l.prev // the clock is monotonic; never refill backwards
	}
	l.credit += uint32(uint64(j-l.prev) * creditsPerJiffy)
	l.prev = j
	if l.credit > a.cap {
		l.credit = a.cap
	}
	if l.credit >= a.cost {
		l.credit -= a.cost
		return true
	}
	return false
}

// parseRate is libxt_limit's parse_rate: "N", or "N/unit" with unit any
// prefix of second, minute, hour or day (case-insensitive). ok is false
// for a bad rate; tooFast for one that maps to 0 ("Rate too fast").
func parseRate(s string) (avg uint32, ok, tooFast bool) {
	num, unit, slash := strings.Cut(s, "/")
	mult := uint32(1)
	if slash {
		if unit == "" {
			return 0, false, false
		}
		u := strings.ToLower(unit)
		switch {
		case strings.HasPrefix("second", u):
			mult = 1
		case strings.HasPrefix("minute", u):
			mult = 60
		case strings.HasPrefix("hour", u):
			mult = 3600
		case strings.HasPrefix("day", u):
			mult = 86400
		default:
			return 0, false, false
		}
	}
	// atoi: leading digits; anything after them is ignored, as in C.
	i := 0
	for i < len(num) && num[i] >= '0' && num[i] <= '9' {
		i++
	}
	n, err := strconv.ParseUint(num[:i], 10, 32)
	if err != nil || n == 0 {
		return 0, false, false
	}
	avg = uint32(limitScale * uint64(mult) / n)
	if avg == 0 {
		return 0, false, true
	}
	return avg, true, false
}

// rateString is libxt_limit's print_rate.
func rateString(period uint32) string {
	rates := [...]struct {
		name string
		mult uint32
	}{{"day", limitScale * 86400}, {"hour", limitScale * 3600}, {"min", limitScale * 60}, {"sec", limitScale}}
	i := 1
	for ; i < len(rates); i++ {
		if period > rates[i].mult || rates[i].mult/period < rates[i].mult%period {
			break
		}
	}
	return strconv.FormatUint(uint64(rates[i-1].mult/period), 10) + "/" + rates[i-1].name
}

func limitString(r *rule, w func(string)) {
	w(" -m limit --limit " + rateString(r.x.lim.avg))
	if r.x.lim.burst != limitDefBurst {
		w(" --limit-burst " + strconv.FormatUint(uint64(r.x.lim.burst), 10))
	}
}
