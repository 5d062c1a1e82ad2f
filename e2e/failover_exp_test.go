package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
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

// TestFailoverFTPExpectation: an FTP data connection announced BEFORE the
// failover and opened AFTER it. The client's PORT command crosses the
// active bridge, whose FTP helper registers the expectation of the
// server's data connection (from the right: NEW from the right is dropped
// unless RELATED); the expectation reaches the standby's external cache
// (statewire sync -e, listed as conntrack -L expect); the active bridge is
// killed; the standby commits (sync -c: the control connection and its
// expectation) and takes over; then RETR makes the server open the data
// connection, which must be RELATED on the standby, since no command
// crosses it in between, and carry the whole file.
func TestFailoverFTPExpectation(t *testing.T) {
	lab.RequireRoot(t)
	bin := lab.StatewireBinary(t)
	l := lab.NewT(t, lab.Options{})
	par, err := l.AddParallel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	active, actName, sbyName := startFailoverPair(t, l, par, bin, "--offload", "off")

	ftpDir := t.TempDir()
	data := make([]byte, 1<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(ftpDir, "file.bin"), data, 0o644)
	ftp := startFTP(t, l, ftpDir)

	// PORT before the failover.
	var ln net.Listener
	if err := l.Do(l.LeftNS, func() (err error) { ln, err = net.Listen("tcp4", leftIP.String()+":0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dport := ln.Addr().(*net.TCPAddr).Port
	ftp.cmd(t, fmt.Sprintf("PORT 198,18,0,1,%d,%d", dport>>8, dport&255), "200")
	wantExp := fmt.Sprintf("proto=6 src=%s dst=%s sport=0 dport=%d mask-src=255.255.255.255 mask-dst=255.255.255.255 sport=0 dport=65535 master-src=%s master-dst=%s",
		rightIP, leftIP, dport, leftIP, rightIP)
	var ext string
	if !testenv.WaitFor(10*time.Second, func() bool {
		ext, _ = swSync(bin, sbyName, "-e")
		return strings.Contains(ext, wantExp) && strings.Contains(ext, "dport=21 ")
	}) {
		in, _ := swSync(bin, actName, "-i")
		st, _ := swSync(bin, actName, "-s")
		t.Fatalf("standby's external cache:\n%s\nwant the control connection and an expectation with %q\nactive's internal cache:\n%s\nactive's stats:\n%s", ext, wantExp, in, st)
	}
	t.Logf("standby's external cache before the failover:\n%s", ext)

	if err := active.signal(t, syscall.SIGKILL); err == nil {
		t.Fatalf("active bridge exited cleanly, want killed")
	}
	out, err := swSync(bin, sbyName, "-c")
	if err != nil || !strings.Contains(out, "0 failed), 1 expectations (0 failed)") {
		t.Fatalf("sync -c: %q, %v; want the control connection and its expectation committed", out, err)
	}
	t.Logf("sync -c: %s", strings.TrimSpace(out))
	exp, _ := swCtl(bin, "conntrack", "--name", sbyName, "--expect-list")
	if !strings.Contains(exp, fmt.Sprintf("dport=%d", dport)) {
		t.Fatalf("standby's conntrack -L expect after sync -c:\n%s\nwant the expectation of dport %d", exp, dport)
	}
	for _, p := range []string{par.PortA, par.PortB} {
		if _, err := l.Run(context.Background(), par.NS, "ip", "link", "set", p, "up"); err != nil {
			t.Fatal(err)
		}
	}

	// RETR: the server opens the data connection now, through the standby.
	ftp.cmd(t, "RETR file.bin", "150")
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		st, _ := swSync(bin, sbyName, "-s")
		list, _ := swCtl(bin, "conntrack", "--name", sbyName, "-L")
		t.Fatalf("the data connection announced before the failover never came through the standby (RELATED from the right): %v\nsync -s:\n%s\nconntrack -L:\n%s", err, st, list)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || n != int64(len(data)) || [32]byte(h.Sum(nil)) != sha256.Sum256(data) {
		t.Errorf("ftp data after the failover: %d bytes, %v; want %d bytes with the file's SHA-256", n, err, len(data))
	}
	ftp.cmd(t, "", "226")
	list, _ := swCtl(bin, "conntrack", "--name", sbyName, "-L")
	if !strings.Contains(list, fmt.Sprintf("sport=20 dport=%d", dport)) {
		t.Errorf("standby's table lacks the data connection:\n%s", list)
	}
}

// started waits until the workers of p run (its start line), which on a
// loaded machine can take long: verifying the fast path's program, a queue
// a closed socket still holds (startWithin).
func (p *swProc) started(t *testing.T) {
	t.Helper()
	if !testenv.WaitFor(startWithin, func() bool { return strings.Contains(p.stderr.String(), " workers, ") }) {
		t.Fatalf("statewire run did not start within %v; stderr:\n%s", startWithin, p.stderr.String())
	}
}

// swCtl runs a statewire client command with a deadline.
func swCtl(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}
