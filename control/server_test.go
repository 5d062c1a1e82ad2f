package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

const (
	established = statemachine.TCPState(3)
	synSent     = statemachine.TCPState(1)
	assured     = statemachine.StatusSeenReply | statemachine.StatusAssured
)

// table3 fills f with three connections: an ASSURED TCP one, an UNREPLIED
// TCP one and a UDP one.
func table3(t *testing.T, f *fakeBridge) {
	f.add(t, conn{Proto: 6, Src: "198.18.0.1", Dst: "198.18.1.1", SPort: 40000, DPort: 80, State: established, Status: assured, Timeout: 300 * time.Second})
	f.add(t, conn{Proto: 6, Src: "198.18.0.2", Dst: "198.18.1.2", SPort: 40001, DPort: 22, State: synSent, Timeout: 120 * time.Second})
	f.add(t, conn{Proto: 17, Src: "198.18.0.1", Dst: "198.18.1.3", SPort: 5353, DPort: 53, Status: statemachine.StatusSeenReply, Timeout: 30 * time.Second})
}

func call(t *testing.T, path string, req Request) ([]string, int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var lines []string
	n, err := Do(ctx, path, req, func(l string) { lines = append(lines, l) })
	return lines, n, err
}

func TestSocketMode(t *testing.T) {
	f := newFake(t, 1)
	path := serve(t, f, Options{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("socket mode: got %o, want 600", got)
	}
	if _, err := Listen(path, f, Options{}); err == nil {
		t.Errorf("second Listen on a live socket: got no error, want one")
	}
}

func TestListFilters(t *testing.T) {
	f := newFake(t, 2)
	table3(t, f)
	// An ASSURED entry in the fast path: --status ASSURED still matches
	// it (the bit is set), OFFLOAD only it.
	f.add(t, conn{Proto: 6, Src: "198.18.0.3", Dst: "198.18.1.4", SPort: 40002, DPort: 443, State: established, Status: assured, Timeout: 300 * time.Second, Offloaded: true})
	path := serve(t, f, Options{})
	tests := []struct {
		name   string
		filter Filter
		want   []string // substrings, one per expected line (any order)
	}{
		{"all", Filter{}, []string{"dport=80", "dport=22", "dport=53", "dport=443"}},
		{"proto tcp", Filter{Proto: 6}, []string{"dport=80", "dport=22", "dport=443"}},
		{"src", Filter{Src: "198.18.0.1"}, []string{"dport=80", "dport=53"}},
		{"src prefix", Filter{Src: "198.18.0.0/24", Proto: 17}, []string{"dport=53"}},
		{"dst", Filter{Dst: "198.18.1.2"}, []string{"dport=22"}},
		{"sport", Filter{SPort: 5353}, []string{"dport=53"}},
		{"dport", Filter{DPort: 80}, []string{"dport=80"}},
		{"state", Filter{State: "syn_sent"}, []string{"dport=22"}},
		{"assured", Filter{Status: "ASSURED"}, []string{"dport=80", "dport=443"}},
		{"unreplied", Filter{Status: "UNREPLIED"}, []string{"dport=22"}},
		{"offload", Filter{Status: "OFFLOAD"}, []string{"dport=443"}},
		{"assured and offload", Filter{Status: "ASSURED,OFFLOAD"}, []string{"dport=443"}},
		{"family 6", Filter{Family: 6}, nil},
		{"no match", Filter{DPort: 8080}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lines, n, err := call(t, path, Request{Op: OpList, Filter: tc.filter})
			if err != nil {
				t.Fatal(err)
			}
			if n != len(tc.want) || len(lines) != len(tc.want) {
				t.Fatalf("got %d lines (count %d): %q, want %d", len(lines), n, lines, len(tc.want))
			}
			for _, w := range tc.want {
				found := 0
				for _, l := range lines {
					if strings.Contains(l, w+" ") {
						found++
					}
				}
				if found != 1 {
					t.Errorf("got %q, want one line with %q", lines, w)
				}
			}
			_, c, err := call(t, path, Request{Op: OpCount, Filter: tc.filter})
			if err != nil || c != len(tc.want) {
				t.Errorf("count: got %d, %v; want %d", c, err, len(tc.want))
			}
		})
	}
}

func TestListFormats(t *testing.T) {
	f := newFake(t, 1)
	f.add(t, conn{Proto: 6, Src: "198.18.0.1", Dst: "198.18.1.1", SPort: 40000, DPort: 80, State: established, Status: assured, Timeout: 300 * time.Second})
	path := serve(t, f, Options{})
	tests := []struct{ format, want string }{
		{"", "tcp      6 300 ESTABLISHED src=198.18.0.1 dst=198.18.1.1 sport=40000 dport=80 src=198.18.1.1 dst=198.18.0.1 sport=80 dport=40000 [ASSURED] mark=0 use=1"},
		{FormatProc, "ipv4     2 tcp      6 300 ESTABLISHED src=198.18.0.1 dst=198.18.1.1 sport=40000 dport=80 src=198.18.1.1 dst=198.18.0.1 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=2"},
		{FormatJSON, `"state":"ESTABLISHED"`},
	}
	// The same entry in the fast path, as the kernel prints an offloaded
	// one: [OFFLOAD] in place of [ASSURED]; /proc without a timeout.
	off := []struct{ format, want string }{
		{"", "tcp      6 300 ESTABLISHED src=198.18.0.1 dst=198.18.1.1 sport=40001 dport=80 src=198.18.1.1 dst=198.18.0.1 sport=80 dport=40001 [OFFLOAD] mark=0 use=1"},
		{FormatProc, "ipv4     2 tcp      6 ESTABLISHED src=198.18.0.1 dst=198.18.1.1 sport=40001 dport=80 src=198.18.1.1 dst=198.18.0.1 sport=80 dport=40001 [OFFLOAD] mark=0 zone=0 use=2"},
		{FormatJSON, `"status":["ASSURED","OFFLOAD"]`},
	}
	for _, tc := range tests {
		t.Run(tc.format, func(t *testing.T) {
			lines, _, err := call(t, path, Request{Op: OpList, Format: tc.format})
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Errorf("got %q, want a line containing %q", lines, tc.want)
			}
		})
	}
	f.add(t, conn{Proto: 6, Src: "198.18.0.1", Dst: "198.18.1.1", SPort: 40001, DPort: 80, State: established, Status: assured, Timeout: 300 * time.Second, Offloaded: true})
	for _, tc := range off {
		t.Run("offloaded "+tc.format, func(t *testing.T) {
			lines, _, err := call(t, path, Request{Op: OpList, Format: tc.format, Filter: Filter{SPort: 40001}})
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Errorf("got %q, want a line containing %q", lines, tc.want)
			}
		})
	}
	if _, _, err := call(t, path, Request{Op: OpList, Format: "xml"}); err == nil || !errors.Is(err, ErrServer) {
		t.Errorf("format xml: got %v, want a server error", err)
	}
}

func TestCountDeleteFlush(t *testing.T) {
	f := newFake(t, 2)
	table3(t, f)
	path := serve(t, f, Options{})
	count := func(fl Filter) int {
		t.Helper()
		_, n, err := call(t, path, Request{Op: OpCount, Filter: fl})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := count(Filter{Proto: 6}); got != 2 {
		t.Errorf("count tcp: got %d, want 2", got)
	}
	if _, _, err := call(t, path, Request{Op: OpDelete}); err == nil {
		t.Errorf("delete without filter: got no error, want one")
	}
	lines, n, err := call(t, path, Request{Op: OpDelete, Filter: Filter{DPort: 22}})
	if err != nil || n != 1 || len(lines) != 1 {
		t.Fatalf("delete dport 22: got %d deleted, %q, %v; want 1", n, lines, err)
	}
	if got := count(Filter{Proto: 6}); got != 1 {
		t.Errorf("count tcp after delete: got %d, want 1", got)
	}
	if _, n, err := call(t, path, Request{Op: OpDelete, Filter: Filter{DPort: 22}}); err != nil || n != 0 {
		t.Errorf("delete again: got %d, %v; want 0, nil", n, err)
	}
	if _, n, err := call(t, path, Request{Op: OpFlush}); err != nil || n != 2 {
		t.Errorf("flush: got %d, %v; want 2, nil", n, err)
	}
	if got := count(Filter{Proto: 17}); got != 0 {
		t.Errorf("count udp after flush: got %d, want 0", got)
	}
}

func TestSysctl(t *testing.T) {
	f := newFake(t, 1)
	path := serve(t, f, Options{})
	tests := []struct {
		name, value string
		want        string // line, or error substring with wantErr
		wantErr     bool
	}{
		{"net.netfilter.nf_conntrack_tcp_timeout_established", "", "net.netfilter.nf_conntrack_tcp_timeout_established = 432000", false},
		{"nf_conntrack_tcp_timeout_established", "600", "net.netfilter.nf_conntrack_tcp_timeout_established = 600", false},
		{"net/netfilter/nf_conntrack_tcp_loose", "0", "net.netfilter.nf_conntrack_tcp_loose = 0", false},
		{"nf_conntrack_checksum", "0", "net.netfilter.nf_conntrack_checksum = 0", false},
		{"nf_conntrack_log_invalid", "", "net.netfilter.nf_conntrack_log_invalid = 0", false},
		{"nf_conntrack_log_invalid", "255", "net.netfilter.nf_conntrack_log_invalid = 255", false},
		{"nf_conntrack_log_invalid", "6", "net.netfilter.nf_conntrack_log_invalid = 6", false},
		{"nf_conntrack_log_invalid", "256", "protocol number", true},
		{"nf_conntrack_max", "10", "fixed at start", true},
		{"nf_conntrack_bogus", "", "unknown sysctl", true},
		{"nf_conntrack_udp_timeout", "abc", "udp_timeout", true},
	}
	for _, tc := range tests {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			op := OpSysctlGet
			if tc.value != "" {
				op = OpSysctlSet
			}
			lines, _, err := call(t, path, Request{Op: op, Name: tc.name, Value: tc.value})
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("got %v, want an error containing %q", err, tc.want)
				}
				return
			}
			if err != nil || len(lines) != 1 || lines[0] != tc.want {
				t.Errorf("got %q, %v; want %q", lines, err, tc.want)
			}
		})
	}
	st := f.Control().Load()
	if st.LogInvalid != 6 {
		t.Errorf("published log_invalid: got %d, want 6", st.LogInvalid)
	}
	if st.Conntrack.Timeouts.TCPEstablished != 600*time.Second || st.Conntrack.Loose || st.VerifyChecksum {
		t.Errorf("published settings: got established %v loose %v checksum %v, want 10m0s false false",
			st.Conntrack.Timeouts.TCPEstablished, st.Conntrack.Loose, st.VerifyChecksum)
	}
	lines, n, err := call(t, path, Request{Op: OpSysctlGet})
	if err != nil || n != len(SysctlNames()) || len(lines) != n {
		t.Errorf("all sysctls: got %d lines, count %d, %v; want %d", len(lines), n, err, len(SysctlNames()))
	}
}

func TestRulesLoad(t *testing.T) {
	f := newFake(t, 1)
	path := serve(t, f, Options{Ports: [2]string{"ethA", "ethB"}})
	dir := t.TempDir()
	good := filepath.Join(dir, "good.rules")
	bad := filepath.Join(dir, "bad.rules")
	os.WriteFile(good, []byte("*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n-A FORWARD -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"), 0o644)
	os.WriteFile(bad, []byte("*filter\n:FORWARD DROP [0:0]\n-A FORWARD -p tcp --bogus 22 -j ACCEPT\nCOMMIT\n"), 0o644)

	want, err := rules.LoadFiles(good, "", [2]string{"ethA", "ethB"})
	if err != nil {
		t.Fatal(err)
	}
	_, n, err := call(t, path, Request{Op: OpRulesLoad, Path: good})
	if err != nil || n != want.NumRules() {
		t.Fatalf("load good: got %d rules, %v; want %d, nil", n, err, want.NumRules())
	}
	before := f.Control().Load().Rules
	_, _, err = call(t, path, Request{Op: OpRulesLoad, Path: bad})
	if err == nil || !strings.Contains(err.Error(), "bad.rules:3") {
		t.Errorf("load bad: got %v, want an error naming bad.rules:3", err)
	}
	if got := f.Control().Load().Rules; got != before {
		t.Errorf("after a bad load the running rules changed (generation %d, want %d)", got.Generation(), before.Generation())
	}
	lines, _, err := call(t, path, Request{Op: OpRulesShow})
	if err != nil || !strings.Contains(strings.Join(lines, "\n"), "--dport 22") {
		t.Errorf("rules show: got %q, %v; want the loaded rules", lines, err)
	}
}

// eventStream starts an -E client and returns a function that waits for
// its next line.
func eventStream(t *testing.T, path string, req Request) func() string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	lines := make(chan string, 64)
	go Do(ctx, path, req, func(l string) { lines <- l })
	return func() string {
		t.Helper()
		select {
		case l := <-lines:
			return l
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5s")
			return ""
		}
	}
}

// waitListening waits until the server at path has n -E clients and has
// subscribed to the workers' events.
func waitListening(t *testing.T, f *fakeBridge, path string, n int) {
	t.Helper()
	s := servers[path]
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		s.hub.mu.Lock()
		got := len(s.hub.clients)
		s.hub.mu.Unlock()
		if got == n && f.Control().Events().Listening() {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("got %d -E clients after 5s, want %d", got, n)
		}
	}
}

// TestEvents drives real frames through the fake's pipelines while -E
// clients listen: each change is one line, in the kernel's format, filters
// apply per client, and expiry and -F are [DESTROY].
func TestEvents(t *testing.T) {
	f := newFake(t, 2)
	path := serve(t, f, Options{})
	tcp := eventStream(t, path, Request{Op: OpEvents, Filter: Filter{Proto: 6}})
	all := eventStream(t, path, Request{Op: OpEvents, Format: FormatJSON})
	waitListening(t, f, path, 2)

	l, r := "198.18.0.1", "198.18.1.1"
	f.Process(pt.UDP4(l, "198.18.1.3", 5353, 53, nil), bridge.PortA)
	f.Process(pt.TCP4(l, r, 40000, 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 65535}), bridge.PortA)
	f.Process(pt.TCP4(r, l, 80, 40000, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 9, Ack: 2, Window: 65535}), bridge.PortB)
	f.Process(pt.TCP4(l, r, 40000, 80, pt.TCPFields{Flags: packet.TCPAck, Seq: 2, Ack: 10, Window: 65535}), bridge.PortA)
	tuple := "src=198.18.0.1 dst=198.18.1.1 sport=40000 dport=80"
	reply := "src=198.18.1.1 dst=198.18.0.1 sport=80 dport=40000"
	for i, want := range []string{
		"    [NEW] tcp      6 120 SYN_SENT " + tuple + " [UNREPLIED] " + reply,
		" [UPDATE] tcp      6 60 SYN_RECV " + tuple + " " + reply,
		" [UPDATE] tcp      6 432000 ESTABLISHED " + tuple + " " + reply + " [ASSURED]",
	} {
		if got := tcp(); got != want {
			t.Errorf("tcp client, event %d:\ngot  %q\nwant %q", i, got, want)
		}
	}
	var kinds []string
	for range 4 {
		var j struct {
			Event, Proto string
		}
		if err := json.Unmarshal([]byte(all()), &j); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, j.Event+" "+j.Proto)
	}
	// Shards are drained one after the other: only the order of one
	// flow's events is defined.
	slices.Sort(kinds)
	if got, want := strings.Join(kinds, ","), "NEW tcp,NEW udp,UPDATE tcp,UPDATE tcp"; got != want {
		t.Errorf("json client: got %s, want %s", got, want)
	}

	f.Advance(31 * time.Second) // the UDP entry expires
	if got := all(); !strings.Contains(got, `"event":"DESTROY"`) || !strings.Contains(got, `"proto":"udp"`) {
		t.Errorf("json client after expiry: got %s, want the UDP DESTROY", got)
	}
	if _, n, err := call(t, path, Request{Op: OpFlush}); err != nil || n != 1 {
		t.Fatalf("flush: got %d, %v; want 1", n, err)
	}
	if got, want := tcp(), "[DESTROY] tcp      6 ESTABLISHED "+tuple+" "+reply+" [ASSURED]"; got != want {
		t.Errorf("tcp client after -F:\ngot  %q\nwant %q", got, want)
	}
}

// TestEventsStopWithClients: the workers write events only while a client
// listens.
func TestEventsStopWithClients(t *testing.T) {
	f := newFake(t, 1)
	path := serve(t, f, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Do(ctx, path, Request{Op: OpEvents}, func(string) {})
		close(done)
	}()
	waitListening(t, f, path, 1)
	cancel()
	<-done
	for end := time.Now().Add(5 * time.Second); f.Control().Events().Listening(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("still subscribed 5s after the last client left")
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's and the test's
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestLogInvalid: `sysctl nf_conntrack_log_invalid` turns the logging of
// INVALID packets of a protocol on, into the server's rate-limited logger.
func TestLogInvalid(t *testing.T) {
	f := newFake(t, 1)
	var buf syncBuffer
	lg, err := NewLogger(&buf, "text", "info", 5, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	path := serve(t, f, Options{Logger: lg})
	bad := pt.TCP4("198.18.0.1", "198.18.0.2", 1000, 80, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPRst, Seq: 1, Window: 65535})
	f.Process(bad, bridge.PortA)
	if strings.Contains(buf.String(), "nf_ct_proto") {
		t.Fatalf("logged with log_invalid off (the default): %s", buf.String())
	}
	for _, tc := range []struct {
		value  string
		logged bool
	}{{"17", false}, {"6", true}} {
		if _, _, err := call(t, path, Request{Op: OpSysctlSet, Name: "net.netfilter.nf_conntrack_log_invalid", Value: tc.value}); err != nil {
			t.Fatal(err)
		}
		f.Process(bad, bridge.PortA)
		got := buf.String()
		want := `msg="nf_ct_proto_6: tcp-invalid-flags" in=A src=198.18.0.1 dst=198.18.0.2 sport=1000 dport=80`
		if strings.Contains(got, want) != tc.logged {
			t.Errorf("log_invalid=%s: got log %q, want logged=%v (%s)", tc.value, got, tc.logged, want)
		}
	}
}

func TestBadRequests(t *testing.T) {
	f := newFake(t, 1)
	path := serve(t, f, Options{})
	for _, req := range []Request{{Op: "nope"}, {Op: OpList, Filter: Filter{State: "FOO"}}, {Op: OpList, Filter: Filter{Src: "1.2.3"}}, {Op: OpList, Filter: Filter{Status: "X"}}} {
		if _, _, err := call(t, path, req); !errors.Is(err, ErrServer) {
			t.Errorf("%+v: got %v, want a server error", req, err)
		}
	}
	if _, err := Do(context.Background(), filepath.Join(t.TempDir(), "none.sock"), Request{Op: OpList}, func(string) {}); err == nil {
		t.Errorf("no socket: got no error, want one")
	}
}

func TestFindSocket(t *testing.T) {
	dir := t.TempDir()
	if _, err := FindSocket(dir); err == nil || !strings.Contains(err.Error(), "no control socket") {
		t.Errorf("empty dir: got %v, want 'no control socket'", err)
	}
	os.WriteFile(filepath.Join(dir, "ethA-ethB.sock"), nil, 0o600)
	if got, err := FindSocket(dir); err != nil || got != filepath.Join(dir, "ethA-ethB.sock") {
		t.Errorf("one socket: got %q, %v; want ethA-ethB.sock", got, err)
	}
	os.WriteFile(filepath.Join(dir, "fw1.sock"), nil, 0o600)
	if _, err := FindSocket(dir); err == nil || !strings.Contains(err.Error(), "ethA-ethB, fw1") {
		t.Errorf("two sockets: got %v, want both names", err)
	}
}

// TestStatsPerWorker: every counter of `conntrack -S` is per worker, the
// pipeline's ones (invalid, ignore, icmp_error, expect_*) included, and
// the total line sums them.
func TestStatsPerWorker(t *testing.T) {
	f := newFake(t, 2)
	f.DPStats.Workers = []bridge.Stats{
		{Invalid: 3, Ignore: 1, ICMPError: 2, ExpectNew: 1},
		{Invalid: 5, ExpectCreate: 4, CsumCompleted: 6},
	}
	path := serve(t, f, Options{})
	f.Process(pt.UDP4("198.18.0.1", "198.18.0.2", 1000, 53, nil), bridge.PortA)
	// The owner publishes the shard counters in ServeRequests.
	var lines []string
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		var err error
		if lines, _, err = call(t, path, Request{Op: OpStats}); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(strings.Join(lines, "\n"), "entries=1 expect_delete") || time.Now().After(end) {
			break
		}
	}
	if len(lines) != 3 {
		t.Fatalf("got %d lines %q, want 3 (two workers, total)", len(lines), lines)
	}
	for i, want := range []string{
		"cpu=0    found=", "invalid=3 ignore=1 ", "icmp_error=2 expect_new=1 expect_create=0 ",
	} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("cpu=0 line (%d): got %q, want it to contain %q", i, lines[0], want)
		}
	}
	for _, want := range []string{"cpu=1    found=", "invalid=5 ignore=0 ", "icmp_error=0 expect_new=0 expect_create=4 "} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("cpu=1 line: got %q, want it to contain %q", lines[1], want)
		}
	}
	for _, want := range []string{"total    found=0 new=1 invalid=8 ignore=1 delete=0 insert=1 ", "icmp_error=2 expect_new=1 expect_create=4 entries=1 expect_delete=0 csum_completed=6"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("total line: got %q, want it to contain %q", lines[2], want)
		}
	}
}

// TestStatsFastPath: with the fast path on, `conntrack -S` ends with its
// counters, summed over workers: one line for the flows, one per port
// (named by Options.Ports) for the frames; with it off, the kernel's
// lines only.
func TestStatsFastPath(t *testing.T) {
	// The fake's DPStats are set before its server starts (the server
	// reads them from its own goroutines).
	stats := func(on bool) []string {
		f := newFake(t, 2)
		f.DPStats.Workers = []bridge.Stats{
			{Fast: bridge.FastPathStats{Offered: 5, Adopted: 2, Refused: 1, TakenBack: [bridge.NumTakeBackReasons]uint64{2, 1, 0}, Activated: 4, Forced: 2, HeldBack: 6, Handover: 30, Cancelled: 1}},
			{Fast: bridge.FastPathStats{Offered: 3, TakenBack: [bridge.NumTakeBackReasons]uint64{0, 0, 1}, HeldBack: 1, Errors: 1}},
		}
		f.DPStats.Fast.On = on
		f.DPStats.Fast.Ports[bridge.PortA] = offload.PortStats{FastPackets: 100, FastBytes: 6400}
		f.DPStats.Fast.Ports[bridge.PortA].Punts[offload.PuntMiss] = 7
		f.DPStats.Fast.Ports[bridge.PortB] = offload.PortStats{FastPackets: 90, FastBytes: 5760}
		f.DPStats.Fast.Ports[bridge.PortB].Punts[offload.PuntNoDev] = 2
		f.DPStats.Fast.Ports[bridge.PortB].RedirectErrors = 3
		path := serve(t, f, Options{Ports: [2]string{"ethA", "ethB"}})
		lines, _, err := call(t, path, Request{Op: OpStats})
		if err != nil {
			t.Fatal(err)
		}
		return lines
	}
	if lines := stats(false); len(lines) != 3 {
		t.Fatalf("fast path off: got %q, want the kernel's three lines only", lines)
	}
	lines := stats(true)
	want := []string{
		"fastpath flows=5 offered=8 adopted=2 refused=1 taken_back_slow_path=2 taken_back_remove=1 taken_back_settings=1 activated=4 forced=2 held_back=7 handover_drops=30 cancelled=1 errors=1",
		"fastpath port=ethA packets=100 bytes=6400 redirect_errors=0 punt_parse=0 punt_miss=7 punt_verdict=0 punt_state=0 punt_window=0 punt_checksum=0 punt_expired=0 punt_revoked=0 punt_no_egress=0 punt_pending=0 punt_busy=0 csum_completed=0",
		"fastpath port=ethB packets=90 bytes=5760 redirect_errors=3 punt_parse=0 punt_miss=0 punt_verdict=0 punt_state=0 punt_window=0 punt_checksum=0 punt_expired=0 punt_revoked=0 punt_no_egress=2 punt_pending=0 punt_busy=0 csum_completed=0",
	}
	if len(lines) != 6 || fmt.Sprint(lines[3:]) != fmt.Sprint(want) {
		t.Errorf("fast path on: got\n%s\nwant the three kernel lines, then\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// TestStatsDrops: once the datapath has dropped frames, `conntrack -S`
// prints one line per ingress port with every drop reason (summed over
// queues, names with '_'), connlimit-full and hand-off-full among them,
// and the metrics carry the same by port, queue and reason.
func TestStatsDrops(t *testing.T) {
	stats := func(drops bool) ([]string, string) {
		f := newFake(t, 2)
		if drops {
			var q0, q1 bridge.QueueStats
			q0.Queue, q1.Queue = 0, 1
			q0.Port[bridge.PortA].Drops[bridge.DropConnlimit] = 4
			q1.Port[bridge.PortA].Drops[bridge.DropConnlimit] = 3
			q1.Port[bridge.PortA].Drops[bridge.DropRule] = 2
			q0.Port[bridge.PortB].HandoffFull = 5
			q1.Port[bridge.PortB].Drops[bridge.DropHashlimit] = 1
			f.DPStats.Queues = []bridge.QueueStats{q0, q1}
		}
		path := serve(t, f, Options{Ports: [2]string{"ethA", "ethB"}})
		lines, _, err := call(t, path, Request{Op: OpStats})
		if err != nil {
			t.Fatal(err)
		}
		m, err := ServeMetrics("127.0.0.1:0", f, [2]string{"ethA", "ethB"})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		resp, err := http.Get("http://" + m.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return lines, string(body)
	}
	if lines, _ := stats(false); len(lines) != 3 {
		t.Fatalf("no drops: got %q, want the kernel's three lines only", lines)
	}
	lines, body := stats(true)
	want := []string{
		"drops port=ethA malformed=0 rule=2 raw_rule=0 table_full=0 helper=0 non_ip=0 oversize=0 tx_ring_full=0 reopen_failed=0 handover=0 reject=0 hashlimit_full=0 connlimit_full=7 handoff_full=0 kernel_rx_ring_full=0 kernel_rx_dropped=0",
		"drops port=ethB malformed=0 rule=0 raw_rule=0 table_full=0 helper=0 non_ip=0 oversize=0 tx_ring_full=0 reopen_failed=0 handover=0 reject=0 hashlimit_full=1 connlimit_full=0 handoff_full=5 kernel_rx_ring_full=0 kernel_rx_dropped=0",
	}
	if len(lines) != 5 || fmt.Sprint(lines[3:]) != fmt.Sprint(want) {
		t.Errorf("drops: got\n%s\nwant the three kernel lines, then\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	for _, w := range []string{
		`statewire_drops_total{port="ethA",queue="0",reason="connlimit-full"} 4`,
		`statewire_drops_total{port="ethA",queue="1",reason="connlimit-full"} 3`,
		`statewire_drops_total{port="ethB",queue="0",reason="handoff-full"} 5`,
	} {
		if !strings.Contains(body, w) {
			t.Errorf("metrics lack %s", w)
		}
	}
}
