package ctsync_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/ctsync"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// peer is a conntrackd running in a namespace of its own, linked to the
// root namespace by a veth pair: the daemon at Local, the test at Remote,
// both on Port (conntrackd's UDP channel binds and sends on one port).
type peer struct {
	ns, conf, ctl string
	Local, Remote netip.Addr
	Port          int
	conn          *net.UDPConn

	mu   sync.Mutex
	msgs []ctsync.Msg
	raw  [][]byte // raw[i] is the bytes of msgs[i]
	bad  []error
}

// startConntrackd makes the namespace and the veth pair, writes a
// conntrackd configuration (mode is NOTRACK or FTFW) into a temporary
// directory and starts conntrackd there. Everything is undone by
// t.Cleanup, also when the test fails.
func startConntrackd(t *testing.T, mode string) *peer {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root for network namespaces; run the test as root (sudo -E go test ./ctsync/)")
	}
	for _, cmd := range []string{"ip", "conntrackd", "conntrack"} {
		if _, err := exec.LookPath(cmd); err != nil {
			testenv.Unavailable(t, cmd+" not found; run scripts/setup.sh as root to install it")
		}
	}
	id := os.Getpid()%200 + 1
	p := &peer{
		ns:     fmt.Sprintf("swctd%d", os.Getpid()),
		Local:  netip.MustParseAddr(fmt.Sprintf("198.19.%d.1", id)),
		Remote: netip.MustParseAddr(fmt.Sprintf("198.19.%d.2", id)),
		Port:   3780,
	}
	vethNS, vethRoot := fmt.Sprintf("swcn%d", os.Getpid()), fmt.Sprintf("swcr%d", os.Getpid())
	run(t, "ip", "netns", "add", p.ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", p.ns).Run() })
	run(t, "ip", "link", "add", vethRoot, "type", "veth", "peer", "name", vethNS)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", vethRoot).Run() })
	run(t, "ip", "link", "set", vethNS, "netns", p.ns)
	run(t, "ip", "addr", "add", p.Remote.String()+"/30", "dev", vethRoot)
	run(t, "ip", "link", "set", vethRoot, "up")
	run(t, "ip", "-n", p.ns, "addr", "add", p.Local.String()+"/30", "dev", vethNS)
	run(t, "ip", "-n", p.ns, "link", "set", vethNS, "up")
	run(t, "ip", "-n", p.ns, "link", "set", "lo", "up")

	var err error
	p.conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: p.Remote.AsSlice(), Port: p.Port})
	if err != nil {
		t.Fatalf("listen on the peer address: %v", err)
	}
	t.Cleanup(func() { p.conn.Close() })
	go p.read()

	dir := t.TempDir()
	p.conf = filepath.Join(dir, "conntrackd.conf")
	p.ctl = filepath.Join(dir, "ctl")
	conf := fmt.Sprintf(`Sync {
	Mode %s {
	}
	UDP {
		IPv4_address %s
		IPv4_Destination_Address %s
		Port %d
		Interface %s
		Checksum on
	}
}
General {
	HashSize 1024
	HashLimit 8192
	LockFile %s
	UNIX {
		Path %s
	}
	Syslog off
	LogFile %s
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
}
`, mode, p.Local, p.Remote, p.Port, vethNS, filepath.Join(dir, "lock"), p.ctl, filepath.Join(dir, "log"))
	if err := os.WriteFile(p.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command("ip", "netns", "exec", p.ns, "conntrackd", "-C", p.conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start conntrackd: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Logf("conntrackd output:\n%s\nconntrackd log:\n%s", out.String(), log)
		}
	})
	if !testenv.WaitFor(10*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		// The log says so once the event socket is subscribed (the control
		// socket exists earlier: src/run.c init).
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		return bytes.Contains(log, []byte("initialization completed"))
	}) {
		t.Fatalf("conntrackd did not log \"initialization completed\" in 10s")
	}
	select {
	case <-done:
		t.Fatalf("conntrackd exited at start: %s", out.String())
	default:
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// read decodes every datagram conntrackd sends to the test's address.
func (p *peer) read() {
	buf := make([]byte, 65536)
	for {
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		msgs, err := ctsync.Decode(buf[:n])
		p.mu.Lock()
		off := 0
		for _, m := range msgs {
			p.raw = append(p.raw, append([]byte(nil), buf[off:off+int(m.Len)]...))
			off += int(m.Len)
		}
		p.msgs = append(p.msgs, msgs...)
		if err != nil {
			p.bad = append(p.bad, fmt.Errorf("%w in % x", err, buf[:n]))
		}
		p.mu.Unlock()
	}
}

// find returns the first CT message whose original tuple is want.
func (p *peer) find(want ctsync.Tuple) (ctsync.Msg, []byte, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, m := range p.msgs {
		if m.CT != nil && m.CT.Orig == want {
			return m, p.raw[i], true
		}
	}
	return ctsync.Msg{}, nil, false
}

// kernelTimeout finds the timeout in a conntrack -L line ("tcp 6 299 ...").
var kernelTimeout = regexp.MustCompile(`(?m)^\w+\s+\d+\s+(\d+)\s`)

// TestConntrackdSends: connections inserted into the kernel's table in
// conntrackd's namespace reach the peer as CT messages whose tuple, state,
// status and timeout are the kernel's, and that this package re-encodes
// byte for byte.
func TestConntrackdSends(t *testing.T) {
	for _, mode := range []string{"NOTRACK", "FTFW"} {
		t.Run(mode, func(t *testing.T) { testConntrackdSends(t, mode) })
	}
}

func testConntrackdSends(t *testing.T, mode string) {
	p := startConntrackd(t, mode)
	dst := p.Local.Next().Next().Next().Next().Next().Next().Next().Next() // .9
	for _, tt := range []struct {
		name  string
		args  []string // conntrack -I arguments after the addresses; -p first, -t last
		want  ctsync.Tuple
		check func(t *testing.T, c *ctsync.CT)
	}{
		{"tcp established", []string{"-p", "tcp", "--sport", "40001", "--dport", "80", "--state", "ESTABLISHED", "-u", "SEEN_REPLY,ASSURED", "-t", "300"},
			ctsync.Tuple{Src: p.Local, Dst: dst, Proto: 6, SrcPort: 40001, DstPort: 80},
			func(t *testing.T, c *ctsync.CT) {
				if c.TCPState != 3 {
					t.Errorf("TCP state %d, want 3 (ESTABLISHED)", c.TCPState)
				}
				if want := ctsync.IPSSeenReply | ctsync.IPSAssured | ctsync.IPSConfirmed; c.Status&want != want {
					t.Errorf("status %#x, want the bits %#x", c.Status, want)
				}
			}},
		{"udp unreplied", []string{"-p", "udp", "--sport", "40002", "--dport", "53", "-t", "30"},
			ctsync.Tuple{Src: p.Local, Dst: dst, Proto: 17, SrcPort: 40002, DstPort: 53},
			func(t *testing.T, c *ctsync.CT) {
				if c.Status&ctsync.IPSSeenReply != 0 || c.Status&ctsync.IPSConfirmed == 0 {
					t.Errorf("status %#x, want CONFIRMED without SEEN_REPLY", c.Status)
				}
			}},
		{"icmp echo", []string{"-p", "icmp", "--icmp-type", "8", "--icmp-code", "0", "--icmp-id", "4660", "-t", "29"},
			ctsync.Tuple{Src: p.Local, Dst: dst, Proto: 1},
			func(t *testing.T, c *ctsync.CT) {
				if c.ICMPType != 8 || c.ICMPCode != 0 || c.ICMPID != 4660 {
					t.Errorf("ICMP type %d code %d id %d, want 8 0 4660", c.ICMPType, c.ICMPCode, c.ICMPID)
				}
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			run(t, "ip", append([]string{"netns", "exec", p.ns, "conntrack", "-I", "-s", p.Local.String(), "-d", dst.String()}, tt.args...)...)
			var m ctsync.Msg
			var raw []byte
			var ok bool
			if !testenv.WaitFor(10*time.Second, func() bool { m, raw, ok = p.find(tt.want); return ok }) {
				p.mu.Lock()
				defer p.mu.Unlock()
				t.Fatalf("no CT message for %+v from conntrackd in 10s; got %d messages %+v, decode errors %v", tt.want, len(p.msgs), p.msgs, p.bad)
			}
			kl := run(t, "ip", "netns", "exec", p.ns, "conntrack", "-L", "-p", tt.args[1], "-s", p.Local.String(), "-d", dst.String())
			km := kernelTimeout.FindStringSubmatch(kl)
			if km == nil {
				t.Fatalf("kernel entry not listed: %q", kl)
			}
			kt, _ := strconv.Atoi(km[1])
			c := m.CT
			t.Logf("conntrackd sent %v seq %d: %+v; kernel: %s", m.Type, m.Seq, *c, strings.TrimSpace(kl))
			if m.Type != ctsync.TypeCTNew && m.Type != ctsync.TypeCTUpd {
				t.Errorf("message type %v, want CT_NEW or CT_UPD", m.Type)
			}
			tt.check(t, c)
			inserted, _ := strconv.Atoi(tt.args[len(tt.args)-1])
			if !c.Has(ctsync.NTATimeout) || int(c.Timeout) > inserted || int(c.Timeout) < kt-5 {
				t.Errorf("timeout %d (present %v), want between the kernel's %d - 5 and %d", c.Timeout, c.Has(ctsync.NTATimeout), kt, inserted)
			}
			// Our encoder writes the same bytes for the same connection.
			re, err := ctsync.AppendCT(nil, m.Header, c, ctsync.Options{TCPWindowTracking: c.Has(ctsync.NTATCPWScaleOrg)})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(re, raw) {
				t.Errorf("re-encoding the decoded message gives\n% x\nconntrackd sent\n% x", re, raw)
			}
			t.Logf("conntrackd's message: % x", raw)
		})
	}
	// An idle conntrackd tells the peer it is alive (sync-ftfw.c,
	// sync-notrack.c): a bare nethdr of type NET_T_CTL, flag ALIVE.
	t.Run("alive", func(t *testing.T) {
		var alive *ctsync.Msg
		if !testenv.WaitFor(10*time.Second, func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			for i, m := range p.msgs {
				if m.Type == ctsync.TypeCtl && m.Flags&ctsync.FlagAlive != 0 {
					alive = &p.msgs[i]
					return true
				}
			}
			return false
		}) {
			t.Fatalf("no ALIVE control message from conntrackd in 10s")
		}
		if alive.Len != ctsync.HeaderLen || alive.IsData() {
			t.Errorf("ALIVE %+v, want a bare %d-byte control header", alive.Header, ctsync.HeaderLen)
		}
	})
}

// TestConntrackdReceives: a CT_NEW of an ESTABLISHED TCP connection, made
// by FromSnapshot from a flowtable entry and encoded by this package, lands
// in conntrackd's external cache.
func TestConntrackdReceives(t *testing.T) {
	for _, mode := range []string{"NOTRACK", "FTFW"} {
		t.Run(mode, func(t *testing.T) { testConntrackdReceives(t, mode) })
	}
}

func testConntrackdReceives(t *testing.T, mode string) {
	p := startConntrackd(t, mode)
	src, dst := netip.MustParseAddr("198.19.250.50"), netip.MustParseAddr("198.19.250.60")
	// The connection as statewire's table holds it: an ESTABLISHED,
	// ASSURED TCP entry with five days left.
	now := int64(1e12)
	es := &flowtable.EntrySnapshot{
		Orig: flowtable.Tuple{Src: packet.AddrFromNetip(src), Dst: packet.AddrFromNetip(dst), SrcPort: 41000, DstPort: 22, Proto: packet.ProtoTCP, L3: 4},
		Conn: statemachine.Conn{
			Expires: now + 432000*int64(time.Second), Proto: packet.ProtoTCP, State: statemachine.TCPEstablished,
			Status: statemachine.StatusSeenReply | statemachine.StatusAssured,
			TCP:    statemachine.TCPConn{Peer: [2]statemachine.TCPPeer{{Scale: 7}, {Scale: 9}}},
		},
	}
	c := ctsync.FromSnapshot(es, now)
	msg, err := ctsync.AppendCT(nil, ctsync.Header{Type: ctsync.TypeCTNew, Seq: 1}, c, ctsync.Options{TCPWindowTracking: true})
	if err != nil {
		t.Fatal(err)
	}
	to := &net.UDPAddr{IP: p.Local.AsSlice(), Port: p.Port}
	wantLine := fmt.Sprintf("src=%s dst=%s sport=41000 dport=22", src, dst)
	var ext string
	if !testenv.WaitFor(10*time.Second, func() bool {
		// UDP: resend until it is there (conntrackd takes the same CT_NEW
		// twice as one entry).
		if _, err := p.conn.WriteToUDP(msg, to); err != nil {
			t.Logf("send: %v", err)
		}
		ext = runQuiet("ip", "netns", "exec", p.ns, "conntrackd", "-C", p.conf, "-e")
		return strings.Contains(ext, wantLine)
	}) {
		t.Fatalf("conntrackd -e does not list %q after 10s; it lists:\n%s", wantLine, ext)
	}
	var line string
	for _, l := range strings.Split(ext, "\n") {
		if strings.Contains(l, wantLine) {
			line = l
		}
	}
	t.Logf("conntrackd -e: %s", line)
	for _, want := range []string{"tcp", "ESTABLISHED", "[ASSURED]"} {
		if !strings.Contains(line, want) {
			t.Errorf("external cache line %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "[UNREPLIED]") {
		t.Errorf("external cache line %q is UNREPLIED; we sent SEEN_REPLY", line)
	}
	// Committing the external cache (what a failover script does) puts the
	// connection into the kernel's table of the namespace.
	run(t, "ip", "netns", "exec", p.ns, "conntrackd", "-C", p.conf, "-c")
	var kl string
	if !testenv.WaitFor(10*time.Second, func() bool {
		kl = runQuiet("ip", "netns", "exec", p.ns, "conntrack", "-L", "-p", "tcp", "--orig-port-src", "41000")
		return strings.Contains(kl, wantLine)
	}) {
		t.Fatalf("after conntrackd -c the kernel does not list %q:\n%s", wantLine, kl)
	}
	t.Logf("kernel after conntrackd -c: %s", strings.TrimSpace(kl))
	for _, want := range []string{"ESTABLISHED", "[ASSURED]", "src=" + dst.String() + " dst=" + src.String() + " sport=22 dport=41000"} {
		if !strings.Contains(kl, want) {
			t.Errorf("kernel entry %q lacks %q", kl, want)
		}
	}
	if m := kernelTimeout.FindStringSubmatch(kl); m == nil || m[1] == "0" {
		t.Errorf("kernel entry %q has no timeout", kl)
	} else if kt, _ := strconv.Atoi(m[1]); kt > 432000 || kt < 431990 {
		t.Errorf("kernel timeout %d, want the 432000 s we sent (less a few)", kt)
	}
}

func runQuiet(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	return string(out)
}
