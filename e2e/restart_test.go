package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
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
)

// restartRules admit NEW only from the left (port A), as deploy/fw.rules:
// after a restart that forgot the table, the next segment of a download
// pushed from the right would be NEW from the right and dropped. FTP
// (control port 21 only) has the helper, so its data connections pass only
// as RELATED.
const restartRules = `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp --dport 21 -j CT --helper ftp
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p icmp -j ACCEPT
-A FORWARD -m physdev --physdev-in {PortA} -p tcp -m multiport --dports 21,5001 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

// restartDownload is the paced download: restartSize bytes over about
// restartPace (the issue asks for 30 s; 8 s keeps the suite fast and
// still puts the restart in the middle of a live transfer).
// STATEWIRE_RESTART_PACE=30s runs the length.
const restartSize = 8 << 20

var restartPace = paceFromEnv("STATEWIRE_RESTART_PACE", 8*time.Second)

// paceFromEnv reads a duration from the environment; unset gives def, and
// a value that is not a duration panics (a mistyped knob must not pass
// silently as the default).
func paceFromEnv(name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		panic(fmt.Sprintf("%s=%q: want a positive duration such as 30s", name, v))
	}
	return d
}

// statewireProc is one `statewire run` of a restart test.
type statewireProc struct {
	cmd    *exec.Cmd
	stderr lab.SyncBuffer
	stdout lab.SyncBuffer
	done   chan error
}

// restartBridge runs `statewire run` on l's ports under one --name (so the
// default control socket and state file, /run/statewire/NAME.{sock,table},
// are the same for every process it starts) with --offload=off.
type restartBridge struct {
	t         *testing.T
	l         *lab.Lab
	bin, name string
	args      []string
	cur       *statewireProc
}

func newRestartBridge(t *testing.T, l *lab.Lab, bin string, extra ...string) *restartBridge {
	t.Helper()
	rules := filepath.Join(t.TempDir(), "fw.rules")
	if err := os.WriteFile(rules, []byte(strings.ReplaceAll(restartRules, "{PortA}", l.PortA)), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &restartBridge{t: t, l: l, bin: bin, name: l.Prefix + "-restart"}
	// --offload=off unless extra says otherwise (the last flag wins).
	b.args = append([]string{"run", "--port-a", l.PortA, "--port-b", l.PortB, "--ring-size", "512",
		"--rules", rules, "--name", b.name, "--offload", "off"}, extra...)
	t.Cleanup(func() {
		if b.cur != nil {
			b.stop(syscall.SIGKILL)
		}
		os.Remove(b.stateFile())
		os.Remove(control.DefaultPath(b.name))
		if err := l.CheckNoXDP(); err != nil {
			// A kill -9 leaves the XDP program of --offload=off
			// attached (netlink); the lab removes the devices.
			t.Logf("after the last statewire run: %v", err)
		}
	})
	return b
}

// startWithin bounds a restarted process's start: longer than the
// datapath's wait for a queue the previous process's socket still holds
// (bridge.socketBusyWait, 30 s), which a host busy with namespaces can
// need.
const startWithin = 40 * time.Second

func (b *restartBridge) stateFile() string {
	return filepath.Join(control.SocketDir, b.name+".table")
}

// start starts a process and waits until its workers run.
func (b *restartBridge) start() *statewireProc {
	b.t.Helper()
	p := &statewireProc{done: make(chan error, 1)}
	p.cmd = b.l.Command(b.l.BridgeNS, b.bin, b.args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	b.cur = p
	if !testenv.WaitFor(startWithin, func() bool { return strings.Contains(p.stderr.String(), " workers, ") }) {
		b.t.Fatalf("statewire run did not start within %v; stderr:\n%s", startWithin, p.stderr.String())
	}
	return p
}

// stop ends the current process with sig (SIGTERM: graceful; SIGKILL: a
// crash) and waits for it to exit.
func (b *restartBridge) stop(sig syscall.Signal) {
	b.t.Helper()
	p := b.cur
	b.cur = nil
	p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		if sig == syscall.SIGTERM && err != nil {
			b.t.Errorf("statewire run after SIGTERM: %v, want exit 0\nstderr: %s", err, p.stderr.String())
		}
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		b.t.Errorf("statewire run did not exit within 15s of %v", sig)
	}
}

// ctl runs `statewire conntrack ARGS` against the current process.
func (b *restartBridge) ctl(args ...string) string {
	b.t.Helper()
	out, err := exec.Command(b.bin, append([]string{"conntrack", "--name", b.name}, args...)...).CombinedOutput()
	if err != nil {
		b.t.Fatalf("statewire conntrack %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// inserts returns the insert= counter of `conntrack -S`'s total line.
func (b *restartBridge) inserts() uint64 {
	b.t.Helper()
	m := regexp.MustCompile(`(?m)^total.* insert=(\d+)`).FindStringSubmatch(b.ctl("-S"))
	if m == nil {
		b.t.Fatalf("conntrack -S has no total insert= counter")
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// adopted returns N of the process's "adopted N connections, M
// expectations" log line, -1 when it has none.
func adopted(p *statewireProc) (conns, expects int) {
	m := regexp.MustCompile(`adopted (\d+) connections, (\d+) expectations from `).FindStringSubmatch(p.stderr.String())
	if m == nil {
		return -1, -1
	}
	c, _ := strconv.Atoi(m[1])
	e, _ := strconv.Atoi(m[2])
	return c, e
}

// restart stops the running process with sig and starts the next one,
// checking that the state file is there in between, and returns the new
// process and how long no process served the ports.
func (b *restartBridge) restart(sig syscall.Signal) (*statewireProc, time.Duration) {
	b.t.Helper()
	start := time.Now()
	b.stop(sig)
	if _, err := os.Stat(b.stateFile()); err != nil && !strings.Contains(strings.Join(b.args, " "), "--state-file none") {
		b.t.Errorf("state file after the stop: %v", err)
	}
	p := b.start()
	return p, time.Since(start)
}

// pacedDownload serves restartSize random bytes from the right host, paced
// over restartPace, to one client on the left that connects to it (NEW
// from the left); got counts the bytes that arrived. The result channel
// gets the SHA-256 comparison once the client read everything or failed.
type pacedDownload struct {
	got  atomic.Int64
	want [32]byte
	done chan error
}

func startPacedDownload(t *testing.T, l *lab.Lab) *pacedDownload {
	t.Helper()
	return startPacedDownloadOver(t, l, restartPace)
}

// startPacedDownloadOver is startPacedDownload spread over pace.
func startPacedDownloadOver(t *testing.T, l *lab.Lab, pace time.Duration) *pacedDownload {
	t.Helper()
	data := make([]byte, restartSize)
	rand.Read(data)
	d := &pacedDownload{want: sha256.Sum256(data), done: make(chan error, 1)}
	addr := rightIP.String() + ":5001"
	ln := listenTCP(t, l, l.RightNS, addr)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		const chunk = 16 << 10
		tick := time.NewTicker(pace / (restartSize / chunk))
		defer tick.Stop()
		c.SetWriteDeadline(time.Now().Add(90 * time.Second))
		for off := 0; off < len(data); off += chunk {
			if _, err := c.Write(data[off:min(off+chunk, len(data))]); err != nil {
				return
			}
			<-tick.C
		}
	}()
	c, err := dialTCP(l, l.LeftNS, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("connect to the download server: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		c.SetReadDeadline(time.Now().Add(90 * time.Second))
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			h.Write(buf[:n])
			d.got.Add(int64(n))
			if err == io.EOF {
				break
			}
			if err != nil {
				d.done <- fmt.Errorf("after %d of %d bytes: %w", d.got.Load(), restartSize, err)
				return
			}
		}
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		if sum != d.want || d.got.Load() != restartSize {
			d.done <- fmt.Errorf("got %d bytes, sha256 %x; want %d bytes, sha256 %x", d.got.Load(), sum, restartSize, d.want)
			return
		}
		d.done <- nil
	}()
	return d
}

// TestRestartDownload restarts `statewire run` in the middle of a paced
// download pushed from the right to the left (NEW admitted only from the
// left): gracefully (SIGTERM) and by kill -9. The new process adopts the
// table from /run/statewire/NAME.table, lists the connection ESTABLISHED,
// carries the table's counters over, and the download completes intact;
// also with the XDP fast path on, whose map the new process does not have,
// and when the new process has another table size and worker count (the
// connection is re-inserted into the new geometry).
// With --state-file none the same restart forgets the connection and the
// download stalls: the control that shows the rules would drop it.
func TestRestartDownload(t *testing.T) {
	lab.RequireRoot(t)
	bin := lab.StatewireBinary(t)
	for _, tc := range []struct {
		name    string
		sig     syscall.Signal
		offload bool
		resize  bool // the new process runs with another --max-flows and --cores
	}{
		{"SIGTERM", syscall.SIGTERM, false, false}, {"kill-9", syscall.SIGKILL, false, false},
		// Another table size and worker count: the connection is
		// re-inserted into the new geometry.
		{"resized/kill-9", syscall.SIGKILL, false, true},
		// The fast path's map does not survive the process (yet): the
		// new one takes the adopted [OFFLOAD] entry back liberally
		// (flowtable.Table.ResumeOffloaded) and the download goes on.
		{"offload-on/SIGTERM", syscall.SIGTERM, true, false}, {"offload-on/kill-9", syscall.SIGKILL, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var extra []string
			opts := lab.Options{}
			if tc.resize {
				opts.Queues = 2
				extra = []string{"--queues", "2"}
			}
			l := lab.NewT(t, opts)
			if tc.offload {
				// A redirect into the hosts' veths needs GRO there.
				e2etest.HostGRO(t, l, true)
				extra = []string{"--offload", "on"}
			}
			b := newRestartBridge(t, l, bin, extra...)
			b.start()
			d := startPacedDownload(t, l)
			if !testenv.WaitFor(restartPace/4+10*time.Second, func() bool { return d.got.Load() >= restartSize/4 }) {
				t.Fatalf("download did not reach a quarter in 10s (%d bytes)", d.got.Load())
			}
			before := b.ctl("-L", "-p", "tcp", "--dport", "5001")
			if !strings.Contains(before, "ESTABLISHED") {
				t.Fatalf("before the restart, conntrack -L: %q, want the download ESTABLISHED", before)
			}
			if tc.offload && !testenv.WaitFor(5*time.Second, func() bool {
				return strings.Contains(b.ctl("-L", "-p", "tcp", "--dport", "5001"), "[OFFLOAD]")
			}) {
				t.Fatalf("the download never went into the fast path: %q", b.ctl("-L", "-p", "tcp", "--dport", "5001"))
			}
			inserts := b.inserts()
			at := d.got.Load()
			if tc.resize {
				b.args = append(b.args, "--max-flows", "100000", "--cores", "2")
			}
			p, gap := b.restart(tc.sig)
			conns, _ := adopted(p)
			if conns < 1 {
				t.Fatalf("new process: no \"adopted N connections\" line with N >= 1; stderr:\n%s", p.stderr.String())
			}
			if tc.resize != strings.Contains(p.stderr.String(), "re-inserted into this process's table") {
				t.Errorf("resized %v, but the adoption line says %q", tc.resize, regexp.MustCompile(`adopted [^\n"]*`).FindString(p.stderr.String()))
			}
			t.Logf("restart (%s) at %d of %d bytes; ports unserved for %v; %s", tc.name, at, restartSize, gap.Round(time.Millisecond),
				regexp.MustCompile(`adopted [^\n"]*`).FindString(p.stderr.String()))
			after := b.ctl("-L", "-p", "tcp", "--dport", "5001")
			if !strings.Contains(after, "ESTABLISHED") || !strings.Contains(after, "[ASSURED]") && !strings.Contains(after, "[OFFLOAD]") {
				t.Errorf("after the restart, conntrack -L: %q, want the download ESTABLISHED [ASSURED] (or [OFFLOAD])", after)
			}
			if got := b.inserts(); got < inserts && !tc.resize {
				t.Errorf("insert counter after the restart: %d, want at least the %d before (carried over)", got, inserts)
			}
			select {
			case err := <-d.done:
				if err != nil {
					t.Fatalf("download across the restart: %v\nnew process stderr:\n%s", err, p.stderr.String())
				}
			case <-time.After(restartPace + 60*time.Second):
				t.Fatalf("download did not finish within 60s of the restart (%d of %d bytes)", d.got.Load(), restartSize)
			}
			b.stop(syscall.SIGTERM)
		})
	}
	t.Run("state-file-none-forgets", func(t *testing.T) {
		l := lab.NewT(t, lab.Options{})
		b := newRestartBridge(t, l, bin, "--state-file", "none")
		b.start()
		d := startPacedDownload(t, l)
		if !testenv.WaitFor(restartPace/4+10*time.Second, func() bool { return d.got.Load() >= restartSize/4 }) {
			t.Fatalf("download did not reach a quarter in 10s (%d bytes)", d.got.Load())
		}
		p, _ := b.restart(syscall.SIGTERM)
		if c, _ := adopted(p); c >= 0 {
			t.Fatalf("--state-file none adopted %d connections", c)
		}
		if _, err := os.Stat(b.stateFile()); err == nil {
			t.Errorf("--state-file none wrote %s", b.stateFile())
		}
		// Without the table the right's next segments are NEW from the
		// right: dropped, so the download makes no progress.
		at := d.got.Load()
		if testenv.WaitFor(5*time.Second, func() bool { return d.got.Load() > at+64<<10 }) {
			t.Errorf("download went on after a restart that forgot its connection (%d -> %d bytes): the rules do not test the adoption", at, d.got.Load())
		}
		b.stop(syscall.SIGTERM)
	})
}

// ftpClient is a minimal FTP client on one control connection, so the test
// decides when the data connection opens.
type ftpClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// send writes one command line.
func (f *ftpClient) send(line string) {
	f.t.Helper()
	f.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(f.c, "%s\r\n", line); err != nil {
		f.t.Fatalf("ftp %q: %v", line, err)
	}
}

// cmd sends line (none when empty) and reads the reply, which must start
// with want.
func (f *ftpClient) cmd(line, want string) string {
	f.t.Helper()
	if line != "" {
		f.send(line)
	}
	for {
		f.c.SetDeadline(time.Now().Add(30 * time.Second))
		s, err := f.r.ReadString('\n')
		if err != nil {
			f.t.Fatalf("ftp %q: reply: %v", line, err)
		}
		if len(s) >= 4 && s[3] == ' ' {
			if !strings.HasPrefix(s, want) {
				f.t.Fatalf("ftp %q: reply %q, want %s", line, strings.TrimSpace(s), want)
			}
			return strings.TrimSpace(s)
		}
	}
}

// TestRestartFTP opens an FTP session through statewire, has the ftp
// helper register the data connection's expectation (PORT: the server
// will connect from the right; PASV: the client connects to a port no
// NEW rule admits), restarts statewire (SIGTERM and kill -9), and only then
// opens the data connection: it passes only as RELATED, through the
// expectation the new process adopted, and the file arrives intact.
func TestRestartFTP(t *testing.T) {
	lab.RequireRoot(t)
	bin := lab.StatewireBinary(t)
	if _, err := exec.LookPath("vsftpd"); err != nil {
		t.Fatalf("vsftpd not installed (scripts/setup.sh installs it): %v", err)
	}
	for _, mode := range []string{"PORT", "PASV"} {
		for _, tc := range []struct {
			name string
			sig  syscall.Signal
			none bool // --state-file none: the control, the expectation is forgotten
		}{{"SIGTERM", syscall.SIGTERM, false}, {"kill-9", syscall.SIGKILL, false}, {"state-file-none", syscall.SIGTERM, true}} {
			if tc.none && mode != "PORT" {
				continue
			}
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				l := lab.NewT(t, lab.Options{})
				var extra []string
				if tc.none {
					extra = []string{"--state-file", "none"}
				}
				b := newRestartBridge(t, l, bin, extra...)
				b.start()
				want := startFTPServer(t, l)
				cc, err := dialTCP(l, l.LeftNS, rightIP.String()+":21", 5*time.Second)
				if err != nil {
					t.Fatalf("ftp connect: %v", err)
				}
				defer cc.Close()
				f := &ftpClient{t: t, c: cc, r: bufio.NewReader(cc)}
				f.cmd("", "220")
				f.cmd("USER anonymous", "230")
				f.cmd("TYPE I", "200")
				var dataLn net.Listener
				var pasvAddr string
				if mode == "PORT" {
					dataLn = listenTCP(t, l, l.LeftNS, leftIP.String()+":0")
					port := dataLn.Addr().(*net.TCPAddr).Port
					f.cmd(fmt.Sprintf("PORT 198,18,0,1,%d,%d", port>>8, port&255), "200")
				} else {
					reply := f.cmd("PASV", "227")
					m := regexp.MustCompile(`\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)`).FindStringSubmatch(reply)
					if m == nil {
						t.Fatalf("PASV reply %q", reply)
					}
					hi, _ := strconv.Atoi(m[5])
					lo, _ := strconv.Atoi(m[6])
					pasvAddr = fmt.Sprintf("%s.%s.%s.%s:%d", m[1], m[2], m[3], m[4], hi<<8|lo)
				}
				if !testenv.WaitFor(5*time.Second, func() bool { return strings.Contains(b.ctl("--expect-list"), "proto=6") }) {
					t.Fatalf("no expectation listed after %s: %s", mode, b.ctl("--expect-list"))
				}
				p, gap := b.restart(tc.sig)
				conns, expects := adopted(p)
				if tc.none {
					// The control connection is picked up mid-stream
					// (NEW from the left to port 21: admitted, helper
					// attached), but the PORT it announced before the
					// restart is forgotten: the server's data connection,
					// NEW from the right, is dropped.
					if conns >= 0 {
						t.Fatalf("--state-file none adopted %d connections", conns)
					}
					f.send("RETR file.bin")
					dataLn.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
					if data, err := dataLn.Accept(); err == nil {
						data.Close()
						t.Fatalf("the data connection passed after a restart that forgot the expectation: the rules do not test the adoption")
					}
					b.stop(syscall.SIGTERM)
					return
				}
				if conns < 1 || expects < 1 {
					t.Fatalf("new process adopted %d connections, %d expectations; want the control connection and its expectation\nstderr:\n%s",
						conns, expects, p.stderr.String())
				}
				t.Logf("%s restart (%s): ports unserved for %v; %s", mode, tc.name, gap.Round(time.Millisecond),
					regexp.MustCompile(`adopted [^\n"]*`).FindString(p.stderr.String()))
				if l := b.ctl("-L", "-p", "tcp", "--dport", "21"); !strings.Contains(l, "ESTABLISHED") || !strings.Contains(l, "helper=ftp") {
					t.Errorf("after the restart, conntrack -L: %q, want the control connection ESTABLISHED with helper=ftp", l)
				}
				// The data connection opens now, after the restart.
				var data net.Conn
				if mode == "PORT" {
					// vsftpd connects before it answers 150.
					f.send("RETR file.bin")
					dataLn.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
					if data, err = dataLn.Accept(); err != nil {
						t.Fatalf("the server's data connection (RELATED, from the right) did not arrive: %v", err)
					}
					f.cmd("", "150")
				} else {
					if data, err = dialTCP(l, l.LeftNS, pasvAddr, 20*time.Second); err != nil {
						t.Fatalf("passive data connection to %s: %v", pasvAddr, err)
					}
					f.cmd("RETR file.bin", "150")
				}
				data.SetDeadline(time.Now().Add(60 * time.Second))
				h := sha256.New()
				n, err := io.Copy(h, data)
				data.Close()
				if err != nil || [32]byte(h.Sum(nil)) != want {
					t.Fatalf("data connection after the restart: %d bytes, err %v, sha256 mismatch=%v", n, err, [32]byte(h.Sum(nil)) != want)
				}
				f.cmd("", "226")
				f.cmd("QUIT", "221")
				b.stop(syscall.SIGTERM)
			})
		}
	}
}

// startFTPServer runs vsftpd on the right serving one random 2 MB file and
// returns its SHA-256.
func startFTPServer(t *testing.T, l *lab.Lab) [32]byte {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []string{dir, filepath.Dir(dir)} {
		os.Chmod(p, 0o755)
	}
	data := make([]byte, 2<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "file.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
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
pasv_min_port=40000
pasv_max_port=40100
port_enable=YES
connect_from_port_20=YES
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
secure_chroot_dir=/var/run/vsftpd/empty
xferlog_enable=NO
dirmessage_enable=NO
data_connection_timeout=60
accept_timeout=60
connect_timeout=60
idle_session_timeout=120
`, rightIP, dir)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll("/var/run/vsftpd/empty", 0o755)
	cmd := l.Command(l.RightNS, "vsftpd", conf)
	var out lab.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start vsftpd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		// vsftpd's session processes call setsid and leave the group.
		if pids, err := exec.Command("ip", "netns", "pids", l.RightNS).Output(); err == nil {
			for _, f := range strings.Fields(string(pids)) {
				if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		<-done
	})
	if !testenv.WaitFor(10*time.Second, func() bool {
		return l.Do(l.RightNS, func() error {
			c, err := net.DialTimeout("tcp4", rightIP.String()+":21", time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	}) {
		t.Fatalf("vsftpd does not listen on %s:21: %s", rightIP, out.String())
	}
	return sha256.Sum256(data)
}
