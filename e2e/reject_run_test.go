package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/lab"
)

// rejectRunRules is one file for both families: the REJECT without
// --reject-with answers icmp-port-unreachable over IPv4 and
// icmp6-port-unreachable over IPv6.
const rejectRunRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 7201 -j REJECT --reject-with tcp-reset
-A FORWARD -p udp -m udp --dport 7202 -j REJECT
-A FORWARD -p udp -m udp --dport 7203 -j LOG --log-prefix "SWFLOOD "
COMMIT
`

// TestRejectThroughRun runs real sockets through `statewire run` (two
// workers without the fast path, so answers also travel the hand-off
// between workers; one worker with it): a TCP connect to a rejected port
// fails with ECONNREFUSED at once (the RST), a connected UDP socket gets
// ECONNREFUSED from the ICMP port unreachable, over IPv4 and IPv6; a UDP
// flood through a LOG rule writes the burst of lines and then no more
// than the rate allows, and the totals count every frame as written or
// suppressed.
func TestRejectThroughRun(t *testing.T) {
	lab.RequireRoot(t)
	bin := lab.StatewireBinary(t)
	for _, c := range []struct {
		cores int
		fast  bool
		mtu   int // 9000: the rejected datagrams are multi-buffer frames
	}{{2, false, 0}, {1, true, 0}, {1, false, 9000}} {
		t.Run(fmt.Sprintf("cores=%d,fast=%v,mtu=%d", c.cores, c.fast, c.mtu), func(t *testing.T) {
			l := lab.NewT(t, lab.Options{Queues: 2, IPv6: true, MTU: c.mtu})
			offload := "off"
			if c.fast {
				e2etest.HostGRO(t, l, true)
				offload = "on"
			}
			file := filepath.Join(t.TempDir(), "fw.rules")
			if err := os.WriteFile(file, []byte(rejectRunRules), 0o644); err != nil {
				t.Fatal(err)
			}
			stop := startRun(t, l, bin, "run", "--port-a", l.PortA, "--port-b", l.PortB,
				"--cores", strconv.Itoa(c.cores), "--queues", "2", "--ring-size", "512",
				"--rules", file, "--control-socket", "none", "--offload", offload)
			for _, dst := range []string{lab.RightIPv4.Addr().String(), lab.RightIPv6.Addr().String()} {
				// TCP: the RST arrives at once; without it the connect
				// would retry its SYN for over a minute.
				var took time.Duration
				err := l.Do(l.LeftNS, func() error {
					start := time.Now()
					conn, err := net.DialTimeout("tcp", net.JoinHostPort(dst, "7201"), 10*time.Second)
					took = time.Since(start)
					if conn != nil {
						conn.Close()
					}
					return err
				})
				if !errors.Is(err, syscall.ECONNREFUSED) || took > time.Second {
					t.Errorf("TCP connect to %s port 7201: got %v after %v, want ECONNREFUSED well under a second", dst, err, took)
				}
				t.Logf("TCP connect to %s port 7201 refused after %v", dst, took)
				// UDP: a connected socket reports the ICMP error.
				err = l.Do(l.LeftNS, func() error {
					conn, err := net.Dial("udp", net.JoinHostPort(dst, "7202"))
					if err != nil {
						return err
					}
					defer conn.Close()
					msg := []byte("are you there")
					if c.mtu > 0 {
						msg = make([]byte, 8000) // one frame of two buffers and more
					}
					if _, err := conn.Write(msg); err != nil {
						return err
					}
					conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					_, err = conn.Read(make([]byte, 100))
					return err
				})
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("UDP to %s port 7202: read got %v, want ECONNREFUSED (ICMP port unreachable)", dst, err)
				}
			}
			// The flood: datagrams of varying length, so that no two
			// LOG lines are the same (the logger also limits identical
			// messages).
			const n = 3000
			var took time.Duration
			sent := 0
			err := l.Do(l.LeftNS, func() error {
				conn, err := net.Dial("udp", net.JoinHostPort(lab.RightIPv4.Addr().String(), "7203"))
				if err != nil {
					return err
				}
				defer conn.Close()
				buf := make([]byte, 600)
				start := time.Now()
				for i := 0; i < n; i++ {
					// The right host answers ICMP port unreachable; the
					// next write then reports it and sends nothing.
					if _, err := conn.Write(buf[:1+i%500]); err == nil {
						sent++
					}
				}
				took = time.Since(start)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			totals, log := stop()
			lines := strings.Count(log, "SWFLOOD IN=")
			m := regexp.MustCompile(`log lines: (\d+) written, (\d+) suppressed`).FindStringSubmatch(totals)
			if m == nil {
				t.Fatalf("no log line count in the totals:\n%s", totals)
			}
			written, _ := strconv.Atoi(m[1])
			suppressed, _ := strconv.Atoi(m[2])
			// Every frame that reached the LOG rule is written or
			// suppressed; the kernel may drop a few of a flood before
			// the RX ring, and with two workers the one that receives
			// drops what the owner's full hand-off ring cannot take
			// (a CI run under -race: 246 of 2999). Both are counted
			// there, before the rules, not here.
			kernel := 0
			for _, re := range []string{`kernel dropped (\d+) before RX`, `handoff-full=(\d+)`} {
				for _, x := range regexp.MustCompile(re).FindAllStringSubmatch(totals, -1) {
					v, _ := strconv.Atoi(x[1])
					kernel += v
				}
			}
			maxLines := 50 + int(10*(took.Seconds()+1)) + 1
			if lines != written || written < 50 || written > maxLines || written+suppressed > sent || written+suppressed+kernel < sent {
				t.Errorf("flood of %d datagrams sent in %v: %d LOG lines in the log, totals %d written + %d suppressed (dropped before the rules %d); want the burst of 50 up to %d lines, all in the log, and written + suppressed (+ dropped before the rules) = %d\ntotals:\n%s",
					sent, took, lines, written, suppressed, kernel, maxLines, sent, totals)
			}
			t.Logf("flood of %d datagrams sent in %v: %d LOG lines written, %d suppressed, %d dropped before the rules (kernel, hand-off)", sent, took, written, suppressed, kernel)
			if !strings.Contains(totals, "reject answers: ") || !regexp.MustCompile(`tcp-reset=[1-9]`).MatchString(totals) ||
				!regexp.MustCompile(`icmp-port-unreachable=[1-9]`).MatchString(totals) || !regexp.MustCompile(`icmp6-port-unreachable=[1-9]`).MatchString(totals) {
				t.Errorf("totals do not count the answers by kind:\n%s", totals)
			}
		})
	}
}

// startRun starts statewire with args in l's bridge namespace, waits for a
// ping through it, and returns stop: SIGTERM, exit 0 within 10 s, and the
// process's stdout (the totals) and stderr (its log). A test that does
// not call stop has it called at cleanup.
func startRun(t *testing.T, l *lab.Lab, bin string, args ...string) (stop func() (stdout, stderr string)) {
	t.Helper()
	stdout, stderr := new(lab.SyncBuffer), new(lab.SyncBuffer)
	cmd := l.Command(l.BridgeNS, bin, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	stop = func() (string, string) {
		if stopped {
			return stdout.String(), stderr.String()
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("statewire run after SIGTERM: %v, want exit 0\nstderr: %s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("statewire run did not exit within 10s of SIGTERM")
		}
		if s := stderr.String(); strings.Contains(s, "frame accounting") {
			t.Errorf("statewire run reported unbalanced accounting: %s", s)
		}
		if err := l.CheckNoXDP(); err != nil {
			t.Errorf("after statewire run exited: %v", err)
		}
		return stdout.String(), stderr.String()
	}
	t.Cleanup(func() { stop() })
	// Loading the XDP programs takes seconds on a loaded machine.
	if _, ok := l.PingWithin(l.LeftNS, lab.RightIPv4.Addr().String(), 30*time.Second); !ok {
		t.Fatalf("no ping through statewire run\nstderr: %s", stderr.String())
	}
	return stop
}
