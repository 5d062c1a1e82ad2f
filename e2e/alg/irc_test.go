package alg

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dccSize is the file the DCC test sends.
const dccSize = 2 << 20

// startNgircd runs ngircd in the right namespace on 198.18.0.2:6667, in the
// foreground, without DNS or ident lookups (nothing answers them in the lab).
func (r *rig) startNgircd(t *testing.T) {
	t.Helper()
	dir := publicDir(t)
	if err := os.Chmod(dir, 0o777); err != nil { // the pid file, written as irc
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "ngircd.conf")
	text := fmt.Sprintf(`[Global]
	Name = irc.lab.test
	Info = statewire lab
	Listen = %s
	Ports = 6667
	MotdPhrase = statewire lab
	PidFile = %s
	ServerUID = irc
	ServerGID = irc
[Limits]
	MaxConnectionsIP = 0
	PingTimeout = 120
[Options]
	DNS = no
	Ident = no
	PAM = no
	ConnectIPv6 = no
`, rightIP, filepath.Join(dir, "ngircd.pid"))
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	r.daemon(t, r.l.RightNS, "ngircd", "-n", "-f", conf)
	r.waitListen(t, r.l.RightNS, rightIP.String()+":6667")
}

// ircClient is a minimal IRC user on a raw TCP connection.
type ircClient struct {
	t    *testing.T
	nick string
	c    net.Conn
	br   *bufio.Reader
}

// ircLogin connects from ns to the server and registers nick, waiting for
// the welcome (001).
func (r *rig) ircLogin(t *testing.T, ns, nick string) *ircClient {
	t.Helper()
	var c net.Conn
	err := r.l.Do(ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", rightIP.String()+":6667", 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("%s: connect to ngircd: %v", nick, err)
	}
	t.Cleanup(func() { c.Close() })
	ic := &ircClient{t: t, nick: nick, c: c, br: bufio.NewReader(c)}
	ic.send(fmt.Sprintf("NICK %s\r\nUSER %s 0 * :%s\r\n", nick, nick, nick))
	ic.waitLine(func(l string) bool { return strings.Contains(l, " 001 ") })
	return ic
}

// send writes s in one write, so that a single PRIVMSG is a segment of its
// own: the kernel's irc helper looks for "PRIVMSG " only at the start of a
// segment's payload.
func (ic *ircClient) send(s string) {
	ic.t.Helper()
	ic.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(ic.c, s); err != nil {
		ic.t.Fatalf("%s: write: %v", ic.nick, err)
	}
}

// waitLine reads lines (answering PINGs) until match accepts one, within
// 10 seconds, and returns it.
func (ic *ircClient) waitLine(match func(string) bool) string {
	ic.t.Helper()
	ic.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := ic.br.ReadString('\n')
		if err != nil {
			ic.t.Fatalf("%s: read: %v", ic.nick, err)
		}
		line = strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(line, "PING ") {
			ic.send("PONG " + line[5:] + "\r\n")
			continue
		}
		if match(line) {
			return line
		}
	}
}

// TestIRCDCC negotiates a DCC SEND through ngircd. ngircd and the receiver
// (bob) are on the right; the sender (alice) is on the left and opened her IRC
// connection through statewire, so her PRIVMSG with the offer travels in the
// original direction of a connection the irc helper watches (the kernel
// helper parses only that direction). The helper expects a connection from
// anywhere to alice's announced address and port; bob opens it from the
// right, which the rules admit only as RELATED. Without the helper bob's
// connection is dropped.
func TestIRCDCC(t *testing.T) {
	for _, helpers := range []bool{true, false} {
		t.Run(map[bool]string{true: "helper", false: "nohelper"}[helpers], func(t *testing.T) {
			runDCC(t, newRig(t, helpers), helpers)
		})
	}
}

// runDCC starts ngircd on the right, logs bob in from the right and alice
// from the left, and has bob fetch alice's DCC SEND offer.
func runDCC(t *testing.T, r *rig, helpers bool) {
	r.startNgircd(t)
	bob := r.ircLogin(t, r.l.RightNS, "bob")
	alice := r.ircLogin(t, r.l.LeftNS, "alice")

	// Alice's DCC listener, on the left.
	ln := func() net.Listener {
		var ln net.Listener
		if err := r.l.Do(r.l.LeftNS, func() (err error) {
			ln, err = net.Listen("tcp4", leftIP.String()+":0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}()
	data := make([]byte, dccSize)
	rand.Read(data)
	want := sha256.Sum256(data)
	sent := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sent <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		_, err = c.Write(data)
		sent <- err
	}()

	ip4 := leftIP.As4()
	port := ln.Addr().(*net.TCPAddr).Port
	before := r.counts()
	alice.send(fmt.Sprintf("PRIVMSG bob :\x01DCC SEND file.bin %d %d %d\x01\r\n",
		binary.BigEndian.Uint32(ip4[:]), port, dccSize))
	offer := bob.waitLine(func(l string) bool { return strings.Contains(l, "\x01DCC SEND ") })
	addr, size, err := parseDCCSend(offer)
	if err != nil {
		t.Fatalf("bob got %q: %v", offer, err)
	}
	if want := fmt.Sprintf("%s:%d", leftIP, port); addr != want || size != dccSize {
		t.Fatalf("bob got offer of %d bytes at %s, want %d bytes at %s", size, addr, dccSize, want)
	}

	timeout := 10 * time.Second
	if !helpers {
		timeout = 3 * time.Second
	}
	start := time.Now()
	var c net.Conn
	err = r.l.Do(r.l.RightNS, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	if !helpers {
		if err == nil {
			c.Close()
			t.Fatalf("bob's DCC connection without the helper succeeded; want it dropped")
		}
		t.Logf("without the helper bob's DCC connection failed after %v as it should: %v", time.Since(start), err)
		r.checkNoRelated(t, before)
		return
	}
	if err != nil {
		t.Fatalf("bob's DCC connection with the helper: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	h := sha256.New()
	n, err := io.CopyN(h, c, int64(size))
	if err != nil {
		t.Fatalf("DCC receive: %d bytes, %v", n, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("DCC data sha256 %x, want %x", got, want)
	}
	if err := <-sent; err != nil {
		t.Fatalf("DCC send: %v", err)
	}
	t.Logf("%d bytes over DCC in %v", n, time.Since(start))
	r.checkRelated(t, before)
}

// parseDCCSend reads "... :\x01DCC SEND name ip port size\x01" and returns
// "a.b.c.d:port" and the size.
func parseDCCSend(line string) (string, int, error) {
	i := strings.Index(line, "\x01DCC SEND ")
	f := strings.Fields(strings.Trim(line[i:], "\x01"))
	if len(f) != 6 {
		return "", 0, fmt.Errorf("want DCC SEND name ip port size, got %d fields", len(f))
	}
	ip, err1 := strconv.ParseUint(f[3], 10, 32)
	port, err2 := strconv.ParseUint(f[4], 10, 16)
	size, err3 := strconv.Atoi(f[5])
	if err1 != nil || err2 != nil || err3 != nil {
		return "", 0, fmt.Errorf("bad numbers: %v %v %v", err1, err2, err3)
	}
	a := net.IPv4(byte(ip>>24), byte(ip>>16), byte(ip>>8), byte(ip))
	return fmt.Sprintf("%s:%d", a, port), size, nil
}
