package bridge

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// recordHandler keeps the records it is given.
type recordHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func attrOf(r slog.Record, key string) string {
	v := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

func TestLogInvalid(t *testing.T) {
	// SYN+RST is an invalid flag combination (tcp_valid_flags).
	badTCP := pt.TCP4("198.18.0.1", "198.18.0.2", 1000, 80, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPRst, Seq: 1, Window: 65535})
	goodUDP := pt.UDP4("198.18.0.1", "198.18.0.2", 1000, 53, nil)
	tests := []struct {
		name    string
		level   uint8
		frame   []byte
		wantMsg string
	}{
		{"off", 0, badTCP, ""},
		{"all protocols", LogInvalidAll, badTCP, "nf_ct_proto_6: tcp-invalid-flags"},
		{"tcp only", 6, badTCP, "nf_ct_proto_6: tcp-invalid-flags"},
		{"udp only: tcp not logged", 17, badTCP, ""},
		{"valid packets never logged", LogInvalidAll, goodUDP, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := DefaultSettings()
			s.LogInvalid = tt.level
			pl := newTestPipeline(t, s, 1024)
			h := &recordHandler{}
			pl.ctl.SetLogger(slog.New(h))
			out := make([]Result, 1)
			pl.ProcessBatch([][]byte{tt.frame}, PortA, sec, out)
			if len(h.recs) == 0 {
				if tt.wantMsg != "" {
					t.Fatalf("got no log, want %q", tt.wantMsg)
				}
				return
			}
			r := h.recs[0]
			if tt.wantMsg == "" {
				t.Fatalf("got log %q, want none", r.Message)
			}
			if r.Message != tt.wantMsg || attrOf(r, "src") != "198.18.0.1" || attrOf(r, "dport") != "80" || attrOf(r, "in") != PortA.String() {
				t.Errorf("got %q src=%s dport=%s in=%s, want %q src=198.18.0.1 dport=80 in=%s",
					r.Message, attrOf(r, "src"), attrOf(r, "dport"), attrOf(r, "in"), tt.wantMsg, PortA)
			}
		})
	}
}

// TestLogInvalidRateLimit: at most logInvalidBurst per interval per worker;
// the first message after a suppressed stretch says how many.
func TestLogInvalidRateLimit(t *testing.T) {
	s := DefaultSettings()
	s.LogInvalid = LogInvalidAll
	pl := newTestPipeline(t, s, 1024)
	h := &recordHandler{}
	pl.ctl.SetLogger(slog.New(h))
	bad := pt.TCP4("198.18.0.1", "198.18.0.2", 1000, 80, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPFin, Seq: 1, Window: 65535})
	for range 3 * logInvalidBurst {
		pl.Process(bad, 0, PortA, sec)
	}
	if len(h.recs) != logInvalidBurst {
		t.Fatalf("got %d logs in one interval, want %d", len(h.recs), logInvalidBurst)
	}
	pl.Process(bad, 0, PortA, sec+logInvalidInterval)
	if len(h.recs) != logInvalidBurst+1 {
		t.Fatalf("got %d logs after the interval, want %d", len(h.recs), logInvalidBurst+1)
	}
	if got, want := attrOf(h.recs[logInvalidBurst], "suppressed"), "20"; got != want {
		t.Errorf("suppressed: got %q, want %q", got, want)
	}
}
