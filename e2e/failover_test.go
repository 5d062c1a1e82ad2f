package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
)

// failoverRules: NEW only from the left (port A of either bridge), FTP's
// helper on port 21, nothing INVALID.
const failoverRules = `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 21 -j CT --helper ftp
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i %s -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

// startSWIn starts `statewire run` on ports a and b of namespace ns, in
// its own process group, killed at the end of the test.
func startSWIn(t *testing.T, ns, bin, a, b string, args ...string) *swProc {
	t.Helper()
	p := &swProc{stdout: &lab.SyncBuffer{}, stderr: &lab.SyncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + ns, bin, "run",
		"--port-a", a, "--port-b", b, "--ring-size", "512"}, args...)...)
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

// swSync runs `statewire sync --name name args...` and returns its output.
func swSync(bin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"sync", "--name", name}, args...)...).CombinedOutput()
	return string(out), err
}

// download is a connection the left host opens and the right host pushes
// size bytes into, paced over d.
type download struct {
	sent, got [32]byte
	n         int64
	done      chan error
}

func startDownload(t *testing.T, l *lab.Lab, addr string, size int, d time.Duration) *download {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	dl := &download{sent: sha256.Sum256(data), done: make(chan error, 1)}
	var ln net.Listener
	if err := l.Do(l.RightNS, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		const chunk = 16 << 10
		gap := d / time.Duration((size+chunk-1)/chunk)
		for off := 0; off < size; off += chunk {
			if _, err := c.Write(data[off:min(off+chunk, size)]); err != nil {
				return
			}
			time.Sleep(gap)
		}
	}()
	var c net.Conn
	if err := l.Do(l.LeftNS, func() (err error) { c, err = net.DialTimeout("tcp4", addr, 5*time.Second); return err }); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	go func() {
		defer c.Close()
		c.SetDeadline(time.Now().Add(d + 60*time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		copy(dl.got[:], h.Sum(nil))
		dl.n = n
		dl.done <- err
	}()
	return dl
}

// interactive is a long-lived session: the left host sends a line every
// 100 ms, the right host echoes it; every echo is checked.
type interactive struct {
	stop  chan struct{}
	done  chan error
	lines int
}

func startInteractive(t *testing.T, l *lab.Lab, addr string) *interactive {
	t.Helper()
	var ln net.Listener
	if err := l.Do(l.RightNS, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	var c net.Conn
	if err := l.Do(l.LeftNS, func() (err error) { c, err = net.DialTimeout("tcp4", addr, 5*time.Second); return err }); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	s := &interactive{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		defer c.Close()
		r := bufio.NewReader(c)
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				s.done <- nil
				return
			case <-time.After(100 * time.Millisecond):
			}
			line := fmt.Sprintf("line %d\n", i)
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.WriteString(c, line); err != nil {
				s.done <- fmt.Errorf("write line %d: %w", i, err)
				return
			}
			got, err := r.ReadString('\n')
			if err != nil || got != line {
				s.done <- fmt.Errorf("echo of line %d: %q, %v", i, got, err)
				return
			}
			s.lines = i + 1
		}
	}()
	return s
}

// ftpSession is an FTP client on the left logged in to vsftpd on the
// right, in active mode: retr sends PORT and RETR, so its data
// connection (from the right, RELATED) opens whenever the test says.
type ftpSession struct {
	ctrl net.Conn
	r    *bufio.Reader
	l    *lab.Lab
}

func (f *ftpSession) cmd(t *testing.T, line string, want string) string {
	t.Helper()
	if line != "" {
		f.ctrl.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(f.ctrl, line+"\r\n"); err != nil {
			t.Fatalf("ftp %s: %v", line, err)
		}
	}
	for {
		f.ctrl.SetDeadline(time.Now().Add(30 * time.Second))
		s, err := f.r.ReadString('\n')
		if err != nil {
			t.Fatalf("ftp %q: reading the reply: %v", line, err)
		}
		if len(s) >= 4 && s[3] == ' ' {
			if !strings.HasPrefix(s, want) {
				t.Fatalf("ftp %q: reply %q, want %s", line, s, want)
			}
			return s
		}
	}
}

// retr downloads name over an active-mode data connection.
func (f *ftpSession) retr(t *testing.T, name string) ([32]byte, int64) {
	t.Helper()
	var ln net.Listener
	if err := f.l.Do(f.l.LeftNS, func() (err error) { ln, err = net.Listen("tcp4", leftIP.String()+":0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	f.cmd(t, fmt.Sprintf("PORT 198,18,0,1,%d,%d", port>>8, port&255), "200")
	f.cmd(t, "RETR "+name, "150")
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(15 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("ftp data connection from the server never came (RELATED from the right): %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("ftp data: %v", err)
	}
	f.cmd(t, "", "226")
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n
}

func startFTP(t *testing.T, l *lab.Lab, dir string) *ftpSession {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "vsftpd.conf")
	text := fmt.Sprintf(`listen=YES
listen_ipv6=NO
listen_address=%s
listen_port=21
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root=%s
local_enable=NO
write_enable=NO
pasv_enable=YES
port_enable=YES
connect_from_port_20=YES
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
secure_chroot_dir=/var/run/vsftpd/empty
xferlog_enable=NO
dirmessage_enable=NO
idle_session_timeout=600
data_connection_timeout=30
accept_timeout=10
connect_timeout=10
`, rightIP, dir)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/var/run/vsftpd/empty", 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := l.Command(l.RightNS, "vsftpd", conf)
	if err := cmd.Start(); err != nil {
		t.Fatalf("vsftpd: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	f := &ftpSession{l: l}
	if !testenv.WaitFor(10*time.Second, func() bool {
		return l.Do(l.LeftNS, func() (err error) {
			f.ctrl, err = net.DialTimeout("tcp4", rightIP.String()+":21", time.Second)
			return err
		}) == nil
	}) {
		t.Fatal("vsftpd did not answer on port 21 within 10 s")
	}
	t.Cleanup(func() { f.ctrl.Close() })
	f.r = bufio.NewReader(f.ctrl)
	f.cmd(t, "", "220")
	f.cmd(t, "USER anonymous", "230")
	f.cmd(t, "TYPE I", "200")
	return f
}

// TestFailover: two statewire bridges on parallel paths between the left
// and right hosts, the standby's ports down, synchronised over their own
// veth pair (FTFW; NOTRACK with the fast path). A paced download pushed
// from the right, an interactive session and an FTP control connection
// cross the active bridge; it is killed (-9); the standby commits its external cache
// (statewire sync -c) and brings its ports up. Every byte of the download
// arrives (SHA-256), every echo of the session comes back, the FTP data
// connection the server opens from the right after the switch (RELATED,
// through the helper's pickup of the PORT command) carries the whole file,
// and a connection attempt from the right that was never answered stays
// dropped on the standby. With the XDP fast path on, the committed
// connections go into the standby's fast path the usual way.
func TestFailover(t *testing.T) {
	t.Run("slow path", func(t *testing.T) { testFailover(t, false) })
	t.Run("fast path", func(t *testing.T) { testFailover(t, true) })
}

func testFailover(t *testing.T, fast bool) {
	lab.RequireRoot(t)
	bin := lab.StatewireBinary(t)
	pace := 10 * time.Second
	if v := os.Getenv("STATEWIRE_FAILOVER_PACE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("STATEWIRE_FAILOVER_PACE=%q: %v", v, err)
		}
		pace = d
	}
	l := lab.NewT(t, lab.Options{})
	par, err := l.AddParallel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	offload, mode := "off", "ftfw"
	if fast {
		mode = "notrack" // both of conntrackd's modes are exercised
		// XDP redirects into a veth need NAPI at its peer.
		offload = "on"
		for _, h := range [][2]string{{l.LeftNS, l.LeftIf}, {l.RightNS, l.RightIf}, {l.LeftNS, par.PeerA}, {l.RightNS, par.PeerB}} {
			if out, err := l.Run(context.Background(), h[0], "ethtool", "-K", h[1], "gro", "on"); err != nil {
				t.Fatalf("ethtool -K %s gro on: %v %s", h[1], err, out)
			}
		}
	}
	active, actName, sbyName := startFailoverPair(t, l, par, bin, "--offload", offload, "--sync-mode", mode)

	ftpDir := t.TempDir()
	ftpData := make([]byte, 3<<20)
	rand.Read(ftpData)
	os.WriteFile(filepath.Join(ftpDir, "file.bin"), ftpData, 0o644)
	ftp := startFTP(t, l, ftpDir)
	dl := startDownload(t, l, rightIP.String()+":5001", int(pace/time.Second)*(256<<10), pace)
	chat := startInteractive(t, l, rightIP.String()+":5002")

	// An attempt from the right that nobody answers: dropped by the active
	// bridge, never synchronised, and its SYN retransmissions must stay
	// dropped on the standby.
	var unsolicited net.Listener
	if err := l.Do(l.LeftNS, func() (err error) { unsolicited, err = net.Listen("tcp4", leftIP.String()+":5003"); return err }); err != nil {
		t.Fatal(err)
	}
	defer unsolicited.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := unsolicited.Accept(); err == nil {
			accepted <- c
		}
	}()
	dialed := make(chan error, 1)
	go func() {
		var c net.Conn
		err := l.Do(l.RightNS, func() (err error) {
			c, err = net.DialTimeout("tcp4", leftIP.String()+":5003", pace+10*time.Second)
			return err
		})
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()

	// The standby knows the three connections (download, session, FTP
	// control) before the failover.
	var ext string
	if !testenv.WaitFor(10*time.Second, func() bool {
		ext, _ = swSync(bin, sbyName, "-e")
		return strings.Contains(ext, "dport=5001") && strings.Contains(ext, "dport=5002") && strings.Contains(ext, "dport=21 ")
	}) {
		out, _ := swSync(bin, actName, "-i")
		st, _ := swSync(bin, actName, "-s")
		t.Fatalf("standby's external cache:\n%s\nactive's internal cache:\n%s\nactive's stats:\n%s", ext, out, st)
	}
	if strings.Contains(ext, "dport=5003") {
		t.Fatalf("the unanswered connection from the right reached the standby's cache:\n%s", ext)
	}
	t.Logf("standby's external cache before the failover:\n%s", ext)

	time.Sleep(pace / 4) // the download is well under way
	if err := active.signal(t, syscall.SIGKILL); err == nil {
		t.Fatalf("active bridge exited cleanly, want killed")
	}
	killed := time.Now()
	out, err := swSync(bin, sbyName, "-c")
	if err != nil {
		t.Fatalf("sync -c: %v: %s", err, out)
	}
	t.Logf("sync -c: %s", strings.TrimSpace(out))
	for _, p := range []string{par.PortA, par.PortB} {
		if _, err := l.Run(context.Background(), par.NS, "ip", "link", "set", p, "up"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("standby took over %v after the kill", time.Since(killed).Round(time.Millisecond))

	// The FTP data connection opens now, through the standby.
	sum, n := ftp.retr(t, "file.bin")
	if n != int64(len(ftpData)) || sum != sha256.Sum256(ftpData) {
		t.Errorf("ftp after the failover: %d bytes sha256 %x, want %d bytes %x", n, sum[:8], len(ftpData), sha256.Sum256(ftpData))
	}
	select {
	case err := <-dl.done:
		if err != nil || dl.got != dl.sent {
			t.Errorf("download across the failover: %d bytes, err %v, sha256 %x want %x", dl.n, err, dl.got[:8], dl.sent[:8])
		}
	case <-time.After(pace + 60*time.Second):
		t.Fatalf("download did not finish")
	}
	close(chat.stop)
	if err := <-chat.done; err != nil {
		t.Errorf("interactive session across the failover: %v", err)
	}
	t.Logf("interactive session: %d lines echoed", chat.lines)
	select {
	case err := <-dialed:
		if err == nil {
			t.Errorf("a connection from the right got through")
		}
	case <-time.After(pace + 20*time.Second):
		t.Fatal("the unanswered dial from the right never ended")
	}
	select {
	case c := <-accepted:
		c.Close()
		t.Errorf("the left host accepted a connection from the right")
	default:
	}
	st, _ := swSync(bin, sbyName, "-s")
	t.Logf("standby's sync -s:\n%s", st)
	if fast {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "conntrack", "--name", sbyName, "-S").CombinedOutput()
		m := regexp.MustCompile(`fastpath flows=\d+ offered=(\d+)`).FindStringSubmatch(string(out))
		if err != nil || m == nil || m[1] == "0" {
			t.Errorf("standby's fast path offered no committed connection (conntrack -S: %v):\n%s", err, out)
		}
		t.Logf("standby's fast path: %s", strings.Join(regexp.MustCompile(`fastpath .*`).FindAllString(string(out), -1), "\n"))
	}
	var list bytes.Buffer
	cmd := exec.Command(bin, "conntrack", "--name", sbyName, "-L")
	cmd.Stdout = &list
	cmd.Run()
	t.Logf("standby's table:\n%s", list.String())
}

// startFailoverPair starts the two bridges of a failover test: the active
// one on the lab's ports, the standby on par's, each admitting NEW only
// from the left (failoverRules) and synchronised with the other over the
// sync link, args added to both command lines; it returns the active one
// and both names when both run, the active forwards and the standby's
// control socket answers (the standby stops with the test).
func startFailoverPair(t *testing.T, l *lab.Lab, par *lab.Parallel, bin string, args ...string) (active *swProc, actName, sbyName string) {
	t.Helper()
	dir := t.TempDir()
	rulesA := filepath.Join(dir, "active.rules")
	rulesS := filepath.Join(dir, "standby.rules")
	os.WriteFile(rulesA, []byte(fmt.Sprintf(failoverRules, l.PortA)), 0o600)
	os.WriteFile(rulesS, []byte(fmt.Sprintf(failoverRules, par.PortA)), 0o600)
	const port = "3780"
	actName, sbyName = l.Prefix+"-act", l.Prefix+"-sby"
	active = startSWIn(t, l.BridgeNS, bin, l.PortA, l.PortB, append([]string{"--name", actName, "--rules", rulesA,
		"--state-file", "none", "--sync-listen", par.SyncAddr[0].String() + ":" + port, "--sync-peer", par.SyncAddr[1].String() + ":" + port}, args...)...)
	standby := startSWIn(t, par.NS, bin, par.PortA, par.PortB, append([]string{"--name", sbyName, "--rules", rulesS,
		"--state-file", "none", "--sync-listen", par.SyncAddr[1].String() + ":" + port, "--sync-peer", par.SyncAddr[0].String() + ":" + port}, args...)...)
	active.started(t)
	standby.started(t)
	if d, ok := l.PingWithin(l.LeftNS, rightIP.String(), 30*time.Second); !ok {
		t.Fatalf("no ping through the active bridge within %v\nactive: %s\nstandby: %s", d, active.stderr, standby.stderr)
	}
	if !testenv.WaitFor(10*time.Second, func() bool { _, err := swSync(bin, sbyName, "-s"); return err == nil }) {
		t.Fatalf("standby's control socket never answered\n%s", standby.stderr)
	}
	return active, actName, sbyName
}
