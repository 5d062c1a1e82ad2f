package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/control"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/offload"
)

// swProc is one `statewire run` process in the bridge namespace, in its
// own process group so that kill -9 reaches statewire itself.
type swProc struct {
	cmd            *exec.Cmd
	stdout, stderr *lab.SyncBuffer
	done           chan error
}

func startSW(t *testing.T, l *lab.Lab, bin string, args ...string) *swProc {
	t.Helper()
	p := &swProc{stdout: &lab.SyncBuffer{}, stderr: &lab.SyncBuffer{}, done: make(chan error, 1)}
	p.cmd = inBridgeNS(l, bin, append([]string{"run", "--port-a", l.PortA, "--port-b", l.PortB, "--ring-size", "512"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
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

// inBridgeNS runs name in the bridge's network namespace but the host's
// mount namespace (nsenter --net, not ip netns exec, which mounts a fresh
// /sys without bpffs): the pins must land in the host's bpffs to outlive
// the process, as under systemd.
func inBridgeNS(l *lab.Lab, name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + l.BridgeNS, name}, args...)...)
}

// runInBridgeNS runs name (statewire detach, conntrack) as inBridgeNS and
// returns its stdout; the error carries its stderr.
func runInBridgeNS(l *lab.Lab, name string, args ...string) (string, error) {
	cmd := inBridgeNS(l, name, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String(), nil
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		return stdout.String(), fmt.Errorf("%s %s: no exit within 10 s", name, strings.Join(args, " "))
	}
}

// signal sends sig to the process group and waits for the exit.
func (p *swProc) signal(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("kill -%d: %v", sig, err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("statewire run did not exit within 15s of signal %v\nstderr: %s", sig, p.stderr.String())
		return nil
	}
}

// failModeLab is a lab whose hosts' veths have GRO on (the ports' peers
// must run NAPI for XDP redirects into the ports: --fail-mode=open checks
// it) and static neighbours, and the bridge name (the lab's prefix, so
// that lab.RemoveStale finds the pins of a killed run). Its cleanup
// removes the bridge's pins, whatever happened, and fails the test if a
// pin or an XDP program was left.
func failModeLab(t *testing.T) (l *lab.Lab, bin, name, dir string) {
	lab.RequireRoot(t)
	bin = lab.StatewireBinary(t)
	l = lab.NewT(t, lab.Options{})
	e2etest.HostGRO(t, l, true)
	e2etest.StaticNeighbours(t, l)
	name = l.Prefix + "-fm"
	dir, err := offload.PinDir(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Runs after the processes are killed (cleanups run last first).
		if _, err := os.Stat(dir); err == nil {
			if !t.Failed() {
				t.Errorf("pins left in %s at the end of the test", dir)
			}
			offload.DetachPinned(dir)
		}
	})
	return l, bin, name, dir
}

func pingOK(t *testing.T, l *lab.Lab, count int) (bool, string) {
	t.Helper()
	return l.Ping(l.LeftNS, rightIP.String(), count)
}

func xdpOn(t *testing.T, l *lab.Lab, ifc string) uint32 {
	t.Helper()
	id, err := l.XDPAttached(ifc)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var failOpenRE = regexp.MustCompile(`failopen port=(\S+) packets=(\d+) bytes=(\d+)`)

// TestFailModeOpen: with --fail-mode=open ping keeps answering after
// statewire is killed with -9 and before it is started again, through the
// program that stays attached and pinned; the next start adopts it (same
// name, no gap) and its `conntrack -S` shows the frames forwarded unjudged
// meanwhile; a graceful stop leaves it forwarding too; `statewire detach`
// then removes program and pins (ip link shows no xdp, bpffs no pin),
// reports the count, and nothing passes any more.
func TestFailModeOpen(t *testing.T) {
	l, bin, name, dir := failModeLab(t)
	args := []string{"--fail-mode=open", "--name", name}
	first := startSW(t, l, bin, args...)
	if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 10*time.Second); !ok {
		t.Fatalf("no ping through statewire within %v\nstderr: %s", d, first.stderr.String())
	}
	for _, f := range []string{"link_a", "link_b", "flows", "xsks_a", "xsks_b", "fail_open_stats"} {
		if _, err := os.Stat(dir + "/" + f); err != nil {
			t.Errorf("fail-open run: pin %s: %v", f, err)
		}
	}
	progA := xdpOn(t, l, l.PortA)

	// A ping every 50 ms across the kill: the program forwards from the
	// moment the sockets are gone.
	across := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, _ := l.Run(ctx, l.LeftNS, "ping", "-c", "60", "-i", "0.05", "-W", "1", rightIP.String())
		across <- out
	}()
	time.Sleep(time.Second) // the kill lands in the middle of the 3 s of pings
	if err := first.signal(t, syscall.SIGKILL); err == nil {
		t.Fatalf("first run exited cleanly, want killed")
	}
	if id := xdpOn(t, l, l.PortA); id != progA {
		t.Fatalf("after kill -9: XDP program on %s got id %d, want %d still attached", l.PortA, id, progA)
	}
	if ok, out := pingOK(t, l, 5); !ok {
		t.Fatalf("after kill -9, before any restart: ping through the fail-open program failed:\n%s", out)
	}
	out := <-across
	t.Logf("60 pings every 50 ms across the kill: %s", lastLine(out, "received"))
	if n := pingsReceived(out); n < 50 {
		t.Errorf("pings across the kill: %d of 60 answered, want at least 50:\n%s", n, out)
	}

	second := startSW(t, l, bin, args...)
	if !testenv.WaitFor(15*time.Second, func() bool { return strings.Contains(second.stderr.String(), "datapath "+l.PortA) }) {
		t.Fatalf("second run did not start:\n%s", second.stderr.String())
	}
	if s := second.stderr.String(); !strings.Contains(s, "adopted the pinned XDP link") {
		t.Errorf("second run did not adopt the pinned links:\n%s", s)
	}
	if ok, out := pingOK(t, l, 3); !ok {
		t.Fatalf("second run: ping failed:\n%s", out)
	}
	stats, err := runInBridgeNS(l, bin, "conntrack", "-S", "--name", name)
	if err != nil {
		t.Fatalf("conntrack -S: %v", err)
	}
	m := failOpenRE.FindAllStringSubmatch(stats, -1)
	var fo uint64
	for _, x := range m {
		n, _ := strconv.ParseUint(x[2], 10, 64)
		fo += n
	}
	if len(m) != 2 || fo < 10 {
		t.Errorf("conntrack -S of the next run: fail-open lines %q, want two with the >= 10 frames forwarded while killed:\n%s", m, stats)
	}
	t.Logf("conntrack -S after the restart: %q", m)

	if err := second.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("second run after SIGTERM: %v\n%s", err, second.stderr.String())
	}
	if xdpOn(t, l, l.PortA) == 0 || xdpOn(t, l, l.PortB) == 0 {
		t.Fatalf("after a graceful stop in fail-open mode: XDP program gone, want it attached")
	}
	if ok, out := pingOK(t, l, 3); !ok {
		t.Fatalf("after a graceful stop in fail-open mode: ping failed:\n%s", out)
	}

	// A graceful restart: pings every 50 ms while a third run takes the
	// program over from the pins and stops again.
	across = make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, _ := l.Run(ctx, l.LeftNS, "ping", "-c", "100", "-i", "0.05", "-W", "1", rightIP.String())
		across <- out
	}()
	third := startSW(t, l, bin, args...)
	if !testenv.WaitFor(15*time.Second, func() bool { return strings.Contains(third.stderr.String(), "datapath "+l.PortA) }) {
		t.Fatalf("third run did not start:\n%s", third.stderr.String())
	}
	if !strings.Contains(third.stderr.String(), "adopted the pinned XDP link") {
		t.Errorf("third run (after a graceful stop) did not adopt the pinned links:\n%s", third.stderr.String())
	}
	if err := third.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("third run after SIGTERM: %v\n%s", err, third.stderr.String())
	}
	out = <-across
	t.Logf("100 pings every 50 ms across a start and a graceful stop: %s", lastLine(out, "received"))
	if n := pingsReceived(out); n < 95 {
		t.Errorf("pings across a graceful restart: %d of 100 answered, want at least 95:\n%s", n, out)
	}

	det, err := runInBridgeNS(l, bin, "detach", "--name", name)
	if err != nil {
		t.Fatalf("statewire detach: %v", err)
	}
	t.Logf("statewire detach: %s", strings.TrimSpace(det))
	if !strings.Contains(det, "detached from "+l.PortA+" and "+l.PortB) || !strings.Contains(det, "fail-open: forwarded unjudged A->B") {
		t.Errorf("detach output got %q, want the ports and the fail-open count", det)
	}
	checkNothingLeft(t, l, dir)
	if ok, out := pingOK(t, l, 2); ok || !strings.Contains(out, " 0 received") {
		t.Errorf("after detach: ping got answers, want none (nothing passes without statewire):\n%s", out)
	}
	_, err = runInBridgeNS(l, bin, "detach", "--name", name)
	if err == nil || !strings.Contains(err.Error(), "nothing to detach") {
		t.Errorf("second detach got %v, want 'nothing to detach'", err)
	}
}

// TestFailModeOpenOffloadOff: with --offload=off the same program,
// loaded slow-only, keeps the ports forwarding after kill -9, and detach
// removes it.
func TestFailModeOpenOffloadOff(t *testing.T) {
	l, bin, name, dir := failModeLab(t)
	p := startSW(t, l, bin, "--fail-mode=open", "--offload=off", "--name", name)
	if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 10*time.Second); !ok {
		t.Fatalf("no ping through statewire within %v\nstderr: %s", d, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "fast path off") {
		t.Errorf("--offload=off: the log does not say the fast path is off:\n%s", p.stderr.String())
	}
	if err := p.signal(t, syscall.SIGKILL); err == nil {
		t.Fatalf("run exited cleanly, want killed")
	}
	if ok, out := pingOK(t, l, 5); !ok {
		t.Fatalf("--offload=off, after kill -9: ping through the fail-open program failed:\n%s", out)
	}
	det, err := runInBridgeNS(l, bin, "detach", "--name", name)
	if err != nil {
		t.Fatalf("statewire detach: %v", err)
	}
	if m := regexp.MustCompile(`A->B (\d+) frames`).FindStringSubmatch(det); m == nil || m[1] == "0" {
		t.Errorf("detach output got %q, want the frames forwarded while killed", det)
	}
	checkNothingLeft(t, l, dir)
}

// TestFailModeClosedDefault: without --fail-mode nothing passes once
// statewire is killed, and it leaves neither an XDP program nor a pin.
func TestFailModeClosedDefault(t *testing.T) {
	l, bin, name, dir := failModeLab(t)
	p := startSW(t, l, bin, "--name", name)
	if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 10*time.Second); !ok {
		t.Fatalf("no ping through statewire within %v\nstderr: %s", d, p.stderr.String())
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("closed mode while running: %s got %v, want no pins", dir, err)
	}
	if err := p.signal(t, syscall.SIGKILL); err == nil {
		t.Fatalf("run exited cleanly, want killed")
	}
	if !testenv.WaitFor(2*time.Second, func() bool { return xdpOn(t, l, l.PortA) == 0 && xdpOn(t, l, l.PortB) == 0 }) {
		t.Fatalf("closed mode: XDP program still attached 2 s after kill -9")
	}
	if ok, out := pingOK(t, l, 2); ok || !strings.Contains(out, " 0 received") {
		t.Errorf("closed mode after kill -9: ping got answers, want none:\n%s", out)
	}
	checkNothingLeft(t, l, dir)
}

// TestFailOpenRestartKeepsFastFlows: a UDP echo flow in the fast path
// (--offload=on) keeps being forwarded by the pinned program while
// statewire is killed: the packet counters of the pinned flow map grow
// during the gap and the echoes keep coming. The next start adopts the
// map, sends the flows to the slow path (its table is fresh: userspace
// stays the authority) and the echoes keep coming.
func TestFailOpenRestartKeepsFastFlows(t *testing.T) {
	l, bin, name, dir := failModeLab(t)
	// No table carried over (the state file is another test's subject,
	// TestFailOpenRestartKeepsDownloadInFastPath): the map is revoked.
	args := []string{"--fail-mode=open", "--offload=on", "--name", name, "--state-file", "none"}
	first := startSW(t, l, bin, args...)
	if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 10*time.Second); !ok {
		t.Fatalf("no ping through statewire within %v\nstderr: %s", d, first.stderr.String())
	}
	addr := &net.UDPAddr{IP: rightIP.AsSlice(), Port: 5007}
	udpEcho(t, l, l.RightNS, addr)
	c := dialUDP(t, l, l.LeftNS, addr)
	var sent, got atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	// A sender every 2 ms and a reader counting every echo that comes
	// back (a late echo must not put a lock-step loop out of step).
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write([]byte(fmt.Sprintf("fail-open echo %d", i))); err == nil {
				sent.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	go func() {
		buf := make([]byte, 256)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return // closed by dialUDP's cleanup
			}
			if strings.HasPrefix(string(buf[:k]), "fail-open echo ") {
				got.Add(1)
			}
		}
	}()
	defer func() { close(stop); <-done }()

	var flows int
	var pk uint64
	if !testenv.WaitFor(15*time.Second, func() bool {
		flows, pk, _ = offload.PinnedFlows(dir)
		return flows >= 1 && pk > 20
	}) {
		t.Fatalf("the echo flow is not in the fast path after 15 s (pinned map: %d flows, %d packets)\nstderr: %s", flows, pk, first.stderr.String())
	}
	if err := first.signal(t, syscall.SIGKILL); err == nil {
		t.Fatalf("first run exited cleanly, want killed")
	}
	_, atKill, err := offload.PinnedFlows(dir)
	if err != nil {
		t.Fatal(err)
	}
	gotAtKill := got.Load()
	var now uint64
	if !testenv.WaitFor(5*time.Second, func() bool {
		_, now, _ = offload.PinnedFlows(dir)
		return now >= atKill+100 && got.Load() >= gotAtKill+50
	}) {
		t.Fatalf("during the gap: pinned flow packets %d -> %d, echoes %d -> %d; want the fast path to keep forwarding", atKill, now, gotAtKill, got.Load())
	}
	t.Logf("during the gap: the pinned flow map's packets grew %d -> %d, %d echoes answered", atKill, now, got.Load()-gotAtKill)

	second := startSW(t, l, bin, args...)
	re := regexp.MustCompile(`its (\d+) fast-path flows go to the slow path`)
	var adopted []string
	if !testenv.WaitFor(15*time.Second, func() bool { adopted = re.FindStringSubmatch(second.stderr.String()); return adopted != nil }) {
		t.Fatalf("second run did not report the adopted flows:\n%s", second.stderr.String())
	}
	if n, _ := strconv.Atoi(adopted[1]); n < 1 {
		t.Errorf("second run adopted %d fast-path flows, want the echo flow", n)
	}
	gotAtStart := got.Load()
	if !testenv.WaitFor(5*time.Second, func() bool { return got.Load() >= gotAtStart+100 }) {
		t.Errorf("after the restart: echoes %d -> %d, want them to keep coming", gotAtStart, got.Load())
	}
	t.Logf("echoes: %d sent, %d answered over the run, kill and restart", sent.Load(), got.Load())

	if err := second.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("second run after SIGTERM: %v\n%s", err, second.stderr.String())
	}
	det, err := runInBridgeNS(l, bin, "detach", "--name", name)
	if err != nil {
		t.Fatalf("statewire detach: %v", err)
	}
	t.Logf("statewire detach: %s", strings.TrimSpace(det))
	checkNothingLeft(t, l, dir)
}

// checkNothingLeft fails t if an XDP program is on a port (netlink and
// `ip link`) or the bridge's bpffs directory exists.
func checkNothingLeft(t *testing.T, l *lab.Lab, dir string) {
	t.Helper()
	if !testenv.WaitFor(2*time.Second, func() bool { return xdpOn(t, l, l.PortA) == 0 && xdpOn(t, l, l.PortB) == 0 }) {
		t.Errorf("XDP program still attached: %s id %d, %s id %d", l.PortA, xdpOn(t, l, l.PortA), l.PortB, xdpOn(t, l, l.PortB))
	}
	for _, ifc := range []string{l.PortA, l.PortB} {
		out, err := l.Run(context.Background(), l.BridgeNS, "ip", "link", "show", ifc)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "xdp") {
			t.Errorf("ip link show %s got %q, want no xdp", ifc, out)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("bpffs: %s got %v, want it gone", dir, err)
	}
}

var receivedRE = regexp.MustCompile(`(\d+) received`)

func pingsReceived(pingOut string) int {
	m := receivedRE.FindStringSubmatch(pingOut)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func lastLine(s, with string) string {
	for _, ln := range strings.Split(s, "\n") {
		if strings.Contains(ln, with) {
			return strings.TrimSpace(ln)
		}
	}
	return ""
}

// fastLineRE reads `conntrack -S`'s fast-path flow line.
var fastLineRE = regexp.MustCompile(`(?m)^fastpath flows=(\d+) offered=(\d+) adopted=(\d+) refused=\d+ taken_back_slow_path=(\d+) taken_back_remove=(\d+) taken_back_settings=(\d+) .* errors=(\d+)`)

// fastLine is that line's numbers.
type fastLine struct{ flows, offered, adopted, takenBack, errors uint64 }

func readFastLine(t *testing.T, stats string) fastLine {
	t.Helper()
	m := fastLineRE.FindStringSubmatch(stats)
	if m == nil {
		t.Fatalf("conntrack -S has no fastpath flows= line:\n%s", stats)
	}
	n := make([]uint64, len(m))
	for i := 1; i < len(m); i++ {
		n[i], _ = strconv.ParseUint(m[i], 10, 64)
	}
	return fastLine{flows: n[1], offered: n[2], adopted: n[3], takenBack: n[4] + n[5] + n[6], errors: n[7]}
}

var totalInsertRE = regexp.MustCompile(`(?m)^total.* insert=(\d+)`)

// totalInserts reads the insert= counter of `conntrack -S`'s total line.
func totalInserts(t *testing.T, stats string) uint64 {
	t.Helper()
	m := totalInsertRE.FindStringSubmatch(stats)
	if m == nil {
		t.Fatalf("conntrack -S has no total insert= counter:\n%s", stats)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// TestFailOpenRestartKeepsDownloadInFastPath: with --fail-mode=open, the
// fast path on and a state file, a TCP download pushed from the right
// (the rules admit NEW only from the left) is held by the fast path
// ([OFFLOAD]). statewire is killed with -9 in the middle, started again,
// then restarted gracefully (SIGTERM). Across both the flow's frames keep
// being forwarded during the gap (the pinned map's packet counters grow),
// the new process adopts the table and the map and keeps the flow in the
// fast path: it lists it [OFFLOAD] ESTABLISHED, counts it adopted and has
// taken nothing back, the map's counters carry on from the gap's, the
// table's insert counter carries over, and the download completes intact
// (SHA-256).
func TestFailOpenRestartKeepsDownloadInFastPath(t *testing.T) {
	l, bin, name, dir := failModeLab(t)
	rulesPath := filepath.Join(t.TempDir(), "fw.rules")
	if err := os.WriteFile(rulesPath, []byte(strings.ReplaceAll(restartRules, "{PortA}", l.PortA)), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(control.SocketDir, name+".table")
	t.Cleanup(func() { os.Remove(state) })
	args := []string{"--fail-mode=open", "--offload=on", "--name", name, "--rules", rulesPath, "--state-file", state}
	ctl := func(args ...string) string {
		t.Helper()
		out, err := runInBridgeNS(l, bin, append([]string{"conntrack", "--name", name}, args...)...)
		if err != nil {
			t.Fatalf("statewire conntrack %v: %v", args, err)
		}
		return out
	}
	listing := func() string { return ctl("-L", "-p", "tcp", "--dport", "5001") }
	started := func(p *swProc) {
		t.Helper()
		if !testenv.WaitFor(startWithin, func() bool { return strings.Contains(p.stderr.String(), " workers, ") }) {
			t.Fatalf("statewire run did not start within %v; stderr:\n%s", startWithin, p.stderr.String())
		}
	}
	pinned := func() (int, uint64) {
		t.Helper()
		n, pk, err := offload.PinnedFlows(dir)
		if err != nil {
			t.Fatal(err)
		}
		return n, pk
	}

	first := startSW(t, l, bin, args...)
	started(first)
	// Two restarts, each with its gap and checks, must fit in the
	// download: on a loaded machine a start takes seconds and the usual
	// 8-second download ended during the second round (seen twice).
	d := startPacedDownloadOver(t, l, max(restartPace, 24*time.Second))
	// In the fast path and active: listed [OFFLOAD], the pinned map's
	// packets moving.
	var last uint64
	if !testenv.WaitFor(15*time.Second, func() bool {
		n, pk := pinned()
		moving := n == 1 && pk > last && last > 0
		last = pk
		return moving && d.got.Load() >= restartSize/8 && strings.Contains(listing(), "[OFFLOAD]")
	}) {
		t.Fatalf("the download is not in the fast path (%d of %d bytes; conntrack -L %q)\nstderr: %s", d.got.Load(), restartSize, listing(), first.stderr.String())
	}
	prev := first
	for round, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		inserts := totalInserts(t, ctl("-S"))
		err := prev.signal(t, sig)
		if sig == syscall.SIGKILL && err == nil {
			t.Fatalf("run exited cleanly, want killed")
		}
		if sig == syscall.SIGTERM && err != nil {
			t.Fatalf("run after SIGTERM: %v\n%s", err, prev.stderr.String())
		}
		_, atStop := pinned()
		gotAtStop := d.got.Load()
		var inGap uint64
		if !testenv.WaitFor(5*time.Second, func() bool {
			_, inGap = pinned()
			return inGap >= atStop+50 && d.got.Load() >= gotAtStop+64<<10
		}) {
			t.Fatalf("gap after %v: pinned flow packets %d -> %d, download %d -> %d bytes; want the fast path to keep forwarding it", sig, atStop, inGap, gotAtStop, d.got.Load())
		}
		next := startSW(t, l, bin, args...)
		started(next)
		if !strings.Contains(next.stderr.String(), "1 kept in the fast path, 0 taken back") {
			t.Errorf("after %v: the new process did not keep the flow; stderr:\n%s", sig, next.stderr.String())
		}
		after := listing()
		if !strings.Contains(after, "ESTABLISHED") || !strings.Contains(after, "[OFFLOAD]") {
			t.Errorf("after %v: conntrack -L %q, want the download [OFFLOAD] ESTABLISHED", sig, after)
		}
		if n, pk := pinned(); n != 1 || pk < inGap {
			t.Errorf("after %v: pinned map %d flows, %d packets; want the flow with at least the gap's %d", sig, n, pk, inGap)
		}
		// The flow stays in the fast path: the map's counters go on, the
		// download too, and nothing is taken back.
		_, atStart := pinned()
		gotAtStart := d.got.Load()
		if !testenv.WaitFor(5*time.Second, func() bool {
			_, pk := pinned()
			return pk >= atStart+100 && d.got.Load() >= gotAtStart+128<<10
		}) {
			_, pk := pinned()
			t.Errorf("after %v: pinned flow packets %d -> %d, download %d -> %d bytes; want both to go on", sig, atStart, pk, gotAtStart, d.got.Load())
		}
		stats := ctl("-S")
		fl := readFastLine(t, stats)
		if fl.adopted != 1 || fl.flows < 1 || fl.takenBack != 0 || fl.errors != 0 {
			t.Errorf("after %v: conntrack -S fast path %+v; want 1 adopted, in the fast path, nothing taken back, no error:\n%s", sig, fl, stats)
		}
		if n := totalInserts(t, stats); n < inserts {
			t.Errorf("after %v: total insert=%d, want at least the %d before (carried over)", sig, n, inserts)
		}
		t.Logf("round %d (%v): gap forwarded %d fast-path packets (%d -> %d), download at %d of %d bytes; %s", round, sig, inGap-atStop, atStop, inGap,
			d.got.Load(), restartSize, lastLine(stats, "fastpath flows="))
		prev = next
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("download across the restarts: %v\nstderr:\n%s", err, prev.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("download did not finish within 60 s (%d of %d bytes)", d.got.Load(), restartSize)
	}
	if err := prev.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("last run after SIGTERM: %v\n%s", err, prev.stderr.String())
	}
	if _, err := runInBridgeNS(l, bin, "detach", "--name", name); err != nil {
		t.Fatalf("statewire detach: %v", err)
	}
	checkNothingLeft(t, l, dir)
}
