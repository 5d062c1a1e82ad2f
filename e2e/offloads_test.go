package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// offloadRules admit NEW from the left, NEW from the right only to the
// right-to-left transfer's port and for ping, FTP data only as RELATED (the ftp helper
// on port 21), and drop INVALID first: a partial checksum judged bad would
// be dropped here and every connection would fail.
const offloadRules = `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp --dport 21 -j CT --helper ftp
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A FORWARD -m physdev --physdev-in {PortA} -m conntrack --ctstate NEW -j ACCEPT
-A FORWARD -m physdev --physdev-in {PortB} -p tcp --dport 5002 -m conntrack --ctstate NEW -j ACCEPT
-A FORWARD -p icmp -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

// TestDefaultOffloads is a first-time user's setup: the hosts' veths keep
// the kernel's default offloads, so their TCP and UDP frames reach the
// bridge with partial checksums (CHECKSUM_PARTIAL), with --checksum on
// (nf_conntrack_checksum=1) and the rules above. With the slow path only
// and with the XDP fast path: ping both ways, 10 MB over TCP each way with
// SHA-256 compared, an active-mode FTP download through the helper (the
// data connection, opened from the right, passes only as RELATED); no
// frame was called a bad checksum, partial checksums were completed
// (counted), and neither host counted a checksum error (every frame left
// statewire with a correct checksum). Then injected frames: a TCP SYN with
// a partial checksum arrives at the right host completed, byte for byte
// the frame with the right checksum; the same SYN with a corrupt checksum
// is INVALID, dropped by --ctstate INVALID -j DROP, and never arrives.
//
// In generic XDP mode the hosts' TSO/GSO super-frames fit no UMEM frame:
// statewire says so at start, naming each port's peer and the ethtool
// command; with that command run, the same checks pass (the fast path then
// completes partial checksums on the skb path too).
func TestDefaultOffloads(t *testing.T) {
	for _, tc := range []struct {
		name, mode string
		generic    bool
	}{{"offload=off", "off", false}, {"offload=on", "on", false}, {"generic,offload=on", "on", true}} {
		mode := tc.mode
		t.Run(tc.name, func(t *testing.T) {
			s := bridge.DefaultSettings()
			s.VerifyChecksum = true
			o := e2etest.Options{Cores: 2, Rules: offloadRules, Settings: s, Offload: mode}
			var logged lab.SyncBuffer
			if tc.generic {
				o.Attach = offload.Generic
				o.Tweak = func(c *bridge.DatapathConfig) {
					c.Logf = func(f string, a ...any) {
						t.Logf(f, a...)
						fmt.Fprintf(&logged, f+"\n", a...)
					}
				}
			}
			r := e2etest.Start(t, o)
			l := r.Lab
			if tc.generic {
				for _, h := range [][2]string{{l.LeftNS, l.LeftIf}, {l.RightNS, l.RightIf}} {
					fix := "ethtool -K " + h[1] + " tso off gso off"
					if !strings.Contains(logged.String(), fix) {
						t.Errorf("generic mode: the start did not say %q; it logged:\n%s", fix, logged.String())
					}
					if out, err := l.Run(ctx(t, 10*time.Second), h[0], "ethtool", "-K", h[1], "tso", "off", "gso", "off"); err != nil {
						t.Fatalf("%s: %v %s", fix, err, out)
					}
				}
			}
			for _, h := range [][2]string{{l.LeftNS, l.LeftIf}, {l.RightNS, l.RightIf}} {
				out, err := l.Run(ctx(t, 10*time.Second), h[0], "ethtool", "-k", h[1])
				if err != nil || !strings.Contains(out, "tx-checksumming: on") {
					t.Fatalf("%s: tx checksum offload is not on (the kernel's default; the test is about it): %v\n%s", h[1], err, out)
				}
			}
			errsBefore := [2]uint64{csumErrors(t, l, l.LeftNS), csumErrors(t, l, l.RightNS)}

			for _, p := range []struct{ ns, to string }{{l.LeftNS, rightIP.String()}, {l.RightNS, leftIP.String()}} {
				if _, ok := l.PingWithin(p.ns, p.to, 10*time.Second); !ok {
					t.Fatalf("ping %s from %s: no answer", p.to, p.ns)
				}
			}
			data := make([]byte, 10<<20)
			rand.Read(data)
			for _, tr := range []struct{ name, from, to, addr string }{
				{"left to right", l.LeftNS, l.RightNS, rightIP.String() + ":5001"},
				{"right to left", l.RightNS, l.LeftNS, leftIP.String() + ":5002"},
			} {
				x, err := l.TransferTCP(ctx(t, 90*time.Second), tr.from, tr.to, tr.addr, data)
				if err != nil {
					t.Fatalf("TCP %s: %v", tr.name, err)
				}
				if x.Got != x.Sent || x.N != int64(len(data)) {
					t.Fatalf("TCP %s: %d bytes arrived, sha256 %x; want %d bytes, sha256 %x", tr.name, x.N, x.Got, len(data), x.Sent)
				}
				t.Logf("TCP %s: %d bytes in %v, SHA-256 matches", tr.name, x.N, x.Took.Round(time.Millisecond))
			}
			ftpDownload(t, l)

			// Injected frames, through the catcher of the spoof tests.
			w := newSpoofWire(t, "statewire", l)
			syn := pt.TCP4(leftIP.String(), rightIP.String(), 47001, 5009, pt.TCPFields{Flags: packet.TCPSyn, Seq: 77, Window: 64240, MSS: 1460})
			copy(syn[0:6], spoofDstMAC[:])
			part := pt.Partial(syn)
			w.send(t, 0, part)
			if !w.sniff[1].await(syn, 5*time.Second) {
				t.Fatal("a SYN sent with a partial checksum did not arrive at the right host with the checksum completed")
			}
			bad := pt.TCP4(leftIP.String(), rightIP.String(), 47002, 5009, pt.TCPFields{Flags: packet.TCPSyn, Seq: 77, Window: 64240, MSS: 1460})
			copy(bad[0:6], spoofDstMAC[:])
			bad[len(bad)-3] ^= 0x40 // in the MSS option: the checksum no longer matches
			var bp packet.Packet
			if packet.Parse(bad, 0, packet.Options{VerifyChecksum: true}, &bp) != packet.ReasonBadChecksum || bp.ChecksumPartial {
				t.Fatal("the corrupt frame is not a bad checksum")
			}
			before := r.DP.Stats().Pipeline
			w.send(t, 0, bad)
			// The drop is published by the worker; wait for it.
			var after bridge.Stats
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				after = r.DP.Stats().Pipeline
				if after.Parse[packet.ReasonBadChecksum] > before.Parse[packet.ReasonBadChecksum] || time.Now().After(deadline) {
					break
				}
			}
			if after.Parse[packet.ReasonBadChecksum] != before.Parse[packet.ReasonBadChecksum]+1 ||
				e2etest.StateCount(&after, "INVALID") != e2etest.StateCount(&before, "INVALID")+1 ||
				after.Drops[bridge.DropRule] != before.Drops[bridge.DropRule]+1 {
				t.Errorf("corrupt checksum: bad-checksum +%d, INVALID +%d, rule drops +%d; want +1 each",
					after.Parse[packet.ReasonBadChecksum]-before.Parse[packet.ReasonBadChecksum],
					e2etest.StateCount(&after, "INVALID")-e2etest.StateCount(&before, "INVALID"),
					after.Drops[bridge.DropRule]-before.Drops[bridge.DropRule])
			}
			if w.sniff[1].await(bad, 0) {
				t.Error("the frame with a corrupt checksum reached the right host")
			}

			errsAfter := [2]uint64{csumErrors(t, l, l.LeftNS), csumErrors(t, l, l.RightNS)}
			st := r.Stop(t)
			pl := &st.Pipeline
			fast := st.Fast.Ports[bridge.PortA].CsumCompleted + st.Fast.Ports[bridge.PortB].CsumCompleted
			t.Logf("partial checksums completed: %d by the workers, %d by the fast path (fast path forwarded %d frames)",
				pl.CsumCompleted, fast, st.Fast.Packets(bridge.PortA)+st.Fast.Packets(bridge.PortB))
			if pl.Parse[packet.ReasonBadChecksum] != 1 {
				t.Errorf("%d frames called a bad checksum, want 1 (the injected one)", pl.Parse[packet.ReasonBadChecksum])
			}
			if pl.CsumCompleted+fast < 1000 {
				t.Errorf("%d partial checksums completed, want most of the TCP frames (the hosts offload checksums)", pl.CsumCompleted+fast)
			}
			if e2etest.StateCount(pl, "RELATED") == 0 {
				t.Error("no RELATED packet: the FTP data connection did not pass through the helper")
			}
			if mode == "on" && fast == 0 {
				t.Error("the fast path completed no partial checksum")
			}
			for i, ns := range []string{l.LeftNS, l.RightNS} {
				if d := errsAfter[i] - errsBefore[i]; d != 0 {
					t.Errorf("%s counted %d TCP/UDP checksum errors: statewire forwarded frames with wrong checksums", ns, d)
				}
			}
		})
	}
}

// csumErrors returns the TCP and UDP InCsumErrors of ns (/proc/net/snmp):
// segments and datagrams the host dropped for a bad checksum.
func csumErrors(t *testing.T, l *lab.Lab, ns string) uint64 {
	t.Helper()
	out, err := l.Run(ctx(t, 10*time.Second), ns, "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatalf("/proc/net/snmp in %s: %v", ns, err)
	}
	var n uint64
	var head []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || (f[0] != "Tcp:" && f[0] != "Udp:") {
			continue
		}
		if head == nil || head[0] != f[0] {
			head = f
			continue
		}
		for i := 1; i < len(f) && i < len(head); i++ {
			if head[i] == "InCsumErrors" {
				v, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					t.Fatalf("/proc/net/snmp %s InCsumErrors %q: %v", f[0], f[i], err)
				}
				n += v
			}
		}
		head = nil
	}
	return n
}

// ftpDownload serves 5 MB with vsftpd on the right and fetches it with curl
// on the left in active mode (PORT): the data connection is opened from
// the right and passes only as RELATED (the ftp helper read the PORT
// command from frames with partial checksums).
func ftpDownload(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, bin := range []string{"vsftpd", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed (scripts/setup.sh installs it): %v", bin, err)
		}
	}
	dir := t.TempDir()
	for _, p := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data := make([]byte, 5<<20)
	rand.Read(data)
	want := sha256.Sum256(data)
	if err := os.WriteFile(filepath.Join(dir, "file.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "vsftpd.conf")
	text := fmt.Sprintf("listen=YES\nlisten_ipv6=NO\nlisten_address=%s\nlisten_port=21\nbackground=NO\n"+
		"anonymous_enable=YES\nno_anon_password=YES\nanon_root=%s\nlocal_enable=NO\nwrite_enable=NO\n"+
		"pasv_enable=YES\nport_enable=YES\nconnect_from_port_20=YES\nseccomp_sandbox=NO\nisolate=NO\n"+
		"isolate_network=NO\nsecure_chroot_dir=/var/run/vsftpd/empty\nxferlog_enable=NO\ndirmessage_enable=NO\n"+
		"data_connection_timeout=10\naccept_timeout=5\nconnect_timeout=5\n", rightIP, dir)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/var/run/vsftpd/empty", 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := l.Command(l.RightNS, "vsftpd", conf)
	var out lab.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start vsftpd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		// vsftpd's sessions call setsid and leave the group: kill what
		// else runs in the right namespace, all of it this test's.
		if pids, err := exec.Command("ip", "netns", "pids", l.RightNS).Output(); err == nil {
			for _, f := range strings.Fields(string(pids)) {
				if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("vsftpd (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("vsftpd output:\n%s", out.String())
		}
	}()
	addr := rightIP.String() + ":21"
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c, derr := dialTCP(l, l.RightNS, addr, time.Second)
		if err = derr; err == nil {
			c.Close()
			break
		}
	}
	if err != nil {
		t.Fatalf("vsftpd does not listen on %s: %v", addr, err)
	}
	dst := filepath.Join(t.TempDir(), "out.bin")
	c, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	if o, err := l.Run(c, l.LeftNS, "curl", "-sS", "--max-time", "60", "-o", dst,
		"--ftp-port", leftIP.String(), "--disable-eprt", fmt.Sprintf("ftp://%s/file.bin", rightIP)); err != nil {
		t.Fatalf("curl (active FTP through the helper): %v %s", err, o)
	}
	got, err := os.ReadFile(dst)
	if err != nil || sha256.Sum256(got) != want {
		t.Fatalf("FTP: %d bytes arrived (err %v), sha256 %x; want %d bytes, sha256 %x", len(got), err, sha256.Sum256(got), len(data), want)
	}
	t.Logf("FTP (active, through the helper): %d bytes in %v, SHA-256 matches", len(got), time.Since(start).Round(time.Millisecond))
}
