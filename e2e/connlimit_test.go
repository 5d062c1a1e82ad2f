package e2e

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/rules"
)

// connlimitRules: per source (/32 and /24, DROP and REJECT), per
// destination, and --connlimit-upto on every packet of a connection
// (without --syn the replies count under the server's address, as in the
// kernel). The rules on port 7399 see no traffic: they are there for the
// save form, compared with iptables-legacy-save's. The connection on port
// 7305 never reaches a connlimit rule: its verdict is cached and the XDP
// fast path takes it, beside flows that are judged packet by packet.
const connlimitRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 7305 -j ACCEPT
-A FORWARD -p tcp -m tcp --sport 7305 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 7301 --tcp-flags FIN,SYN,RST,ACK SYN -m connlimit --connlimit-above 2 -j DROP
-A FORWARD -p tcp -m tcp --dport 7302 --syn -m connlimit --connlimit-above 2 --connlimit-mask 24 -j REJECT --reject-with tcp-reset
-A FORWARD -p tcp -m tcp --dport 7303 --syn -m connlimit --connlimit-above 1 --connlimit-daddr -j DROP
-A FORWARD -p tcp -m tcp --dport 7304 -m connlimit --connlimit-upto 1 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 7304 -j DROP
-A FORWARD -p tcp -m tcp --dport 7399 -m connlimit ! --connlimit-above 010 --connlimit-mask 0x18 -j DROP
-A FORWARD -p tcp -m tcp --dport 7399 -m connlimit ! --connlimit-upto 3 --connlimit-mask 255.255.0.0 --connlimit-saddr -j DROP
-A FORWARD -p udp -m udp --dport 7399 -m connlimit --connlimit-above 4294967295 --connlimit-mask 0 --connlimit-daddr -j DROP
COMMIT
`

// connlimitRules6 is only loaded for the save form.
const connlimitRules6 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m connlimit --connlimit-above 2 -j DROP
-A FORWARD -p tcp -m connlimit --connlimit-upto 2 --connlimit-mask 64 --connlimit-daddr -j DROP
-A FORWARD -p tcp -m connlimit --connlimit-above 2 --connlimit-mask ffff:ffff:ffff:: -j DROP
-A FORWARD -m connlimit ! --connlimit-upto 1 --connlimit-mask 033 -j DROP
COMMIT
`

// clFrames builds the TCP frames of connlimitSteps: each with its own
// IPv4 ID (the catcher's marker), the spoof lab's MAC addresses, correct
// checksums.
type clFrames struct{ id uint16 }

// tcpConn is one crafted TCP connection: client (left) to server (right).
type tcpConn struct {
	cli, srv   string
	sport, dpt uint16
}

func (b *clFrames) seg(c tcpConn, fromCli bool, flags uint8, seq, ack uint32) []byte {
	b.id++
	var f []byte
	tf := pt.TCPFields{Flags: flags, Seq: seq, Ack: ack, Window: 64240}
	if fromCli {
		f = pt.TCP4(c.cli, c.srv, c.sport, c.dpt, tf)
		copy(f[6:12], spoofLeftMAC[:])
	} else {
		f = pt.TCP4(c.srv, c.cli, c.dpt, c.sport, tf)
		copy(f[6:12], spoofRightMAC[:])
	}
	copy(f[0:6], spoofDstMAC[:])
	binary.BigEndian.PutUint16(f[18:20], b.id)
	return pt.FixChecksums(f)
}

func connlimitSteps() []spoofStep {
	const fw, dr = forwarded, dropped
	b := &clFrames{id: 0x7300}
	var steps []spoofStep
	add := func(what string, fromCli bool, frame []byte, want fate) {
		from := 0
		if !fromCli {
			from = 1
		}
		steps = append(steps, spoofStep{what: what, from: from, frame: frame, leftOnly: want})
	}
	syn := func(what string, c tcpConn, want fate) {
		add(what+": SYN", true, b.seg(c, true, packet.TCPSyn, 1000, 0), want)
	}
	open := func(what string, c tcpConn) {
		syn(what, c, fw)
		add(what+": SYN-ACK", false, b.seg(c, false, packet.TCPSyn|packet.TCPAck, 5000, 1001), fw)
		add(what+": ACK", true, b.seg(c, true, packet.TCPAck, 1001, 5001), fw)
	}
	closeFIN := func(what string, c tcpConn) {
		add(what+": FIN", true, b.seg(c, true, packet.TCPFin|packet.TCPAck, 1001, 5001), fw)
		add(what+": FIN back", false, b.seg(c, false, packet.TCPFin|packet.TCPAck, 5001, 1002), fw)
		add(what+": last ACK (TIME_WAIT)", true, b.seg(c, true, packet.TCPAck, 1002, 5002), fw)
	}
	const cli, cli2, srv = "198.19.1.15", "198.19.1.16", "198.19.9.1"
	// --connlimit-above 2, per source address.
	a := tcpConn{cli, srv, 40001, 7301}
	bb := tcpConn{cli, srv, 40002, 7301}
	c := tcpConn{cli, srv, 40003, 7301}
	d := tcpConn{cli, srv, 40005, 7301}
	open("7301 first connection", a)
	open("7301 second connection", bb)
	syn("7301 third connection, over the limit", c, dr)
	syn("7301 third connection retransmitted", c, dr)
	syn("7301 another source", tcpConn{cli2, srv, 40004, 7301}, fw)
	closeFIN("7301 first connection closes", a)
	open("7301 third connection, a slot freed by TIME_WAIT", c)
	syn("7301 fourth connection, over the limit", d, dr)
	add("7301 second connection reset (CLOSE)", true, b.seg(bb, true, packet.TCPRst|packet.TCPAck, 1001, 5001), fw)
	open("7301 fourth connection, a slot freed by the reset", d)
	syn("7301 fifth connection, over the limit again", tcpConn{cli, srv, 40006, 7301}, dr)
	// --connlimit-mask 24: the /24 counts together; REJECT.
	syn("7302 198.19.1.20", tcpConn{"198.19.1.20", srv, 41001, 7302}, fw)
	syn("7302 198.19.1.21", tcpConn{"198.19.1.21", srv, 41002, 7302}, fw)
	syn("7302 198.19.1.22, third of the /24: rejected", tcpConn{"198.19.1.22", srv, 41003, 7302}, dr)
	syn("7302 198.19.2.22, another /24", tcpConn{"198.19.2.22", srv, 41004, 7302}, fw)
	// --connlimit-daddr: one connection per server.
	syn("7303 to server 1", tcpConn{"198.19.1.30", srv, 42001, 7303}, fw)
	syn("7303 to server 1 from another client: over", tcpConn{"198.19.2.30", srv, 42002, 7303}, dr)
	syn("7303 to server 2", tcpConn{"198.19.2.30", "198.19.9.2", 42003, 7303}, fw)
	// --connlimit-upto 1 on every packet: the SYN-ACK counts under the
	// server's address, the ACK is its connection again.
	open("7304 first connection", tcpConn{"198.19.1.40", srv, 43001, 7304})
	syn("7304 second connection from the client: over", tcpConn{"198.19.1.40", srv, 43002, 7304}, dr)
	syn("7304 another client", tcpConn{"198.19.1.41", "198.19.9.3", 43003, 7304}, fw)
	// A flow no connlimit rule sees: cached, then offered to the fast path.
	e := tcpConn{"198.19.1.50", srv, 44001, 7305}
	open("7305 connection, no connlimit", e)
	for range 4 {
		add("7305 ACK from the client", true, b.seg(e, true, packet.TCPAck, 1001, 5001), fw)
		add("7305 ACK from the server", false, b.seg(e, false, packet.TCPAck, 5001, 1001), fw)
	}
	return steps
}

// TestConnlimitAgainstKernel loads connlimitRules into the kernel bridge
// with br_netfilter (iptables-legacy-restore) and into statewire run (two
// workers on the slow path, where the connections of one source land on
// either worker; one worker with the XDP fast path, which must take the
// flow no connlimit rule sees and leave the others), sends the same crafted
// TCP connections through all three and requires every frame's fate to be
// the kernel's and the step's: N connections pass and the next SYN is
// dropped (or rejected), a connection closed with FINs or reset frees a
// slot, a /24 counts together, --connlimit-daddr counts per server. It
// also compares statewire's save form of the rules with what
// iptables-legacy-save and ip6tables-legacy-save print for them.
func TestConnlimitAgainstKernel(t *testing.T) {
	lab.RequireRoot(t)
	restore, err := exec.LookPath("iptables-legacy-restore")
	restore6, err6 := exec.LookPath("ip6tables-legacy-restore")
	if err != nil || err6 != nil {
		testenv.Unavailable(t, "iptables-legacy-restore or ip6tables-legacy-restore not found (Debian package iptables; scripts/setup.sh installs it)")
	}
	bin := lab.StatewireBinary(t)
	kernel := kernelWire46(t, restore, connlimitRules, restore6, connlimitRules6)
	for _, f := range []struct {
		save, text string
		fam        rules.Family
	}{
		{"iptables-legacy-save", connlimitRules, rules.FamilyIPv4},
		{"ip6tables-legacy-save", connlimitRules6, rules.FamilyIPv6},
	} {
		out, err := kernel.lab.Command(kernel.lab.BridgeNS, f.save, "-t", "filter").Output()
		if err != nil {
			t.Fatalf("%s: %v", f.save, err)
		}
		var l rules.Loader
		if err := l.Load("connlimit.rules", strings.NewReader(f.text), f.fam); err != nil {
			t.Fatal(err)
		}
		rs, err := l.Compile([2]string{"a", "b"})
		if err != nil {
			t.Fatal(err)
		}
		var ours strings.Builder
		if err := rs.Save(&ours, f.fam); err != nil {
			t.Fatal(err)
		}
		if k, s := forwardLines(string(out)), forwardLines(ours.String()); k != s {
			t.Errorf("save form differs:\n%s:\n%s\nstatewire:\n%s", f.save, k, s)
		}
	}
	wires := []*spoofWire{
		kernel,
		statewireWire(t, bin, connlimitRules, 2, false),
		statewireWire(t, bin, connlimitRules, 1, true),
	}
	runFateSteps(t, wires, connlimitSteps(), "kernel vs statewire")
}

// forwardLines returns the -A FORWARD lines of an iptables-save text.
func forwardLines(s string) string {
	var b strings.Builder
	for _, ln := range strings.Split(s, "\n") {
		if strings.HasPrefix(ln, "-A FORWARD ") {
			b.WriteString(ln + "\n")
		}
	}
	return b.String()
}

// connlimitRunRules: at most 3 connections per client to port 7400,
// refused with a reset.
const connlimitRunRules = `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 7400 --tcp-flags FIN,SYN,RST,ACK SYN -m connlimit --connlimit-above 3 --connlimit-mask 32 --connlimit-saddr -j REJECT --reject-with tcp-reset
COMMIT
`

// TestConnlimitRealConnections: real TCP connections from the left host
// through the datapath (two workers) to a server on the right: three
// connect, the fourth is refused at once (the REJECT's reset, no timeout);
// when a client closes one (FINs both ways: TIME_WAIT), a new one
// connects; after conntrack -F (Table.FlushEntries) the open connections
// no longer count, as in the kernel, whose lists lose them when their
// conntrack entries go. Every reset the client saw is a REJECT the bridge
// counted.
func TestConnlimitRealConnections(t *testing.T) {
	r := e2etest.Start(t, e2etest.Options{Cores: 2, Rules: connlimitRunRules})
	addr := net.JoinHostPort(rightIP.String(), "7400")
	ln := listenTCP(t, r.Lab, r.Lab.RightNS, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				// Close when the client does: FINs both ways.
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	refused := 0
	dial := func() net.Conn {
		c, err := dialTCP(r.Lab, r.Lab.LeftNS, addr, 5*time.Second)
		if err != nil {
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial: %v, want success or connection refused (the REJECT's reset)", err)
			}
			refused++
			return nil
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var open []net.Conn
	for i := range 3 {
		c := dial()
		if c == nil {
			t.Fatalf("connection %d refused, want 3 allowed", i+1)
		}
		open = append(open, c)
	}
	if dial() != nil {
		t.Fatal("a fourth connection was allowed, want it reset")
	}
	// The client closes the first: once the last ACK passes, TIME_WAIT
	// frees its slot.
	open[0].Close()
	var c4 net.Conn
	if !testenv.WaitFor(10*time.Second, func() bool { c4 = dial(); return c4 != nil }) {
		t.Fatal("after a connection closed, no new one was allowed within 10 s")
	}
	if dial() != nil {
		t.Fatal("a connection over the limit was allowed after the close")
	}
	n, err := r.DP.Table().FlushEntries(ctx(t, 5*time.Second))
	if err != nil || n == 0 {
		t.Fatalf("FlushEntries: %d, %v", n, err)
	}
	for i := range 3 {
		if dial() == nil {
			t.Fatalf("after conntrack -F: connection %d refused, want 3 allowed (the open ones are no longer tracked)", i+1)
		}
	}
	if dial() != nil {
		t.Fatal("after conntrack -F: a fourth connection was allowed")
	}
	st := r.Stop(t)
	if got := st.Total(bridge.PortA).Drops[bridge.DropReject]; got != uint64(refused) {
		t.Errorf("the bridge counted %d REJECT drops from the client's side, the client saw %d resets", got, refused)
	}
	t.Logf("%d connections refused with a reset, each counted", refused)
}
