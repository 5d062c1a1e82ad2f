package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/control"
	"github.com/statewire/statewire/control/controltest"
	"github.com/statewire/statewire/statemachine"
)

// TestClientCommands runs the conntrack, sysctl and rules subcommands
// against a control server over a fake bridge.
func TestClientCommands(t *testing.T) {
	f := controltest.New(t, 2)
	f.Add(t, controltest.Conn{Proto: 6, Src: "198.18.0.1", Dst: "198.18.1.1", SPort: 40000, DPort: 80,
		State: 3, Status: statemachine.StatusSeenReply | statemachine.StatusAssured, Timeout: 300 * time.Second})
	f.Add(t, controltest.Conn{Proto: 17, Src: "198.18.0.2", Dst: "198.18.1.3", SPort: 5353, DPort: 53, Timeout: 30 * time.Second})
	sock := filepath.Join(t.TempDir(), "sw.sock")
	s, err := control.Listen(sock, f, control.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Close()
	rules := filepath.Join(t.TempDir(), "fw.rules")
	os.WriteFile(rules, []byte("*filter\n:FORWARD DROP [0:0]\n-A FORWARD -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"), 0o644)
	bad := filepath.Join(t.TempDir(), "bad.rules")
	os.WriteFile(bad, []byte("*filter\n-A FORWARD -j NOWHERE\nCOMMIT\n"), 0o644)

	tests := []struct {
		args       []string
		code       int
		stdout     []string // substrings of stdout
		stderr     string   // substring of stderr
		noStdoutOf string   // must not appear on stdout
	}{
		{[]string{"conntrack", "-L"}, 0, []string{"tcp      6 300 ESTABLISHED src=198.18.0.1", "udp      17 30 src=198.18.0.2"}, "2 flow entries have been shown", ""},
		{[]string{"conntrack", "-L", "-p", "udp"}, 0, []string{"dport=53"}, "1 flow entries", "tcp"},
		{[]string{"conntrack", "-L", "-o", "proc", "--status", "ASSURED"}, 0, []string{"ipv4     2 tcp      6 300 ESTABLISHED"}, "", "udp"},
		{[]string{"conntrack", "-L", "-o", "json", "--dport", "80"}, 0, []string{`"proto":"tcp"`}, "", ""},
		{[]string{"conntrack", "-L", "--state", "ESTABLISHED", "-s", "198.18.0.0/16"}, 0, []string{"dport=80"}, "", "dport=53"},
		{[]string{"conntrack", "-C"}, 0, []string{"2\n"}, "", ""},
		{[]string{"conntrack", "-S"}, 0, []string{"cpu=0", "cpu=1", "insert_failed=0", "early_drop=0", "expect_create=0"}, "", ""},
		{[]string{"conntrack", "--expect-list"}, 0, nil, "0 expectations", ""},
		{[]string{"conntrack", "-L", "-p", "bogus"}, 1, nil, "unknown protocol", ""},
		{[]string{"conntrack", "-L", "-C"}, 2, nil, "exactly one of", ""},
		{[]string{"conntrack", "-D"}, 1, nil, "-D needs a filter", ""},
		{[]string{"sysctl", "net.netfilter.nf_conntrack_udp_timeout"}, 0, []string{"net.netfilter.nf_conntrack_udp_timeout = 30\n"}, "", ""},
		{[]string{"sysctl", "-w", "nf_conntrack_udp_timeout=60"}, 0, []string{"net.netfilter.nf_conntrack_udp_timeout = 60\n"}, "", ""},
		{[]string{"sysctl"}, 0, []string{"net.netfilter.nf_conntrack_tcp_timeout_established = 432000", "nf_conntrack_udp_timeout = 60"}, "", ""},
		{[]string{"sysctl", "nf_conntrack_nope=1"}, 1, nil, "unknown", ""},
		{[]string{"rules", "load", rules}, 0, []string{"loaded"}, "", ""},
		{[]string{"rules", "load", bad}, 1, nil, "bad.rules:2", ""},
		{[]string{"rules", "show"}, 0, []string{"--dport 22"}, "", ""},
		{[]string{"conntrack", "-D", "-p", "udp"}, 0, []string{"dport=53"}, "1 flow entries have been deleted", ""},
		{[]string{"conntrack", "-F"}, 0, nil, "emptied", ""},
		{[]string{"conntrack", "-C"}, 0, []string{"0\n"}, "", ""},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{tc.args[0], "--socket", sock}, tc.args[1:]...)
			code := mainWithArgs(args, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit code got %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			for _, w := range tc.stdout {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout got %q, want it to contain %q", out.String(), w)
				}
			}
			if tc.stderr != "" && !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stderr got %q, want it to contain %q", errb.String(), tc.stderr)
			}
			if tc.noStdoutOf != "" && strings.Contains(out.String(), tc.noStdoutOf) {
				t.Errorf("stdout got %q, want no %q", out.String(), tc.noStdoutOf)
			}
		})
	}
}
