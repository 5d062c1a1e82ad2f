package alg

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
)

// newRunRig builds a 2-queue lab and runs `statewire run --rules FILE` in its
// bridge namespace. At cleanup (after the daemons, registered later, are
// gone) it stops the process with SIGINT and calls check with its totals.
func newRunRig(t *testing.T, bin string, helpers bool, check func(t *testing.T, totals string)) *rig {
	t.Helper()
	l := lab.NewT(t, lab.Options{Queues: 2})
	rulesFile := filepath.Join(t.TempDir(), "fw.rules")
	if err := os.WriteFile(rulesFile, []byte(rulesText(l.PortA, helpers)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := l.Command(l.BridgeNS, bin, "run", "--port-a", l.PortA, "--port-b", l.PortB,
		"--cores", "2", "--queues", "2", "--ring-size", "1024", "--hashsize", "4096", "--rules", rulesFile)
	var stdout, stderr lab.SyncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("statewire run after SIGINT: %v, want exit 0\nstderr: %s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("statewire run did not exit within 10s of SIGINT")
		}
		if strings.Contains(stderr.String(), "frame accounting") {
			t.Errorf("statewire reported unbalanced accounting: %s", stderr.String())
		}
		t.Logf("statewire run totals:\n%s", stdout.String())
		check(t, stdout.String())
	})
	// Start logs "N workers" once the programs are attached and the
	// workers run; verifying the fast-path program alone took 6-12 s on
	// a loaded host.
	for deadline := time.Now().Add(40 * time.Second); !strings.Contains(stderr.String(), " workers, "); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("statewire run did not start within 40s; stderr:\n%s", stderr.String())
		}
	}
	return &rig{l: l}
}

// relatedRe finds the RELATED packet count in the totals' "states:" line.
var relatedRe = regexp.MustCompile(`(?m)^states:.* RELATED=(\d+)`)

// relatedTotal returns the RELATED packet count statewire run printed (0 if
// none).
func relatedTotal(totals string) int {
	m := relatedRe.FindStringSubmatch(totals)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestStatewireRun runs the same peers through the `statewire run` command
// with the rules in a file, as an operator would: FTP in active (PORT) and
// passive (EPSV) mode, a TFTP get and an IRC DCC SEND. With the helper rules
// every transfer works and the totals count at least one RELATED packet per
// data connection (4); without them every data connection fails and the
// totals count none.
func TestStatewireRun(t *testing.T) {
	lab.RequireRoot(t)
	bin := lab.StatewireBinary(t)
	modes := []ftpMode{ftpModes[0], ftpModes[3]}
	for _, helpers := range []bool{true, false} {
		t.Run(map[bool]string{true: "helper", false: "nohelper"}[helpers], func(t *testing.T) {
			r := newRunRig(t, bin, helpers, func(t *testing.T, totals string) {
				got := relatedTotal(totals)
				if helpers && got < len(modes)+2 {
					t.Errorf("with the helpers: %d RELATED packets in the totals, want >= %d (one per data connection)", got, len(modes)+2)
				}
				if !helpers && got != 0 {
					t.Errorf("without the helpers: %d RELATED packets in the totals, want 0", got)
				}
			})
			t.Run("ftp", func(t *testing.T) { runFTP(t, r, helpers, modes) })
			t.Run("tftp", func(t *testing.T) { runTFTP(t, r, helpers) })
			t.Run("irc-dcc", func(t *testing.T) { runDCC(t, r, helpers) })
		})
	}
}
