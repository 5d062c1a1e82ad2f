package alg

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctlist"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/lab"
)

// TestMain builds the statewire binary at most once (lab.StatewireBinary)
// and removes it at the end.
func TestMain(m *testing.M) { os.Exit(lab.RunTests(m)) }

// rig is one lab with the datapath running on its bridge ports, either
// in-process (dp set: counters readable live) or as a `statewire run`
// process (dp nil: the counters are checked in its totals at exit).
type rig struct {
	l  *lab.Lab
	dp *bridge.Datapath
}

// rulesText is the policy of every test: NEW only from the left (PortA) and
// only to the control ports, ESTABLISHED,RELATED both ways. With helpers, the
// raw table attaches ftp, tftp and irc to their control connections. NEW is
// restricted to the control ports so that even a passive FTP data connection,
// which the left opens, passes only as RELATED.
func rulesText(portA string, helpers bool) string {
	var b strings.Builder
	if helpers {
		b.WriteString("*raw\n:PREROUTING ACCEPT [0:0]\n" +
			"-A PREROUTING -p tcp --dport 21 -j CT --helper ftp\n" +
			"-A PREROUTING -p udp --dport 69 -j CT --helper tftp\n" +
			"-A PREROUTING -p tcp --dport 6667 -j CT --helper irc\n" +
			"COMMIT\n")
	}
	fmt.Fprintf(&b, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"+
		"-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"+
		"-A FORWARD -m physdev --physdev-in %[1]s -p tcp --dport 21 -m conntrack --ctstate NEW -j ACCEPT\n"+
		"-A FORWARD -m physdev --physdev-in %[1]s -p udp --dport 69 -m conntrack --ctstate NEW -j ACCEPT\n"+
		"-A FORWARD -m physdev --physdev-in %[1]s -p tcp --dport 6667 -m conntrack --ctstate NEW -j ACCEPT\n"+
		"COMMIT\n", portA)
	return b.String()
}

// newRig starts a rig (e2etest.Start: 2 workers, so a data connection may
// land on another shard than its master) with or without the helper rules.
func newRig(t *testing.T, helpers bool) *rig {
	t.Helper()
	r := e2etest.Start(t, e2etest.Options{Cores: 2, Rules: rulesText("{PortA}", helpers)})
	return &rig{l: r.Lab, dp: r.DP}
}

// expectCounts are the expectation counters of the pipeline at one moment,
// with the RELATED packets and the frames the FORWARD rules dropped.
type expectCounts struct{ create, new, related, ruleDrops uint64 }

func (r *rig) counts() expectCounts {
	if r.dp == nil {
		return expectCounts{}
	}
	p := r.dp.Stats().Pipeline
	return expectCounts{p.ExpectCreate, p.ExpectNew, e2etest.StateCount(&p, "RELATED"), p.Drops[bridge.DropRule]}
}

// waitCounts waits (the workers publish their counters periodically) until
// the counters moved past before by at least want in every field, and returns
// the last difference seen.
func (r *rig) waitCounts(before expectCounts, want expectCounts) expectCounts {
	var d expectCounts
	for deadline := time.Now().Add(3 * time.Second); ; {
		c := r.counts()
		d = expectCounts{c.create - before.create, c.new - before.new, c.related - before.related, c.ruleDrops - before.ruleDrops}
		if (d.create >= want.create && d.new >= want.new && d.related >= want.related && d.ruleDrops >= want.ruleDrops) ||
			time.Now().After(deadline) {
			return d
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkRelated asserts that a transfer with the helper created an
// expectation, used it for a new connection, and saw RELATED packets.
func (r *rig) checkRelated(t *testing.T, before expectCounts) {
	t.Helper()
	if r.dp == nil {
		return // statewire run: checked in the totals at exit
	}
	d := r.waitCounts(before, expectCounts{1, 1, 1, 0})
	if d.create < 1 || d.new < 1 || d.related < 1 {
		t.Errorf("with the helper: expect_create +%d, expect_new +%d, RELATED packets +%d; want each >= 1", d.create, d.new, d.related)
	}
}

// checkNoRelated asserts that nothing was expected or RELATED without the
// helper, and that the FORWARD rules dropped frames: the transfer failed
// because of the firewall. It waits for the rule drop of the data
// connection to be published: the counters published with it cover the
// control connection's commands, which came first.
func (r *rig) checkNoRelated(t *testing.T, before expectCounts) {
	t.Helper()
	if r.dp == nil {
		return // statewire run: checked in the totals at exit
	}
	d := r.waitCounts(before, expectCounts{0, 0, 0, 1})
	if d.create != 0 || d.new != 0 || d.related != 0 {
		t.Errorf("without the helper: expect_create +%d, expect_new +%d, RELATED packets +%d; want 0", d.create, d.new, d.related)
	}
	if d.ruleDrops == 0 {
		t.Errorf("without the helper: no frame dropped by the FORWARD rules; want the data connection's")
	}
}

// tableLines returns the connection table in /proc/net/nf_conntrack format
// (nil for a statewire run rig, whose table this process cannot see).
func (r *rig) tableLines(t *testing.T) []string {
	t.Helper()
	if r.dp == nil {
		return nil
	}
	var lines []string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := r.dp.Now()
	err := r.dp.Table().Snapshot(ctx, func(es *flowtable.EntrySnapshot) {
		lines = append(lines, ctlist.Line(es, now, ctlist.Proc))
	})
	if err != nil {
		t.Fatalf("table snapshot: %v", err)
	}
	return lines
}

// checkHelperEntry asserts that the table holds a connection to port dport
// with helper=name, as the kernel's listing shows masters.
func (r *rig) checkHelperEntry(t *testing.T, dport int, name string) {
	t.Helper()
	if r.dp == nil {
		return
	}
	lines := r.tableLines(t)
	for _, l := range lines {
		if strings.Contains(l, fmt.Sprintf(" dport=%d ", dport)) && strings.Contains(l, "helper="+name) {
			return
		}
	}
	t.Errorf("no entry with dport=%d and helper=%s in the table:\n%s", dport, name, strings.Join(lines, "\n"))
}

// daemon starts a foreground daemon in ns and kills it and its children in
// t.Cleanup. Its output is logged when the test fails.
func (r *rig) daemon(t *testing.T, ns, name string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not installed (scripts/setup.sh installs it): %v", name, err)
	}
	cmd := r.l.Command(ns, name, args...)
	var out lab.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, so that the cleanup also kills the children
	// (vsftpd's sessions, in.tftpd's transfer processes) that hold the
	// output pipe and would otherwise outlive the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		// vsftpd's session processes call setsid and leave the group: kill
		// whatever else runs in the lab's namespace, all of it ours, except
		// this process (lab.Do may have left a thread of it there).
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", name, cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
}

// waitListen waits until something accepts TCP connections on addr, dialled
// from inside ns (so without crossing the bridge).
func (r *rig) waitListen(t *testing.T, ns, addr string) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		err = r.l.Do(ns, func() error {
			c, err := net.DialTimeout("tcp4", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
	}
	t.Fatalf("nothing listens on %s in %s: %v", addr, ns, err)
}

// waitUDP waits until a UDP socket is bound to port (ss inside ns).
func (r *rig) waitUDP(t *testing.T, ns string, port int) {
	t.Helper()
	want := fmt.Sprintf(":%d ", port)
	var out string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out, _ = r.l.Run(context.Background(), ns, "ss", "-uln")
		if strings.Contains(out, want) {
			return
		}
	}
	t.Fatalf("nothing bound to udp port %d in %s:\n%s", port, ns, out)
}

// publicDir returns a fresh temporary directory that unprivileged daemon
// users (ftp, nobody, irc) can read: t.TempDir is 0700 down from its parent.
func publicDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{d, filepath.Dir(d)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// randomFile writes size random bytes to dir/name and returns their SHA-256.
func randomFile(t *testing.T, dir, name string, size int) [32]byte {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

// fileSum returns the SHA-256 and size of a file ("" sum if unreadable).
func fileSum(path string) ([32]byte, int, error) {
	data, err := os.ReadFile(path)
	return sha256.Sum256(data), len(data), err
}

var (
	leftIP  = lab.LeftIPv4.Addr()
	rightIP = lab.RightIPv4.Addr()
)
