package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// The two rule sets of TestSpoofedIntoWrongPort, iptables-save files with
// {PortA} and {PortB} standing for the port names. Both are loaded as they
// are: into `statewire run --rules`, and with iptables-legacy-restore into
// the kernel bridge's namespace (br_netfilter: --physdev-in reads the
// bridge port a frame came in on).
const (
	// spoofLeftOnly is the README's policy (new connections only from port
	// A, the answers both ways) plus a NOTRACK rule for UDP port 7000.
	spoofLeftOnly = `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp --dport 21 -j CT --helper ftp
-A PREROUTING -p udp --dport 7000 -j NOTRACK
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A FORWARD -m physdev --physdev-in {PortA} -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`
	// spoofDropFromB accepts everything except what port B sends that is
	// not part of a known connection.
	spoofDropFromB = `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p udp --dport 7000 -j CT --notrack
COMMIT
*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -m physdev --physdev-in {PortB} -m conntrack --ctstate NEW,INVALID,UNTRACKED -j DROP
COMMIT
`
)

// The same two rule sets in nftables, as the conformance lab writes rules
// (lab.DefaultRuleset): with br_netfilter the inet/ip forward hook sees the
// bridge as the input device, so the bridge family records the port as a
// mark first. The test checks that they give the iptables files' fates.
const (
	spoofNftPort = `table bridge swport {
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		iifname "{PortA}" meta mark set 1
		iifname "{PortB}" meta mark set 2
	}
}
`
	spoofLeftOnlyNft = spoofNftPort + `table ip swfw {
	ct helper h_ftp { type "ftp" protocol tcp; }
	chain raw {
		type filter hook prerouting priority raw; policy accept;
		udp dport 7000 notrack
	}
	chain helpers {
		type filter hook prerouting priority filter; policy accept;
		tcp dport 21 ct helper set "h_ftp"
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		meta mark 1 ct state new accept
	}
}
`
	spoofDropFromBNft = spoofNftPort + `table ip swfw {
	chain raw {
		type filter hook prerouting priority raw; policy accept;
		udp dport 7000 notrack
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		meta mark 2 ct state new,invalid,untracked drop
	}
}
`
)

// MACs of the crafted frames: the source is the sending host's (by source
// IP), the destination an address no frame ever carries as its source, so
// the kernel bridge never learns it and floods every frame to the other
// port (a spoofed frame carrying the left host's MAC into port B must still
// be forwarded by the bridge, or dropped by the firewall, not by the FDB),
// and the hosts' stacks ignore the frames (not their address: no RST, no
// ICMP error).
var (
	spoofLeftMAC  = [6]byte{0x02, 0x73, 0x70, 0, 0, 0x01}
	spoofRightMAC = [6]byte{0x02, 0x73, 0x70, 0, 0, 0x02}
	spoofDstMAC   = [6]byte{0x02, 0x73, 0x70, 0, 0, 0x99}
)

// fate is what became of an injected frame.
type fate bool

const (
	forwarded fate = true
	dropped   fate = false
)

func (f fate) String() string {
	if f {
		return "forwarded"
	}
	return "dropped"
}

// spoofStep is one frame injected from one side (0: the left host, into
// port A; 1: the right host, into port B), with its expected fate under
// each rule set.
type spoofStep struct {
	what     string
	from     int
	frame    []byte
	leftOnly fate // under spoofLeftOnly
	dropB    fate // under spoofDropFromB
}

// spoofSteps returns the scenario: the frames, in order, with unique IPv4
// IDs (the marker the far side looks for) and correct checksums.
func spoofSteps() []spoofStep {
	L, R := leftIP.String(), rightIP.String()
	const A, B = 0, 1
	var id uint16 = 0x5300
	mark := func(f []byte) []byte {
		id++
		if netip.AddrFrom4([4]byte(f[26:30])) == leftIP { // the left host's frame
			copy(f[6:12], spoofLeftMAC[:])
		} else {
			copy(f[6:12], spoofRightMAC[:])
		}
		copy(f[0:6], spoofDstMAC[:])
		binary.BigEndian.PutUint16(f[18:20], id)
		return pt.FixChecksums(f)
	}
	udp := func(src, dst string, sport, dport uint16, payload string) []byte {
		return mark(pt.UDP4(src, dst, sport, dport, []byte(payload)))
	}
	tcp := func(src, dst string, sport, dport uint16, flags uint8, seq, ack uint32) []byte {
		return mark(pt.TCP4(src, dst, sport, dport, pt.TCPFields{Flags: flags, Seq: seq, Ack: ack, Window: 64240}))
	}
	const (
		syn    = packet.TCPSyn
		synack = packet.TCPSyn | packet.TCPAck
		ack    = packet.TCPAck
		finack = packet.TCPFin | packet.TCPAck
	)
	u1 := pt.UDP4(L, R, 4000, 5000, []byte("u1"))
	return []spoofStep{
		// NEW: an unreplied UDP flow from the left; its tuple sent into B.
		{"udp L:4000>R:5000 from A (NEW)", A, udp(L, R, 4000, 5000, "u1 first"), forwarded, forwarded},
		{"udp L:4000>R:5000 again from A (NEW, verdict cached)", A, udp(L, R, 4000, 5000, "u1 second"), forwarded, forwarded},
		{"udp L:4000>R:5000 spoofed into B (NEW)", B, udp(L, R, 4000, 5000, "u1 spoofed"), dropped, dropped},
		{"udp L:4000>R:5000 from A after the spoof (NEW)", A, udp(L, R, 4000, 5000, "u1 third"), forwarded, forwarded},
		// With the fast path on the flow is offered by now (eligible for
		// over 10 ms): its next frame from A goes by the XDP program, the
		// spoofed one must not (the verdict byte names port A).
		{"udp L:4000>R:5000 from A, flow offered to the fast path (NEW)", A, udp(L, R, 4000, 5000, "u1 fourth"), forwarded, forwarded},
		{"udp L:4000>R:5000 from A by the fast path (NEW)", A, udp(L, R, 4000, 5000, "u1 fifth"), forwarded, forwarded},
		{"udp L:4000>R:5000 spoofed into B, flow in the fast path (NEW)", B, udp(L, R, 4000, 5000, "u1 spoofed again"), dropped, dropped},
		// RELATED: an ICMP error about that flow, on the right side and spoofed into A.
		{"icmp port-unreachable R>L quoting u1 from B (RELATED)", B, mark(pt.ICMP4Error(R, L, 3, 3, pt.Quote(u1, 28))), forwarded, forwarded},
		{"icmp port-unreachable R>L quoting u1 spoofed into A (RELATED)", A, mark(pt.ICMP4Error(R, L, 3, 3, pt.Quote(u1, 28))), forwarded, forwarded},
		// ESTABLISHED: a replied UDP flow, each direction spoofed into the other port.
		{"udp L:4001>R:5001 from A (NEW)", A, udp(L, R, 4001, 5001, "u2 request"), forwarded, forwarded},
		{"udp R:5001>L:4001 from B (ESTABLISHED)", B, udp(R, L, 5001, 4001, "u2 reply"), forwarded, forwarded},
		{"udp L:4001>R:5001 spoofed into B (ESTABLISHED)", B, udp(L, R, 4001, 5001, "u2 spoofed request"), forwarded, forwarded},
		{"udp R:5001>L:4001 spoofed into A (ESTABLISHED)", A, udp(R, L, 5001, 4001, "u2 spoofed reply"), forwarded, forwarded},
		// NEW: a SYN for a tuple in SYN_SENT, sent again into B.
		{"tcp SYN L:40000>R:80 from A (NEW)", A, tcp(L, R, 40000, 80, syn, 1000, 0), forwarded, forwarded},
		{"tcp SYN L:40000>R:80 spoofed into B (NEW)", B, tcp(L, R, 40000, 80, syn, 1000, 0), dropped, dropped},
		{"tcp SYN L:40000>R:80 again from A (NEW)", A, tcp(L, R, 40000, 80, syn, 1000, 0), forwarded, forwarded},
		// INVALID: an out-of-window segment of an established connection,
		// from A first (where dropB accepts it and may cache that), then B.
		{"tcp SYN L:40001>R:80 from A (NEW)", A, tcp(L, R, 40001, 80, syn, 2000, 0), forwarded, forwarded},
		{"tcp SYN/ACK R:80>L:40001 from B (ESTABLISHED)", B, tcp(R, L, 80, 40001, synack, 9000, 2001), forwarded, forwarded},
		{"tcp ACK L:40001>R:80 from A (ESTABLISHED)", A, tcp(L, R, 40001, 80, ack, 2001, 9001), forwarded, forwarded},
		{"tcp out-of-window ACK L:40001>R:80 from A (INVALID)", A, tcp(L, R, 40001, 80, ack, 2001+1<<30, 9001), dropped, forwarded},
		{"tcp out-of-window ACK L:40001>R:80 spoofed into B (INVALID)", B, tcp(L, R, 40001, 80, ack, 2001+1<<30, 9001), dropped, dropped},
		{"tcp ACK L:40001>R:80 in window from A (ESTABLISHED)", A, tcp(L, R, 40001, 80, ack, 2001, 9001), forwarded, forwarded},
		{"tcp ACK L:40001>R:80 in window spoofed into B (ESTABLISHED)", B, tcp(L, R, 40001, 80, ack, 2001, 9001), forwarded, forwarded},
		// INVALID: a FIN/ACK of no connection.
		{"tcp lone FIN/ACK L:40002>R:80 from A (INVALID)", A, tcp(L, R, 40002, 80, finack, 3000, 3000), dropped, forwarded},
		{"tcp lone FIN/ACK L:40002>R:80 spoofed into B (INVALID)", B, tcp(L, R, 40002, 80, finack, 3000, 3000), dropped, dropped},
		// UNTRACKED: the NOTRACK port.
		{"udp L:4002>R:7000 from A (UNTRACKED)", A, udp(L, R, 4002, 7000, "notrack from A"), dropped, forwarded},
		{"udp L:4002>R:7000 spoofed into B (UNTRACKED)", B, udp(L, R, 4002, 7000, "notrack from B"), dropped, dropped},
	}
}

// Waits for one injected frame at the far host: a frame expected to be
// forwarded is waited for up to spoofPassWait (it comes in microseconds;
// the margin is for a loaded machine), one expected to be dropped up to
// spoofDropWait. A frame that arrives after its wait is caught at the end.
const (
	spoofStepGap  = 30 * time.Millisecond
	spoofPassWait = 5 * time.Second
	spoofDropWait = 400 * time.Millisecond
)

// TestSpoofedIntoWrongPort is issue 17's end-to-end check: frames of a flow
// one port opened, sent into the other port (spoofed), in every state, must
// meet the fate the Linux kernel gives them. Each rule set runs on four
// bridges at once, the same frames injected into each from the same side:
// the kernel bridge with br_netfilter conntrack and the very same
// iptables-save file (iptables-legacy-restore), the kernel bridge with the
// nftables translation, and `statewire run` with 1 and 2 workers. Every
// frame's fate (seen at the far host or not) must be the same on all four
// and the one the step expects, so the test fails even if statewire and
// the kernel went wrong the same way.
func TestSpoofedIntoWrongPort(t *testing.T) {
	lab.RequireRoot(t)
	restore, err := exec.LookPath("iptables-legacy-restore")
	if err != nil {
		testenv.Unavailable(t, "iptables-legacy-restore not found (Debian package iptables; scripts/setup.sh installs it)")
	}
	bin := lab.StatewireBinary(t)
	for _, rs := range []struct {
		name       string
		rules, nft string
		want       func(spoofStep) fate
	}{
		{"left-only", spoofLeftOnly, spoofLeftOnlyNft, func(s spoofStep) fate { return s.leftOnly }},
		{"drop-from-B", spoofDropFromB, spoofDropFromBNft, func(s spoofStep) fate { return s.dropB }},
	} {
		t.Run(rs.name, func(t *testing.T) {
			wires := []*spoofWire{
				kernelWire(t, restore, rs.rules),
				kernelNftWire(t, rs.nft),
				statewireWire(t, bin, rs.rules, 1, false),
				statewireWire(t, bin, rs.rules, 2, false),
				statewireWire(t, bin, rs.rules, 1, true),
			}
			steps := spoofSteps()
			got := make([][]fate, len(wires))
			for i := range got {
				got[i] = make([]fate, len(steps))
			}
			for si, s := range steps {
				// A flow is offered to the XDP fast path once it has been
				// eligible for 10 ms (bridge.offerDelay): the pause lets
				// the fast-path wire hold the flows of the earlier steps,
				// so its spoofed frames meet the program first.
				time.Sleep(spoofStepGap)
				want := rs.want(s)
				wait := spoofDropWait
				if want == forwarded {
					wait = spoofPassWait
				}
				var wg sync.WaitGroup
				for wi, w := range wires {
					w.send(t, s.from, s.frame)
					wg.Add(1)
					go func() {
						defer wg.Done()
						got[wi][si] = fate(w.sniff[1-s.from].await(s.frame, wait))
					}()
				}
				wg.Wait()
				kernel := got[0][si]
				if kernel != want {
					t.Errorf("step %d %s: %s: got %v, want %v", si+1, s.what, wires[0].name, kernel, want)
				}
				for wi, w := range wires[1:] {
					if g := got[wi+1][si]; g != kernel {
						t.Errorf("step %d %s: %s: got %v, %s %v", si+1, s.what, w.name, g, wires[0].name, kernel)
					}
				}
			}
			// A frame that came after its wait would have been called dropped.
			for si, s := range steps {
				for wi, w := range wires {
					if got[wi][si] == dropped && w.sniff[1-s.from].await(s.frame, 0) {
						t.Errorf("step %d %s: %s: arrived late, after it was called dropped", si+1, s.what, w.name)
					}
				}
			}
			var b strings.Builder
			for si, s := range steps {
				fmt.Fprintf(&b, "%2d %-66s", si+1, s.what)
				for wi, w := range wires {
					fmt.Fprintf(&b, "  %s=%v", w.name, got[wi][si])
				}
				b.WriteByte('\n')
			}
			t.Logf("fates:\n%s", b.String())
		})
	}
}

// spoofWire is a lab with a bridge between its ports, an AF_PACKET socket
// to inject from each host and a catcher on each host.
type spoofWire struct {
	name  string
	lab   *lab.Lab
	inj   [2]int
	sniff [2]*catcher
	ctl   string // a statewire wire's control socket (explain), "" for the kernel's
}

// portRules substitutes l's port names into an iptables-save template.
func portRules(l *lab.Lab, rules string) string {
	return strings.NewReplacer("{PortA}", l.PortA, "{PortB}", l.PortB).Replace(rules)
}

// kernelWire builds a kernel bridge with br_netfilter and loads rules with
// iptables-legacy-restore. The lab's nftables ruleset is an empty table, so
// the iptables rules are the only ones.
func kernelWire(t *testing.T, restore, rules string) *spoofWire {
	t.Helper()
	return kernelWire46(t, restore, rules, "", "")
}

// kernelWire46 is kernelWire with, when rules6 is not empty, an
// ip6tables-save file loaded with restore6 too.
func kernelWire46(t *testing.T, restore, rules, restore6, rules6 string) *spoofWire {
	t.Helper()
	l := lab.NewT(t, lab.Options{Mode: lab.KernelBridgeConntrack, Ruleset: "table inet swnothing {\n}\n"})
	for _, r := range [][2]string{{restore, rules}, {restore6, rules6}} {
		if r[1] == "" {
			continue
		}
		cmd := l.Command(l.BridgeNS, r[0])
		cmd.Stdin = strings.NewReader(portRules(l, r[1]))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", filepath.Base(r[0]), err, out)
		}
	}
	if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping through the kernel bridge")
	}
	return newSpoofWire(t, "kernel(iptables)", l)
}

// kernelNftWire builds a kernel bridge with br_netfilter and the nftables
// ruleset nft.
func kernelNftWire(t *testing.T, nft string) *spoofWire {
	t.Helper()
	l := lab.NewT(t, lab.Options{Mode: lab.KernelBridgeConntrack, Ruleset: nft})
	if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping through the kernel bridge (nft)")
	}
	return newSpoofWire(t, "kernel(nft)", l)
}

// statewireWire runs `statewire run` with rules and cores workers on a
// 2-queue lab and stops it (SIGTERM, exit status 0, no XDP program left)
// at the end of the test. With fast, the XDP fast path is on (GRO on at
// the hosts' veths, which a redirect into them needs) and must have
// forwarded frames by the end.
func statewireWire(t *testing.T, bin, rules string, cores int, fast bool) *spoofWire {
	t.Helper()
	return statewireWire46(t, bin, rules, "", cores, fast)
}

// statewireWire46 is statewireWire with, when rules6 is not empty, rules
// for IPv4 only and rules6 for IPv6 (--rules6).
func statewireWire46(t *testing.T, bin, rules, rules6 string, cores int, fast bool) *spoofWire {
	t.Helper()
	w, _, _ := statewireWireOut(t, bin, rules, rules6, cores, fast)
	return w
}

// statewireWireOut is statewireWire46 that also returns the process's
// stdout (the totals, once stopped) and stderr (its log: LOG lines).
func statewireWireOut(t *testing.T, bin, rules, rules6 string, cores int, fast bool) (*spoofWire, *lab.SyncBuffer, *lab.SyncBuffer) {
	t.Helper()
	l := lab.NewT(t, lab.Options{Queues: 2})
	offload, name := "off", fmt.Sprintf("statewire(cores=%d)", cores)
	if fast {
		e2etest.HostGRO(t, l, true)
		offload, name = "on", fmt.Sprintf("statewire(cores=%d,fast)", cores)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "fw.rules")
	if err := os.WriteFile(file, []byte(portRules(l, rules)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The control socket lets a failing step read the counters (explain).
	ctl := filepath.Join(dir, "ctl.sock")
	args := []string{"run", "--port-a", l.PortA, "--port-b", l.PortB,
		"--cores", fmt.Sprint(cores), "--queues", "2", "--ring-size", "512",
		"--rules", file, "--control-socket", ctl, "--offload", offload}
	if rules6 != "" {
		file6 := filepath.Join(t.TempDir(), "fw6.rules")
		if err := os.WriteFile(file6, []byte(portRules(l, rules6)), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--rules6", file6)
	}
	stdout, stderr := new(lab.SyncBuffer), new(lab.SyncBuffer)
	cmd := l.Command(l.BridgeNS, bin, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("statewire run (%d cores) after SIGTERM: %v, want exit 0\nstderr: %s", cores, err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("statewire run (%d cores) did not exit within 10s of SIGTERM", cores)
		}
		if s := stderr.String(); strings.Contains(s, "frame accounting") {
			t.Errorf("statewire run (%d cores) reported unbalanced accounting: %s", cores, s)
		}
		if err := l.CheckNoXDP(); err != nil {
			t.Errorf("after statewire run (%d cores) exited: %v", cores, err)
		}
		if fast && !fastPathForwarded(stdout.String()) {
			t.Errorf("%s: the fast path forwarded no frame\ntotals: %s", name, stdout.String())
		} else if t.Failed() {
			// The totals name what conntrack -S does not: the
			// frames the kernel dropped before RX (no fill buffer,
			// RX ring full) and those that never left a TX ring.
			t.Logf("%s: totals at exit:\n%s", name, stdout.String())
		}
	})
	// Wait for the datapath before pinging: loading and verifying the
	// fast-path program while other tests do the same took over 10 s
	// on a loaded host (the ping then gave up before the start).
	began := time.Now()
	if !testenv.WaitFor(startWithin, func() bool { return strings.Contains(stderr.String(), " workers, ") }) {
		t.Fatalf("statewire run (%d cores) did not start within %v\nstderr: %s", cores, startWithin, stderr.String())
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Logf("%s took %v to start", name, took)
	}
	// On a loaded machine the start (verifying the XDP programs) can take
	// longer than the ping's window: wait for the start line first, as
	// swProc.started does. The first pings may still come before the XDP
	// programs are attached.
	if !testenv.WaitFor(startWithin, func() bool { return strings.Contains(stderr.String(), " workers, ") }) {
		t.Fatalf("statewire run (%d cores) did not start within %v\nstderr: %s", cores, startWithin, stderr.String())
	}
	if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 10*time.Second); !ok {
		t.Fatalf("no ping through statewire run (%d cores)\nstderr: %s", cores, stderr.String())
	}
	w := newSpoofWire(t, name, l)
	w.ctl = ctl
	return w, stdout, stderr
}

func newSpoofWire(t *testing.T, name string, l *lab.Lab) *spoofWire {
	t.Helper()
	w := &spoofWire{name: name, lab: l}
	for i, h := range []struct{ ns, ifc string }{{l.LeftNS, l.LeftIf}, {l.RightNS, l.RightIf}} {
		var ifindex int
		err := l.Do(h.ns, func() error {
			ifi, err := net.InterfaceByName(h.ifc)
			if err != nil {
				return err
			}
			ifindex = ifi.Index
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			w.inj[i] = fd
			t.Cleanup(func() { unix.Close(fd) })
			return unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex})
		})
		if err != nil {
			t.Fatalf("%s: injector on %s: %v", name, h.ifc, err)
		}
		w.sniff[i] = newCatcher(t, l, h.ns, h.ifc)
	}
	return w
}

// send injects frame from host side (0 left, 1 right).
func (w *spoofWire) send(t *testing.T, side int, frame []byte) {
	t.Helper()
	for try := 0; ; try++ {
		_, err := unix.Write(w.inj[side], frame)
		if err == nil {
			return
		}
		if err != unix.ENOBUFS || try == 100 {
			t.Fatalf("%s: inject: %v", w.name, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// catcher records the frames addressed to spoofDstMAC that reach one
// host's interface. Its reader goroutine is the only one that reads fd;
// await may be called from any goroutine.
type catcher struct {
	fd     int
	mu     sync.Mutex
	got    map[string]int // frame bytes -> times seen and not yet awaited
	notify chan struct{}  // closed and replaced on every arrival
	stop   chan struct{}
	done   chan struct{}
}

func newCatcher(t *testing.T, l *lab.Lab, ns, ifc string) *catcher {
	t.Helper()
	c := &catcher{got: map[string]int{}, notify: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	proto := int(htons(unix.ETH_P_ALL))
	err := l.Do(ns, func() error {
		ifi, err := net.InterfaceByName(ifc)
		if err != nil {
			return err
		}
		if c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(c.fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			unix.Close(c.fd)
			return err
		}
		// The timeout lets the reader see stop.
		unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000})
		if err := unix.Bind(c.fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
			unix.Close(c.fd)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("catcher on %s: %v", ifc, err)
	}
	go c.run()
	t.Cleanup(func() {
		close(c.stop)
		<-c.done
		unix.Close(c.fd)
	})
	return c
}

func (c *catcher) run() {
	defer close(c.done)
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		// Frames to spoofDstMAC, or from a crafted source MAC (02:73:70:...,
		// the broadcast and multicast frames of matches_test.go).
		if err != nil || n < 14 || [6]byte(buf[0:6]) != spoofDstMAC && [3]byte(buf[6:9]) != [3]byte{0x02, 0x73, 0x70} {
			continue
		}
		c.mu.Lock()
		c.got[string(buf[:n])]++
		close(c.notify)
		c.notify = make(chan struct{})
		c.mu.Unlock()
	}
}

// await reports whether frame arrived (byte for byte) within d, and
// consumes that arrival. d == 0 only looks.
func (c *catcher) await(frame []byte, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	k := string(frame)
	for {
		c.mu.Lock()
		if c.got[k] > 0 {
			c.got[k]--
			c.mu.Unlock()
			return true
		}
		ch := c.notify
		c.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

// fastPathForwarded reports whether statewire run's totals (stdout) say
// the XDP fast path forwarded any frame.
func fastPathForwarded(stderr string) bool {
	m := regexp.MustCompile(`fast path \(XDP, not counted above\): A->B (\d+) frames, B->A (\d+) frames`).FindStringSubmatch(stderr)
	return m != nil && (m[1] != "0" || m[2] != "0")
}
