package faults

import (
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/offload"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// runProc is one `statewire run` process in the bridge namespace.
type runProc struct {
	cmd            *exec.Cmd
	stdout, stderr *lab.SyncBuffer
	done           chan error
}

func startRun(t *testing.T, l *lab.Lab, bin string) *runProc {
	t.Helper()
	p := &runProc{stdout: &lab.SyncBuffer{}, stderr: &lab.SyncBuffer{}, done: make(chan error, 1)}
	p.cmd = l.Command(l.BridgeNS, bin, "run", "--port-a", l.PortA, "--port-b", l.PortB,
		"--cores", "2", "--queues", "2", "--ring-size", "512", "--stats-interval", "200ms", "--control-socket", "none")
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	// Its own process group, so kill -9 reaches statewire itself and not
	// only the `ip netns exec` wrapper (which execs it anyway).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start statewire run: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	return p
}

// wait waits up to d for the process to exit.
func (p *runProc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // keep it for the cleanup
		return err
	case <-time.After(d):
		t.Fatalf("statewire run did not exit within %v\nstderr: %s", d, p.stderr.String())
		return nil
	}
}

// totalsRE matches the exit totals of `statewire run`.
var totalsRE = regexp.MustCompile(`(?m)^([AB])->[AB]: (\d+) frames in \(\d+ bytes\), (\d+) forwarded, (\d+) dropped`)

// TestKillAndRestart kills `statewire run` with SIGKILL while a TCP transfer
// and a UDP stream go through it, leaves a netlink-attached XDP program on
// port A (what an older tool or version would leave), restarts statewire on
// the same ports and checks: the restart replaces the stale program and
// says so, binds the same queues without error, the transfer that spanned
// the kill completes intact, a new ping and TCP transfer pass, and the
// second run's exit totals balance.
func TestKillAndRestart(t *testing.T) {
	lab.RequireRoot(t)
	bin := lab.StatewireBinary(t)
	l := lab.NewT(t, lab.Options{Queues: 2})
	e2etest.StaticNeighbours(t, l)

	first := startRun(t, l, bin)
	if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("first run: no ping through statewire within %v\nstderr: %s", d, first.stderr.String())
	}
	// 16 MiB in 64 KiB writes 10 ms apart: about 2.6 s of transfer.
	spanning := e2etest.StartPacedTransfer(t, l, l.LeftNS, l.RightNS, net.JoinHostPort(rightIP.String(), "5001"), 16<<20, 10*time.Millisecond).Done()
	udp := startUDP(t, l, 9001, 200, 200*time.Microsecond, 0)
	time.Sleep(800 * time.Millisecond)
	lines := strings.Count(first.stdout.String(), "pps")
	if err := syscall.Kill(-first.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9: %v", err)
	}
	killedAt := time.Now()
	err := first.wait(t, 5*time.Second)
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("first run exit got %v, want killed by SIGKILL", err)
	}
	t.Logf("first run killed after %d stats lines, UDP sent %d received %d so far", lines, udp.sent.Load(), udp.got.Load())

	// The bpf_links die with the process: the ports are free at once.
	var progGone time.Duration
	for {
		id, err := l.XDPAttached(l.PortA)
		if err != nil {
			t.Fatal(err)
		}
		if id == 0 {
			progGone = time.Since(killedAt)
			break
		}
		if time.Since(killedAt) > 2*time.Second {
			t.Fatalf("XDP program of the killed run still on %s after 2s", l.PortA)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("killed run's XDP program gone from %s after %v", l.PortA, progGone.Round(time.Millisecond))

	// A stale program attached through netlink, not tied to any process.
	staleID := attachStale(t, l)

	restartAt := time.Now()
	second := startRun(t, l, bin)
	d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 10*time.Second)
	if !ok {
		t.Fatalf("restart: no ping within %v\nstderr: %s", d, second.stderr.String())
	}
	t.Logf("restart: forwarding (ping) %v after the restart, %v after the kill", time.Since(restartAt).Round(time.Millisecond),
		time.Since(killedAt).Round(time.Millisecond))
	if !strings.Contains(second.stderr.String(), fmt.Sprintf("replaced stale XDP program id %d", staleID)) {
		t.Errorf("restart stderr lacks the replacement of stale program %d:\n%s", staleID, second.stderr.String())
	}
	if s := strings.ToLower(second.stderr.String()); strings.Contains(s, "error") || strings.Contains(s, "warning") {
		t.Errorf("restart stderr reports a problem:\n%s", second.stderr.String())
	}
	select {
	case err := <-spanning:
		if err != nil {
			t.Errorf("TCP transfer spanning the kill: %v", err)
		} else {
			t.Logf("TCP transfer spanning the kill: 16 MiB intact, done %v after the kill", time.Since(killedAt).Round(time.Millisecond))
		}
	case <-time.After(60 * time.Second):
		t.Errorf("TCP transfer spanning the kill did not finish within 60s")
	}
	udp.close()
	t.Logf("UDP stream across the kill: sent %d, received %d (lost %d while no bridge ran)",
		udp.sent.Load(), udp.got.Load(), udp.sent.Load()-udp.got.Load())
	transferOK(t, l, 5002, 8<<20)

	if err := syscall.Kill(-second.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := second.wait(t, 10*time.Second); err != nil {
		t.Fatalf("restarted run after SIGINT: %v, want exit 0\nstderr: %s", err, second.stderr.String())
	}
	out := second.stdout.String()
	m := totalsRE.FindAllStringSubmatch(out, -1)
	if len(m) != 2 {
		t.Fatalf("exit totals: got %d direction lines, want 2:\n%s", len(m), out)
	}
	for _, d := range m {
		in, _ := strconv.ParseUint(d[2], 10, 64)
		fwd, _ := strconv.ParseUint(d[3], 10, 64)
		drop, _ := strconv.ParseUint(d[4], 10, 64)
		t.Logf("restarted run %s: in %d forwarded %d dropped %d", d[1], in, fwd, drop)
		if in != fwd+drop {
			t.Errorf("restarted run %s: %d in, want forwarded %d + dropped %d", d[1], in, fwd, drop)
		}
		if in == 0 {
			t.Errorf("restarted run %s: no frames in", d[1])
		}
	}
	if strings.Contains(second.stderr.String(), "frame accounting") {
		t.Errorf("restarted run reported unbalanced accounting:\n%s", second.stderr.String())
	}
	if err := l.CheckNoXDP(); err != nil {
		t.Errorf("after exit: %v", err)
	}
}

// attachStale attaches a statewire XDP program to port A through netlink
// (no bpf_link: it outlives the process that loaded it) and returns its id.
func attachStale(t *testing.T, l *lab.Lab) uint32 {
	t.Helper()
	p, err := offload.Load(offload.Options{SlowOnly: true})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	defer p.Close()
	var id uint32
	err = l.Do(l.BridgeNS, func() error {
		nl, err := netlink.LinkByName(l.PortA)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetXdpFdWithFlags(nl, p.EBPF(offload.PortA).FD(), unix.XDP_FLAGS_DRV_MODE); err != nil {
			return err
		}
		att, pid, err := offload.XDPAttached(l.PortA)
		if err == nil && !att {
			err = fmt.Errorf("netlink shows no program after the attach")
		}
		id = pid
		return err
	})
	if err != nil {
		t.Fatalf("attach stale program: %v", err)
	}
	t.Logf("stale netlink XDP program id %d on %s", id, l.PortA)
	return id
}
