package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// This file holds what the end-to-end rigs of several packages used to
// repeat: building the statewire binary, checking for leftovers (namespaces,
// XDP programs), interface counters, pings with retry, and a buffer for a
// process's output.

// binary is the statewire binary built once per test binary (see
// StatewireBinary and RunTests).
var binary struct {
	dir  string // set by RunTests; "" means build per test into t.TempDir
	once sync.Once
	path string
	err  error
}

// RunTests runs m and removes the statewire binary StatewireBinary built
// (once for the whole test binary) afterwards. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(lab.RunTests(m)) }
//
// Without it StatewireBinary builds into each test's t.TempDir instead.
func RunTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "statewire-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "lab: %v\n", err)
		return 1
	}
	binary.dir = dir
	defer os.RemoveAll(dir)
	return m.Run()
}

// StatewireBinary returns the path of a statewire binary for tests that run
// it as a process: $STATEWIRE_BIN when set (a binary built elsewhere, e.g.
// from a clean checkout while the working tree is mid-change), else
// `go build` of cmd/statewire, done once per test binary when the package's
// TestMain calls RunTests. It fails t if the build fails.
func StatewireBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("STATEWIRE_BIN"); bin != "" {
		return bin
	}
	if binary.dir == "" {
		bin, err := buildStatewire(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return bin
	}
	binary.once.Do(func() { binary.path, binary.err = buildStatewire(binary.dir) })
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

func buildStatewire(dir string) (string, error) {
	bin := filepath.Join(dir, "statewire")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/statewire/statewire/cmd/statewire").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// checkGone returns an error naming every namespace of l that still exists.
func (l *Lab) checkGone() error {
	var left []string
	for _, ns := range append([]string{l.LeftNS, l.RightNS, l.BridgeNS}, l.extraNS...) {
		if nsExists(ns) {
			left = append(left, ns)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("lab: namespaces %s still present after Close", strings.Join(left, ", "))
	}
	return nil
}

// XDPAttached returns the id of the XDP program attached to ifc in
// BridgeNS (PortA or PortB), 0 when there is none.
func (l *Lab) XDPAttached(ifc string) (uint32, error) {
	var id uint32
	err := l.Do(l.BridgeNS, func() error {
		nl, err := netlink.LinkByName(ifc)
		if err != nil {
			return fmt.Errorf("lab: %s: %w", ifc, err)
		}
		if x := nl.Attrs().Xdp; x != nil && x.Attached {
			// A program attached with an unknown id still counts.
			id = max(x.ProgId, 1)
		}
		return nil
	})
	return id, err
}

// CheckNoXDP returns an error unless both bridge-side ports are free of XDP
// programs: what a datapath or a statewire process must leave behind when
// it stops.
func (l *Lab) CheckNoXDP() error {
	for _, ifc := range []string{l.PortA, l.PortB} {
		id, err := l.XDPAttached(ifc)
		if err != nil {
			return err
		}
		if id != 0 {
			return fmt.Errorf("XDP program %d still attached to %s", id, ifc)
		}
	}
	return nil
}

// IfStat reads one /sys/class/net/IFC/statistics counter (rx_packets,
// tx_dropped...) inside ns.
func (l *Lab) IfStat(ns, ifc, name string) (uint64, error) {
	out, err := l.Run(context.Background(), ns, "cat", "/sys/class/net/"+ifc+"/statistics/"+name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("lab: %s %s: %w", ifc, name, err)
	}
	return n, nil
}

// Ping runs `ping -c count` in ns towards to (200 ms apart, 1 s wait per
// reply) and reports whether all count replies came, with ping's output.
func (l *Lab) Ping(ns, to string, count int) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := l.Run(ctx, ns, "ping", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1", to)
	return err == nil && strings.Contains(out, fmt.Sprintf("%d received", count)), out
}

// PingWithin pings once at a time from ns towards to until a reply comes or
// d passes (for a bridge that is still coming up, or a path that is
// recovering), and returns how long it took.
func (l *Lab) PingWithin(ns, to string, d time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < d {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		out, err := l.Run(ctx, ns, "ping", "-c", "1", "-W", "1", to)
		cancel()
		if err == nil && strings.Contains(out, "1 received") {
			return time.Since(start), true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start), false
}

// SyncBuffer is a bytes.Buffer that a process's output goroutines (exec.Cmd
// Stdout, Stderr) may write while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
