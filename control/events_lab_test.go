package control

import (
	"bufio"
	"context"
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

// wantTCPEvents is the event sequence of one TCP connection (handshake,
// data, FIN from the client, ACK, FIN from the server, ACK) as
// `conntrack -E` shows it, reduced by eventShape. Linux (6.x) gives exactly
// this for the conversation of tcpConversation.
var wantTCPEvents = []string{
	"[NEW] SYN_SENT [UNREPLIED]",
	"[UPDATE] SYN_RECV",
	"[UPDATE] ESTABLISHED [ASSURED]",
	"[UPDATE] FIN_WAIT [ASSURED]",
	"[UPDATE] CLOSE_WAIT [ASSURED]",
	"[UPDATE] LAST_ACK [ASSURED]",
	"[UPDATE] TIME_WAIT [ASSURED]",
	"[DESTROY] TIME_WAIT [ASSURED]",
}

var (
	eventKindRe  = regexp.MustCompile(`^\s*\[(NEW|UPDATE|DESTROY)\]`)
	eventStateRe = regexp.MustCompile(`\b(SYN_SENT2?|SYN_RECV|ESTABLISHED|FIN_WAIT|CLOSE_WAIT|LAST_ACK|TIME_WAIT|CLOSE)\b`)
)

// eventShape reduces a `conntrack -E` line to what must match between
// the kernel and us: the kind, the TCP state when printed, the flags.
func eventShape(line string) string {
	m := eventKindRe.FindStringSubmatch(line)
	if m == nil {
		return "?? " + line
	}
	s := "[" + m[1] + "]"
	if st := eventStateRe.FindString(line); st != "" {
		s += " " + st
	}
	for _, f := range []string{"[UNREPLIED]", "[ASSURED]"} {
		if strings.Contains(line, f) {
			s += " " + f
		}
	}
	return s
}

// echoServer listens on the right host at :8080 and echoes; when the client
// half-closes it waits a moment (so its ACK of the FIN travels alone, as
// the CLOSE_WAIT step needs) and closes.
func echoServer(t *testing.T, l *lab.Lab) {
	t.Helper()
	var ln net.Listener
	right := lab.RightIPv4.Addr().String()
	if err := l.Do(l.RightNS, func() (err error) { ln, err = net.Listen("tcp", right+":8080"); return }); err != nil {
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
				io.Copy(c, c)
				time.Sleep(200 * time.Millisecond)
				c.Close()
			}()
		}
	}()
}

// tcpConversation opens one connection from the left host, sends data and
// reads the echo, half-closes, waits for the server's FIN and closes.
func tcpConversation(l *lab.Lab) error {
	var c net.Conn
	right := lab.RightIPv4.Addr().String()
	err := l.Do(l.LeftNS, func() (err error) {
		c, err = net.DialTimeout("tcp", right+":8080", 2*time.Second)
		return
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	var b [4]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, c) // until the server's FIN
	return err
}

// conversationEvents runs tcpConversation through the lab and returns the
// event lines it caused, up to the [DESTROY]. reap, when not nil, runs
// alongside the collection (the kernel needs a dump to reap the expired
// entry). The -E client may subscribe after the conversation began (a
// loaded machine): its events then start mid-connection. A stream that
// delivered anything is subscribed, so one more conversation is then seen
// whole.
func conversationEvents(t *testing.T, l *lab.Lab, lines <-chan string, reap func()) []string {
	t.Helper()
	var got []string
	for attempt := 1; ; attempt++ {
		if err := tcpConversation(l); err != nil {
			t.Fatalf("conversation: %v", err)
		}
		if reap != nil {
			go reap()
		}
		got = collectEventLines(lines, 15*time.Second)
		if len(got) == 0 || strings.HasPrefix(strings.TrimSpace(got[0]), "[NEW]") || attempt == 3 {
			return got
		}
		t.Logf("attempt %d: the client subscribed late (first event %q); once more", attempt, got[0])
	}
}

// checkEvents logs the event lines of who (kernel or statewire) and requires their shapes to be
// wantTCPEvents.
func checkEvents(t *testing.T, who string, got []string) {
	t.Helper()
	var shapes []string
	for _, line := range got {
		t.Logf("%s: %s", who, line)
		shapes = append(shapes, eventShape(line))
	}
	if strings.Join(shapes, "\n") != strings.Join(wantTCPEvents, "\n") {
		t.Errorf("%s conntrack -E:\ngot  %q\nwant %q", who, shapes, wantTCPEvents)
	}
}

// collectEvents reads event lines from r until a [DESTROY] line or the
// deadline, and returns them.
func collectEvents(r io.Reader, deadline time.Duration) []string {
	return collectEventLines(eventLines(r), deadline)
}

// eventLines sends the lines of r on the channel it returns, closed at
// the end of r.
func eventLines(r io.Reader) <-chan string {
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

// collectEventLines is collectEvents on a channel of lines.
func collectEventLines(lines <-chan string, deadline time.Duration) []string {
	var got []string
	end := time.After(deadline)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return got
			}
			got = append(got, l)
			if strings.Contains(l, "[DESTROY]") {
				return got
			}
		case <-end:
			return got
		}
	}
}

// TestLabKernelEvents runs the conversation through a Linux bridge with
// conntrack and records what `conntrack -E` prints: the reference for
// wantTCPEvents. Needs root.
func TestLabKernelEvents(t *testing.T) {
	l := lab.NewT(t, lab.Options{Mode: lab.KernelBridgeConntrack,
		Sysctls: []string{"net.netfilter.nf_conntrack_tcp_timeout_time_wait=2"}})
	echoServer(t, l)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := l.CommandContext(ctx, l.BridgeNS, "conntrack", "-E", "-p", "tcp", "--dport", "8080")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	if !testenv.WaitFor(5*time.Second, func() bool { return netfilterSubscribed(t, l, l.BridgeNS) }) {
		t.Logf("conntrack -E: no netfilter netlink subscription seen in 5s; going on (a late one costs a retry)")
	}
	// The kernel reaps an expired entry in its gc worker, which may sleep
	// for up to a minute on an idle table; a dump reaps the expired
	// entries it meets (ctnetlink_dump_table), so list every half second
	// once the TIME_WAIT timeout (2 s) can have passed, until the events
	// are collected.
	reap := func() {
		for wait := 2500 * time.Millisecond; ; wait = 500 * time.Millisecond {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			l.Run(ctx, l.BridgeNS, "conntrack", "-L")
		}
	}
	got := conversationEvents(t, l, eventLines(out), reap)
	cancel()
	checkEvents(t, "kernel", got)
}

// TestLabEvents runs `statewire run` in a lab and `statewire conntrack -E`
// against it while one TCP connection opens, carries data, closes both
// ways and expires (TIME_WAIT shortened through `statewire sysctl`). The
// events must be those of the kernel (wantTCPEvents, checked against
// Linux by TestLabKernelEvents). Needs root.
func TestLabEvents(t *testing.T) {
	l := lab.NewT(t, lab.Options{})
	bin := lab.StatewireBinary(t)
	sock := filepath.Join(t.TempDir(), "sw.sock")
	_, stderr := startRun(t, l, bin, sock)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("statewire run stderr:\n%s", stderr.String())
		}
	})
	if out, err := exec.Command(bin, "sysctl", "--socket", sock, "net.netfilter.nf_conntrack_tcp_timeout_time_wait=2").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v\n%s", err, out)
	}
	echoServer(t, l)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := exec.CommandContext(ctx, bin, "conntrack", "--socket", sock, "-E", "-p", "tcp", "--dport", "8080")
	out, err := ev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.Start(); err != nil {
		t.Fatal(err)
	}
	defer ev.Wait()
	time.Sleep(200 * time.Millisecond) // the client subscribes
	got := conversationEvents(t, l, eventLines(out), nil)
	cancel()
	checkEvents(t, "statewire", got)
	// The lines themselves are the kernel's: same columns, same order.
	if len(got) == len(wantTCPEvents) {
		left, right := lab.LeftIPv4.Addr().String(), lab.RightIPv4.Addr().String()
		for i, re := range []string{
			`^    \[NEW\] tcp      6 120 SYN_SENT src=` + left + ` dst=` + right + ` sport=\d+ dport=8080 \[UNREPLIED\] src=` + right + ` dst=` + left + ` sport=8080 dport=\d+$`,
			`^ \[UPDATE\] tcp      6 60 SYN_RECV src=`,
			`^ \[UPDATE\] tcp      6 43200\d ESTABLISHED src=.* \[ASSURED\]$`,
			`^ \[UPDATE\] tcp      6 1[12]\d FIN_WAIT src=`,
			`^ \[UPDATE\] tcp      6 [56]\d CLOSE_WAIT src=`,
			`^ \[UPDATE\] tcp      6 [23]\d LAST_ACK src=`,
			`^ \[UPDATE\] tcp      6 [12] TIME_WAIT src=`,
			`^\[DESTROY\] tcp      6 TIME_WAIT src=.* \[ASSURED\]$`,
		} {
			if !regexp.MustCompile(re).MatchString(got[i]) {
				t.Errorf("line %d: got %q, want it to match %s", i, got[i], re)
			}
		}
	}
}

// netfilterSubscribed reports whether a netlink socket in ns listens to
// netfilter multicast groups (/proc/net/netlink: protocol 12,
// NETLINK_NETFILTER, with groups): `conntrack -E` has subscribed.
func netfilterSubscribed(t *testing.T, l *lab.Lab, ns string) bool {
	var b []byte
	err := l.Do(ns, func() (err error) {
		b, err = os.ReadFile("/proc/thread-self/net/netlink")
		return
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, line := range lines[1:] {
		// sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
		f := strings.Fields(line)
		if len(f) >= 4 && f[1] == "12" && strings.Trim(f[3], "0") != "" {
			return true
		}
	}
	return false
}
