package lab

import (
	"testing"
	"time"
)

// TestSupportHelpers checks the rigs' helpers on a kernel-bridge lab: Ping
// and PingWithin succeed and fail as the path allows, IfStat counts the
// pings, CheckNoXDP passes on clean ports and XDPAttached names a missing
// interface, and checkGone sees the namespaces until Close.
func TestSupportHelpers(t *testing.T) {
	RequireRoot(t)
	l := NewT(t, Options{Mode: KernelBridge})
	right := RightIPv4.Addr().String()
	before, err := l.IfStat(l.RightNS, l.RightIf, "rx_packets")
	if err != nil {
		t.Fatalf("IfStat: %v", err)
	}
	if ok, out := l.Ping(l.LeftNS, right, 2); !ok {
		t.Errorf("Ping through the kernel bridge got %q, want 2 received", out)
	}
	if d, ok := l.PingWithin(l.LeftNS, right, 5*time.Second); !ok {
		t.Errorf("PingWithin through the kernel bridge failed after %v", d)
	}
	after, err := l.IfStat(l.RightNS, l.RightIf, "rx_packets")
	if err != nil {
		t.Fatalf("IfStat: %v", err)
	}
	if after-before < 3 {
		t.Errorf("rx_packets on the right host rose by %d, want at least the 3 echo requests", after-before)
	}
	if _, err := l.IfStat(l.RightNS, l.RightIf, "no_such_counter"); err == nil {
		t.Errorf("IfStat of a missing counter got no error")
	}
	if ok, _ := l.Ping(l.LeftNS, "198.18.0.99", 1); ok {
		t.Errorf("Ping to an absent host got all replies")
	}
	if d, ok := l.PingWithin(l.LeftNS, "198.18.0.99", 1500*time.Millisecond); ok || d < 1500*time.Millisecond {
		t.Errorf("PingWithin to an absent host got ok=%v after %v, want false after 1.5s", ok, d)
	}
	if err := l.CheckNoXDP(); err != nil {
		t.Errorf("CheckNoXDP on a fresh lab: %v", err)
	}
	if _, err := l.XDPAttached("nosuchif0"); err == nil {
		t.Errorf("XDPAttached of a missing interface got no error")
	}
	if err := l.checkGone(); err == nil {
		t.Errorf("checkGone before Close got nil, want the live namespaces named")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.checkGone(); err != nil {
		t.Errorf("checkGone after Close: %v", err)
	}
}

// TestSyncBuffer: writes from several goroutines all arrive.
func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	done := make(chan struct{})
	for range 4 {
		go func() {
			for range 100 {
				b.Write([]byte("x"))
			}
			done <- struct{}{}
		}()
	}
	for range 4 {
		<-done
	}
	if n := len(b.String()); n != 400 {
		t.Errorf("got %d bytes, want 400", n)
	}
}
