package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

// fakeFTPServer answers an FTP client on addr in namespace ns: a 220
// greeting, then "200 ok" to every line. Enough for a helper, which reads
// only the client's commands.
func fakeFTPServer(t *testing.T, l *lab.Lab, ns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := l.Do(ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, "220 hi\r\n")
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					io.WriteString(c, "200 ok\r\n")
				}
			}()
		}
	}()
}

// ftpPortFrom opens an FTP control connection from namespace ns to addr
// (port 21) and sends USER, then PORT with the client's address and
// dport: a helper on the path expects the server's data connection. The
// connection stays open until the test ends; it returns the client's port.
func ftpPortFrom(t *testing.T, l *lab.Lab, ns, server string, client [4]byte, dport int) int {
	t.Helper()
	var c net.Conn
	if err := l.Do(ns, func() (err error) { c, err = net.DialTimeout("tcp4", server+":21", 5*time.Second); return err }); err != nil {
		t.Fatalf("dial %s:21: %v", server, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for _, line := range []string{"", "USER ftp", fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d", client[0], client[1], client[2], client[3], dport>>8, dport&255)} {
		if line != "" {
			io.WriteString(c, line+"\r\n")
		}
		if s, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(s, "2") {
			t.Fatalf("ftp %q: %q, %v", line, s, err)
		}
	}
	return c.LocalAddr().(*net.TCPAddr).Port
}

var leadingTimeout = regexp.MustCompile(`^\d+ `)

// markFTPRules are failoverRules with a CONNMARK on new FTP control
// connections.
const markFTPRules = `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 21 -j CT --helper ftp
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -p tcp -m tcp --dport 21 -m conntrack --ctstate NEW -j CONNMARK --set-mark 0x2a
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i %s -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

// TestSyncExpectationsWithConntrackd: expectations between statewire and a
// Linux firewall running conntrackd with ExpectationSync on. The kernel's
// FTP helper there registers an expectation (a PORT command on a control
// connection of that namespace): it appears in statewire's sync -e exactly
// as conntrack -L expect lists it there (but the seconds left). The FTP
// helper of statewire registers one (a PORT command crossing the bridge):
// it appears in conntrackd -e expect and, after conntrackd -c ct and -c
// expect, in the
// kernel's conntrack -L expect with the master's tuple. Connection marks
// cross both ways: a kernel connection's mark shows in sync -e, and the
// mark statewire's CONNMARK gave the FTP control connection is the
// kernel's after conntrackd -c ct.
func TestSyncExpectationsWithConntrackd(t *testing.T) {
	lab.RequireRoot(t)
	for _, cmd := range []string{"conntrackd", "conntrack", "iptables-legacy"} {
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
	ctd := startConntrackd(t, l, par, "ExpectationSync on")
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := l.Run(context.Background(), ns, name, args...)
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return out
	}
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules")
	os.WriteFile(rulesFile, []byte(fmt.Sprintf(markFTPRules, l.PortA)), 0o600)
	name := l.Prefix + "-sw"
	sw := startSWIn(t, l.BridgeNS, bin, l.PortA, l.PortB, "--name", name, "--state-file", "none", "--offload", "off", "--rules", rulesFile,
		"--sync-listen", par.SyncAddr[0].String()+":3780", "--sync-peer", par.SyncAddr[1].String()+":3780")
	sw.started(t)
	if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 30*time.Second); !ok {
		t.Fatalf("no ping through statewire within %v\n%s", d, sw.stderr)
	}
	if !testenv.WaitFor(10*time.Second, func() bool { st, _ := swSync(bin, name, "-s"); return strings.Contains(st, "handshake done: true") }) {
		st, _ := swSync(bin, name, "-s")
		t.Fatalf("no FTFW handshake with conntrackd:\n%s", st)
	}

	// Kernel -> statewire: an FTP control connection inside the firewall's
	// namespace (to its own sync address), its helper assigned in raw
	// OUTPUT, expects a data connection.
	run("iptables-legacy", "-t", "raw", "-A", "OUTPUT", "-p", "tcp", "--dport", "21", "-j", "CT", "--helper", "ftp")
	fwAddr := par.SyncAddr[1].String()
	fakeFTPServer(t, l, ns, fwAddr+":21")
	ftpPortFrom(t, l, ns, fwAddr, par.SyncAddr[1].As4(), 40123)
	kexp := run("conntrack", "-L", "expect")
	if !strings.Contains(kexp, "dport=40123") {
		t.Fatalf("the firewall's kernel made no expectation for dport 40123:\n%s", kexp)
	}
	kline := ""
	for _, ln := range strings.Split(kexp, "\n") {
		if strings.Contains(ln, "dport=40123") {
			kline = leadingTimeout.ReplaceAllString(strings.TrimSpace(ln), "")
		}
	}
	var ext string
	if !testenv.WaitFor(15*time.Second, func() bool {
		ext, _ = swSync(bin, name, "-e")
		return strings.Contains(ext, "dport=40123 ")
	}) {
		st, _ := swSync(bin, name, "-s")
		t.Fatalf("statewire sync -e:\n%s\nwant the kernel's expectation %q\nsync -s:\n%s\nconntrackd -i expect:\n%s", ext, kline, st, ctd("-i", "expect"))
	}
	for _, ln := range strings.Split(ext, "\n") {
		if strings.Contains(ln, "dport=40123 ") {
			if got := leadingTimeout.ReplaceAllString(strings.TrimSpace(ln), ""); got != kline {
				t.Errorf("statewire sync -e lists the kernel's expectation as\n%s\nconntrack -L expect lists it as\n%s", got, kline)
			}
		}
	}

	// A marked kernel connection.
	run("conntrack", "-I", "-p", "tcp", "-s", "198.18.7.1", "-d", "198.18.7.2", "--sport", "31005", "--dport", "443",
		"--state", "ESTABLISHED", "-u", "SEEN_REPLY,ASSURED", "-t", "3000", "--mark", "7")
	if !testenv.WaitFor(15*time.Second, func() bool {
		ext, _ = swSync(bin, name, "-e")
		return strings.Contains(ext, "sport=31005 ")
	}) {
		t.Fatalf("statewire sync -e:\n%s\nwant the kernel's connection with sport 31005", ext)
	}
	if !regexp.MustCompile(`sport=31005 .* mark=7 `).MatchString(ext) {
		t.Errorf("statewire sync -e lists the kernel's connection marked 7 without its mark:\n%s", ext)
	}

	// statewire -> kernel: a PORT command crossing the bridge.
	fakeFTPServer(t, l, l.RightNS, rightIP.String()+":21")
	sport := ftpPortFrom(t, l, l.LeftNS, rightIP.String(), leftIP.As4(), 40124)
	want := fmt.Sprintf("proto=6 src=%s dst=%s sport=0 dport=40124 mask-src=255.255.255.255 mask-dst=255.255.255.255 sport=0 dport=65535 master-src=%s master-dst=%s sport=%d dport=21",
		rightIP, leftIP, leftIP, rightIP, sport)
	var cext string
	if !testenv.WaitFor(10*time.Second, func() bool { cext = ctd("-e", "expect"); return strings.Contains(cext, want) }) {
		in, _ := swSync(bin, name, "-i")
		st, _ := swSync(bin, name, "-s")
		t.Fatalf("conntrackd -e expect:\n%s\nwant %q\nstatewire sync -i:\n%s\nsync -s:\n%s", cext, want, in, st)
	}
	t.Logf("conntrackd -e expect:\n%s", cext)
	ctd("-c", "ct") // the master first: the kernel looks it up by its tuple
	ct, _ := l.Run(context.Background(), ns, "conntrack", "-L", "-p", "tcp", "--dport", "21", "-s", leftIP.String())
	if !regexp.MustCompile(fmt.Sprintf(`sport=%d dport=21 .* mark=42 `, sport)).MatchString(ct) {
		t.Errorf("the firewall's conntrack -L after conntrackd -c ct:\n%s\nwant the FTP control connection with statewire's mark=42", ct)
	}
	ctd("-c", "expect")
	out, _ := l.Run(context.Background(), ns, "conntrack", "-L", "expect")
	if !strings.Contains(out, want) {
		ct, _ := l.Run(context.Background(), ns, "conntrack", "-L")
		t.Errorf("the firewall's conntrack -L expect after conntrackd -c:\n%s\nwant %q\nconntrack -L:\n%s\nconntrackd -s expect:\n%s", out, want, ct, ctd("-s", "expect"))
	}
}
