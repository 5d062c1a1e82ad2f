package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

// TestRunCommand runs `statewire run` as a process in the bridge namespace
// (ip netns exec), pings through it, stops it with SIGINT and checks the
// exit status, the throughput lines, the totals and that the XDP programs
// are gone.
func TestRunCommand(t *testing.T) {
	lab.RequireRoot(t)
	bin := lab.StatewireBinary(t)
	t.Run("help", func(t *testing.T) {
		var out bytes.Buffer
		cmd := exec.Command(bin, "run", "--help")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("run --help: %v\n%s", err, out.String())
		}
		for _, want := range []string{"Example:", "--port-a", "-ring-size int", "(default 2048)", "-xdp-mode string", "-stats-interval"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("run --help output lacks %q", want)
			}
		}
	})
	t.Run("warns about unserved queues", func(t *testing.T) {
		l := lab.NewT(t, lab.Options{Queues: 2})
		var stderr lab.SyncBuffer
		cmd := l.Command(l.BridgeNS, bin, "run", "--port-a", l.PortA, "--port-b", l.PortB, "--queues", "1", "--ring-size", "512",
			"--control-socket", "none")
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The warning comes before the start; Start logs "N workers" once
		// the workers run (and SIGTERM is handled).
		if !testenv.WaitFor(startWithin, func() bool { return strings.Contains(stderr.String(), " workers, ") }) {
			t.Errorf("statewire run did not start within %v; stderr:\n%s", startWithin, stderr.String())
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("statewire run after SIGTERM: %v, want exit 0\nstderr: %s", err, stderr.String())
		}
		want := "has 2 RX queues but --queues is 1"
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr got %q, want a warning containing %q", stderr.String(), want)
		}
	})
	t.Run("SIGHUP reloads the rules", func(t *testing.T) {
		l := lab.NewT(t, lab.Options{Queues: 2})
		rulesFile := filepath.Join(t.TempDir(), "fw.rules")
		write := func(text string) {
			if err := os.WriteFile(rulesFile, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
		var stderr lab.SyncBuffer
		cmd := l.Command(l.BridgeNS, bin, "run", "--port-a", l.PortA, "--port-b", l.PortB, "--queues", "2",
			"--ring-size", "512", "--rules", rulesFile, "--control-socket", filepath.Join(t.TempDir(), "ctl.sock"))
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM)
			if err := cmd.Wait(); err != nil {
				t.Errorf("statewire run after SIGTERM: %v, want exit 0\nstderr: %s", err, stderr.String())
			}
		}()
		if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
			t.Fatalf("ping with accept-all rules failed\nstderr: %s", stderr.String())
		}
		write("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p icmp -j DROP\nCOMMIT\n")
		cmd.Process.Signal(syscall.SIGHUP)
		if !testenv.WaitFor(5*time.Second, func() bool { return strings.Contains(stderr.String(), "SIGHUP: rules reloaded") }) {
			t.Fatalf("no \"SIGHUP: rules reloaded\" within 5s of SIGHUP; stderr:\n%s", stderr.String())
		}
		if ok, out := l.Ping(l.LeftNS, rightIP.String(), 2); ok {
			t.Errorf("ping after SIGHUP with an ICMP DROP rule got %q, want no reply\nstderr: %s", out, stderr.String())
		}
	})
	for _, cores := range coreCounts {
		t.Run(map[int]string{1: "cores=1", 2: "cores=2"}[cores], func(t *testing.T) {
			l := lab.NewT(t, lab.Options{Queues: 2})
			var stdout, stderr lab.SyncBuffer
			sock := filepath.Join(t.TempDir(), "ctl.sock")
			cmd := l.Command(l.BridgeNS, bin, "run", "--port-a", l.PortA, "--port-b", l.PortB,
				"--cores", map[int]string{1: "1", 2: "2"}[cores], "--queues", "2", "--ring-size", "512",
				"--stats-interval", "200ms", "--control-socket", sock)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() {
				if cmd.ProcessState == nil {
					cmd.Process.Kill()
					<-done
				}
			}()
			// Wait for the bridge to come up: the first ping may race it.
			ok := false
			var out string
			for range 10 {
				if ok, out = l.Ping(l.LeftNS, rightIP.String(), 2); ok {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if !ok {
				t.Fatalf("ping through statewire run got %q\nstderr: %s", out, stderr.String())
			}
			// The control socket lists the live table (conntrack -L).
			list, err := exec.Command(bin, "conntrack", "--socket", sock, "-L", "-o", "proc").Output()
			if err != nil {
				t.Errorf("statewire conntrack -L: %v", err)
			}
			if !strings.Contains(string(list), "icmp") || !strings.Contains(string(list), "src="+leftIP.String()) {
				t.Errorf("conntrack -L through the control socket got %q, want the ping's icmp entry", list)
			}
			// At least one stats line ("... pps ... | flows N") before the stop.
			if !testenv.WaitFor(5*time.Second, func() bool { return strings.Contains(stdout.String(), "| flows ") }) {
				t.Errorf("no stats line within 5s at --stats-interval 200ms; stdout:\n%s", stdout.String())
			}
			cmd.Process.Signal(syscall.SIGINT)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("statewire run after SIGINT: %v, want exit 0\nstderr: %s", err, stderr.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("statewire run did not exit within 10s of SIGINT")
			}
			so := stdout.String()
			for _, want := range []string{"pps", "A->B:", "B->A:", "forwarded", "states:"} {
				if !strings.Contains(so, want) {
					t.Errorf("stdout lacks %q:\n%s", want, so)
				}
			}
			if strings.Contains(stderr.String(), "frame accounting") {
				t.Errorf("statewire reported unbalanced accounting: %s", stderr.String())
			}
			if err := l.CheckNoXDP(); err != nil {
				t.Errorf("after exit: %v", err)
			}
			t.Logf("stdout:\n%s\nstderr:\n%s", so, stderr.String())
		})
	}
}
