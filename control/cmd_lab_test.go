package control

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
)

// TestLabCommands runs `statewire run` as a process in a lab and drives it
// with the client subcommands over its control socket: -L after a TCP
// connection, sysctl, a bad rules load (traffic keeps flowing), SIGHUP
// reload, -D and -F. Needs root.
func TestLabCommands(t *testing.T) {
	l := lab.NewT(t, lab.Options{})
	bin := lab.StatewireBinary(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "sw.sock")
	rulesFile := filepath.Join(dir, "fw.rules")
	os.WriteFile(rulesFile, []byte("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"), 0o644)
	run, stderr := startRun(t, l, bin, sock, "--rules", rulesFile)
	sw := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{args[0], "--socket", sock}, args[1:]...)...)
		var out, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &e
		err := cmd.Run()
		if err != nil {
			return out.String(), &exec.ExitError{ProcessState: cmd.ProcessState, Stderr: e.Bytes()}
		}
		return out.String(), nil
	}

	dial, echo := echoPeer(t, l)
	conn, err := dial()
	if err != nil {
		t.Fatalf("TCP through statewire run: %v\n%s", err, stderr.String())
	}
	defer conn.Close()
	if err := echo(conn); err != nil {
		t.Fatal(err)
	}
	errText := func(err error) string {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(ee.Stderr)
		}
		if err != nil {
			return err.Error()
		}
		return ""
	}

	out, err := sw("conntrack", "-L", "-p", "tcp", "--dport", "8080")
	if err != nil || !strings.Contains(out, "ESTABLISHED src="+lab.LeftIPv4.Addr().String()) {
		t.Errorf("conntrack -L: got %q, %s; want the ESTABLISHED entry", out, errText(err))
	}
	out, err = sw("sysctl", "nf_conntrack_udp_timeout=45")
	if err != nil || out != "net.netfilter.nf_conntrack_udp_timeout = 45\n" {
		t.Errorf("sysctl set: got %q, %s", out, errText(err))
	}
	bad := filepath.Join(dir, "bad.rules")
	os.WriteFile(bad, []byte("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp --what -j DROP\nCOMMIT\n"), 0o644)
	if _, err := sw("rules", "load", bad); err == nil || !strings.Contains(errText(err), "bad.rules:3") {
		t.Errorf("rules load bad: got %q, want an error naming bad.rules:3", errText(err))
	}
	if err := echo(conn); err != nil {
		t.Errorf("traffic after a bad rules load: %v", err)
	}
	// SIGHUP reloads --rules: now new connections to 8080 are dropped.
	os.WriteFile(rulesFile, []byte("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate NEW -p tcp --dport 8080 -j DROP\nCOMMIT\n"), 0o644)
	run.Process.Signal(syscall.SIGHUP)
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, _ = sw("rules", "show")
		if strings.Contains(out, "--dport 8080") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("rules after SIGHUP: got %q, want the new file\n%s", out, stderr.String())
		}
	}
	if c, err := dial(); err == nil {
		c.Close()
		t.Errorf("new connection after SIGHUP reload: got through, want dropped")
	}
	if err := echo(conn); err != nil {
		t.Errorf("established flow after SIGHUP reload: %v", err)
	}
	if out, err := sw("conntrack", "-D", "-p", "tcp", "--dport", "8080", "--state", "ESTABLISHED"); err != nil || !strings.Contains(out, "dport=8080") {
		t.Errorf("conntrack -D: got %q, %s", out, errText(err))
	}
	if _, err := sw("conntrack", "-F"); err != nil {
		t.Errorf("conntrack -F: %s", errText(err))
	}
	if out, err := sw("conntrack", "-C"); err != nil || strings.TrimSpace(out) != "0" {
		// Entries may be recreated by a stray frame (ARP is not tracked).
		t.Errorf("conntrack -C after -F: got %q, %s; want 0", out, errText(err))
	}
}
