package control

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRateLimit(t *testing.T) {
	var buf bytes.Buffer
	h := RateLimit(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}), 2, time.Second)
	t0 := time.Unix(1000, 0)
	emit := func(at time.Duration, msg string) {
		r := slog.NewRecord(t0.Add(at), slog.LevelInfo, msg, 0)
		h.Handle(context.Background(), r)
	}
	for i := range 5 {
		emit(time.Duration(i)*time.Millisecond, "invalid packet")
	}
	emit(10*time.Millisecond, "other reason")
	emit(1500*time.Millisecond, "invalid packet")
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`level=INFO msg="invalid packet"`,
		`level=INFO msg="invalid packet"`,
		`level=INFO msg="other reason"`,
		`level=INFO msg="invalid packet" suppressed=3`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestNewLogger(t *testing.T) {
	tests := []struct {
		format, level string
		wantErr       bool
		want          string
	}{
		{"json", "info", false, `"msg":"hello"`},
		{"text", "debug", false, `msg=hello`},
		{"xml", "info", true, ""},
		{"text", "loud", true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.format+"/"+tc.level, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := NewLogger(&buf, tc.format, tc.level, 10, time.Second)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got err %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			l.Info("hello")
			if !strings.Contains(buf.String(), tc.want) {
				t.Errorf("got %q, want it to contain %q", buf.String(), tc.want)
			}
		})
	}
}
