package control

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// NewLogger returns a slog logger writing to w in format "text" or "json"
// at level ("debug", "info", "warn", "error"), with records of the same
// message limited to burst per interval (see RateLimit): a flood of the same
// complaint (an invalid packet per frame) cannot drown the log or slow the
// process.
func NewLogger(w io.Writer, format, level string, burst int, interval time.Duration) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch format {
	case "", "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("log format must be text or json, got %q", format)
	}
	if burst > 0 && interval > 0 {
		h = RateLimit(h, burst, interval)
	}
	return slog.New(h), nil
}

// RateLimit wraps h so that at most burst records with the same message
// pass per interval; the first record after a suppressed stretch carries
// "suppressed=N". The message is the reason: log a reason as the message and
// the details as attributes.
func RateLimit(h slog.Handler, burst int, interval time.Duration) slog.Handler {
	return &rateHandler{h: h, st: &rateState{burst: burst, interval: interval, by: map[string]*rateWindow{}}}
}

type rateWindow struct {
	start      time.Time
	n          int
	suppressed int
}

type rateState struct {
	mu       sync.Mutex
	burst    int
	interval time.Duration
	by       map[string]*rateWindow
}

type rateHandler struct {
	h  slog.Handler
	st *rateState
}

func (r *rateHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r *rateHandler) Handle(ctx context.Context, rec slog.Record) error {
	st := r.st
	st.mu.Lock()
	w := st.by[rec.Message]
	if w == nil {
		if len(st.by) > 4096 { // bound the memory: forget old reasons
			clear(st.by)
		}
		w = &rateWindow{start: rec.Time}
		st.by[rec.Message] = w
	}
	if rec.Time.Sub(w.start) >= st.interval {
		w.start, w.n = rec.Time, 0
	}
	w.n++
	if w.n > st.burst {
		w.suppressed++
		st.mu.Unlock()
		return nil
	}
	sup := w.suppressed
	w.suppressed = 0
	st.mu.Unlock()
	if sup > 0 {
		rec = rec.Clone()
		rec.AddAttrs(slog.Int("suppressed", sup))
	}
	return r.h.Handle(ctx, rec)
}

func (r *rateHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &rateHandler{h: r.h.WithAttrs(as), st: r.st}
}

func (r *rateHandler) WithGroup(name string) slog.Handler {
	return &rateHandler{h: r.h.WithGroup(name), st: r.st}
}
