package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statewire/statewire/internal/testenv"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = mainWithArgs(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestReplayCommand(t *testing.T) {
	pcap := filepath.Join(testenv.Pcaps(t), "tcp-http-handshake-data-fin.pcap")
	code, out, errs := run(t, "replay", pcap)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(out, "\n")
	if want := "1\tA>B\toriginal\tNEW\tSYN_SENT\tACCEPT\t-"; lines[0] != want {
		t.Errorf("first line: got %q, want %q", lines[0], want)
	}
	if want := "3\tA>B\toriginal\tESTABLISHED\tESTABLISHED\tACCEPT\t-"; lines[2] != want {
		t.Errorf("third line: got %q, want %q", lines[2], want)
	}
	if !strings.Contains(out, "ipv4     2 tcp      6 ") || !strings.Contains(out, " TIME_WAIT src=128.232.110.120 dst=66.35.250.204 sport=34855 dport=80 src=66.35.250.204 dst=128.232.110.120 sport=80 dport=34855 [ASSURED] mark=0 zone=0 use=2") {
		t.Errorf("final table missing the TIME_WAIT entry:\n%s", out)
	}

	code, out, errs = run(t, "replay", "--format=json", "--no-timestamps", pcap)
	if code != 0 {
		t.Fatalf("json: exit %d: %s", code, errs)
	}
	var j struct {
		Packets []struct{ State, Verdict string }
		Table   []struct{ State string }
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if len(j.Packets) != 12 || j.Packets[0].State != "NEW" || len(j.Table) != 1 || j.Table[0].State != "TIME_WAIT" {
		t.Errorf("json: %d packets, table %+v", len(j.Packets), j.Table)
	}
}

func TestReplayRulesAndErrors(t *testing.T) {
	dir := t.TempDir()
	pcap := filepath.Join(testenv.Pcaps(t), "tcp-http-handshake-data-fin.pcap")
	bad := filepath.Join(dir, "bad.rules")
	writeFile(t, bad, "*filter\n:FORWARD DROP [0:0]\n-A FORWARD --frobnicate -j ACCEPT\nCOMMIT\n")
	code, _, errs := run(t, "replay", "--rules", bad, pcap)
	if code != 1 || !strings.Contains(errs, "bad.rules:3") {
		t.Errorf("bad rules: exit %d, stderr %q; want 1 and the file:line", code, errs)
	}
	// A policy that drops everything but NEW from port A: the reply
	// direction is dropped and no entry survives the SYN/ACK drop.
	drop := filepath.Join(dir, "drop.rules")
	writeFile(t, drop, "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m physdev --physdev-in A -m conntrack --ctstate NEW -j ACCEPT\nCOMMIT\n")
	code, out, errs := run(t, "replay", "--rules", drop, pcap)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "2\tB>A\treply\tESTABLISHED\tSYN_RECV\tDROP\trule") {
		t.Errorf("SYN/ACK not dropped by rule:\n%s", out)
	}
	if code, _, _ := run(t, "replay", "--format=xml", pcap); code == 0 {
		t.Errorf("--format=xml accepted")
	}
	if code, _, _ := run(t, "replay", filepath.Join(dir, "missing.pcap")); code != 1 {
		t.Errorf("missing file: exit %d, want 1", code)
	}
	if code, _, _ := run(t, "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}

// TestVersion checks that version writes to the command's stdout (not the
// process's), like every other command.
func TestVersion(t *testing.T) {
	code, out, _ := run(t, "version")
	if want := "statewire " + version + "\n"; code != 0 || out != want {
		t.Errorf("got exit %d, %q; want 0, %q", code, out, want)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRulesCheck: `statewire rules check` reads a file without a bridge:
// exit 0 and the rule count, or 1 and file:line with the word.
func TestRulesCheck(t *testing.T) {
	dir := t.TempDir()
	good, bad := dir+"/good.rules", dir+"/bad.rules"
	writeFile(t, good, "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m iprange --src-range 10.0.0.1-10.0.0.9 -m ttl ! --ttl-eq 1 -j ACCEPT\n-A FORWARD -i eth1 -m length --length 0:1000 -j ACCEPT\nCOMMIT\n")
	writeFile(t, bad, "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m conntrack --ctstate NEW -m string --algo bm --string x -j ACCEPT\nCOMMIT\n")
	tests := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"rules", "check", good}, 0, "good.rules: ok, 2 IPv4 and 1 IPv6 rules", ""},
		{[]string{"rules", "check", "--port-a", "eth1", "--port-b", "eth2", good}, 0, "ok, 2 IPv4 and 1 IPv6 rules", ""},
		{[]string{"rules", "check", "--port-a", "x", "--port-b", "y", good}, 1, "", `good.rules:4: interface "eth1"`},
		{[]string{"rules", "check", bad}, 1, "", `bad.rules:3: match module "string"`},
		{[]string{"rules", "check"}, 2, "", "Usage: statewire rules check"},
	}
	for _, tc := range tests {
		code, out, errs := run(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errs, tc.stderr) {
			t.Errorf("%v: got exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, out, errs, tc.code, tc.stdout, tc.stderr)
		}
	}
}

// TestRulesCheckIPSets: `statewire rules check --ipsets` resolves the set
// names; a missing set, or a bad sets file, is an error naming it.
func TestRulesCheckIPSets(t *testing.T) {
	dir := t.TempDir()
	rulesFile, sets, badSets := dir+"/set.rules", dir+"/sets", dir+"/bad.sets"
	writeFile(t, rulesFile, "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m set --match-set allow src -j ACCEPT\n-A FORWARD -m set ! --match-set nets src,dst -j DROP\nCOMMIT\n")
	writeFile(t, sets, "create allow hash:ip family inet\nadd allow 198.18.0.1\ncreate nets hash:net family inet\nadd nets 198.18.0.0/15\n")
	writeFile(t, badSets, "create allow hash:ip family inet\nadd allow 198.18.0.300\n")
	tests := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"rules", "check", "--ipsets", sets, rulesFile}, 0, "set.rules: ok, 2 IPv4 and 2 IPv6 rules", ""},
		{[]string{"rules", "check", rulesFile}, 1, "", `set.rules:3: set "allow" does not exist: load it with --ipsets FILE`},
		{[]string{"rules", "check", "--ipsets", badSets, rulesFile}, 1, "", `bad.sets:2: bad address "198.18.0.300"`},
	}
	for _, tc := range tests {
		code, out, errs := run(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errs, tc.stderr) {
			t.Errorf("%v: got exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, out, errs, tc.code, tc.stdout, tc.stderr)
		}
	}
}
