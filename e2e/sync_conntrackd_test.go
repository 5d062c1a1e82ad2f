package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

// TestSyncWithConntrackd: statewire run paired with a Linux firewall's
// conntrackd (FTFW over UDP, in the second bridge namespace of the lab,
// its kernel table as the firewall's): connections the kernel tracks there
// appear in statewire's sync -e and, after sync -c, in its table;
// a connection statewire tracks appears in conntrackd -e and, after
// conntrackd -c, in that namespace's conntrack -L with its tuple, state
// and status.
func TestSyncWithConntrackd(t *testing.T) {
	lab.RequireRoot(t)
	for _, cmd := range []string{"conntrackd", "conntrack"} {
		if _, err := exec.LookPath(cmd); err != nil {
			testenv.Unavailable(t, cmd+" not found; run scripts/setup.sh as root to install it")
		}
	}
	bin := lab.StatewireBinary(t)
	l := lab.NewT(t, lab.Options{})
	par, err := l.AddParallel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ns := par.NS
	ctd := startConntrackd(t, l, par, "")
	// The firewall's kernel tracks two connections.
	for _, sport := range []string{"31000", "31001"} {
		if out, err := l.Run(context.Background(), ns, "conntrack", "-I", "-p", "tcp", "-s", "198.18.7.1", "-d", "198.18.7.2",
			"--sport", sport, "--dport", "443", "--state", "ESTABLISHED", "-u", "SEEN_REPLY,ASSURED", "-t", "3000"); err != nil {
			t.Fatalf("conntrack -I: %v %s", err, out)
		}
	}

	name := l.Prefix + "-sw"
	sw := startSWIn(t, l.BridgeNS, bin, l.PortA, l.PortB, "--name", name, "--state-file", "none", "--offload", "off",
		"--sync-listen", par.SyncAddr[0].String()+":3780", "--sync-peer", par.SyncAddr[1].String()+":3780")
	if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 30*time.Second); !ok {
		t.Fatalf("no ping through statewire within %v\n%s", d, sw.stderr)
	}
	// Kernel -> statewire: conntrackd's internal cache, sent on our
	// startup resync request.
	var ext string
	if !testenv.WaitFor(15*time.Second, func() bool {
		ext, _ = swSync(bin, name, "-e")
		return strings.Count(ext, "src=198.18.7.1 dst=198.18.7.2") == 2
	}) {
		st, _ := swSync(bin, name, "-s")
		t.Fatalf("statewire sync -e:\n%s\nwant the firewall's two connections\nsync -s:\n%s", ext, st)
	}
	for _, want := range []string{"ESTABLISHED src=198.18.7.1 dst=198.18.7.2 sport=31000 dport=443 src=198.18.7.2 dst=198.18.7.1 sport=443 dport=31000 [ASSURED]"} {
		if !strings.Contains(ext, want) {
			t.Errorf("sync -e lacks %q:\n%s", want, ext)
		}
	}

	// statewire -> kernel: a connection through the bridge, kept open.
	var ln net.Listener
	if err := l.Do(l.RightNS, func() (err error) { ln, err = net.Listen("tcp4", rightIP.String()+":5001"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			var b [1]byte
			c.Read(b[:])
		}
	}()
	var c net.Conn
	if err := l.Do(l.LeftNS, func() (err error) {
		c, err = net.DialTimeout("tcp4", rightIP.String()+":5001", 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sport := c.LocalAddr().(*net.TCPAddr).Port
	tuple := fmt.Sprintf("src=198.18.0.1 dst=198.18.0.2 sport=%d dport=5001", sport)
	var cext string
	if !testenv.WaitFor(10*time.Second, func() bool { cext = ctd("-e"); return strings.Contains(cext, tuple) }) {
		in, _ := swSync(bin, name, "-i")
		t.Fatalf("conntrackd -e:\n%s\nwant %s\nstatewire sync -i:\n%s", cext, tuple, in)
	}
	ctd("-c")
	list, err := l.Run(context.Background(), ns, "conntrack", "-L", "-p", "tcp", "--dport", "5001")
	if want := "ESTABLISHED " + tuple + fmt.Sprintf(" src=198.18.0.2 dst=198.18.0.1 sport=5001 dport=%d [ASSURED]", sport); err != nil || !strings.Contains(list, want) {
		t.Errorf("the firewall's conntrack -L after conntrackd -c:\n%s\nwant %q (%v)", list, want, err)
	}

	// And the firewall's connections into statewire's table.
	if out, err := swSync(bin, name, "-c"); err != nil || !strings.Contains(out, "committed 2 connections") {
		t.Errorf("statewire sync -c: %q, %v; want 2 committed", out, err)
	}
	out, _ := exec.Command(bin, "conntrack", "--name", name, "-L").CombinedOutput()
	if n := strings.Count(string(out), "ESTABLISHED src=198.18.7.1 dst=198.18.7.2"); n != 2 {
		t.Errorf("statewire conntrack -L after sync -c: %d of the firewall's connections, want 2:\n%s", n, out)
	}
}

// startConntrackd starts a real conntrackd in the parallel bridge
// namespace par.NS (FTFW over UDP on the lab's sync link, its files in a
// temporary directory, options added to its Sync Options block), waits
// for its initialisation and returns a function that runs `conntrackd -C
// CONF ARGS` there. It is killed when the test ends; its output and log
// are printed if the test failed.
func startConntrackd(t *testing.T, l *lab.Lab, par *lab.Parallel, options string) func(args ...string) string {
	t.Helper()
	ns := par.NS
	dir := t.TempDir()
	conf := filepath.Join(dir, "conntrackd.conf")
	if options != "" {
		options = "\tOptions {\n\t\t" + options + "\n\t}\n"
	}
	os.WriteFile(conf, []byte(fmt.Sprintf(`Sync {
	Mode FTFW {
	}
	UDP {
		IPv4_address %s
		IPv4_Destination_Address %s
		Port 3780
		Interface %s
		Checksum on
	}
%s}
General {
	HashSize 1024
	HashLimit 8192
	LockFile %s
	UNIX {
		Path %s
	}
	Syslog off
	LogFile %s
}
`, par.SyncAddr[1], par.SyncAddr[0], par.SyncIf[1], options, filepath.Join(dir, "lock"), filepath.Join(dir, "ctl"), filepath.Join(dir, "log"))), 0o644)
	var ctdOut bytes.Buffer
	cmd := l.Command(ns, "conntrackd", "-C", conf)
	cmd.Stdout, cmd.Stderr = &ctdOut, &ctdOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Logf("conntrackd:\n%s\nlog:\n%s", ctdOut.String(), log)
		}
	})
	if !testenv.WaitFor(10*time.Second, func() bool {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		return bytes.Contains(log, []byte("initialization completed"))
	}) {
		t.Fatal("conntrackd did not complete its initialisation in 10 s")
	}
	return func(args ...string) string {
		t.Helper()
		out, err := l.Run(context.Background(), ns, "conntrackd", append([]string{"-C", conf}, args...)...)
		if err != nil {
			t.Fatalf("conntrackd %v: %v\n%s", args, err, out)
		}
		return out
	}
}
