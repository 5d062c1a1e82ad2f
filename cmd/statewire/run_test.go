package main

import (
	"strings"
	"testing"
)

// TestRunCommandErrors: every configuration mistake is refused before any
// interface is touched (or, for missing interfaces, before anything is
// attached), with a message naming the problem.
func TestRunCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no ports", []string{"run"}, 2, "--port-a and --port-b are required"},
		{"one port", []string{"run", "--port-a", "eth0"}, 2, "--port-a and --port-b are required"},
		{"stray argument", []string{"run", "--port-a", "a", "--port-b", "b", "extra"}, 2, "required"},
		{"same port", []string{"run", "--port-a", "x", "--port-b", "x"}, 1, "must differ"},
		{"ring size", []string{"run", "--port-a", "a", "--port-b", "b", "--ring-size", "1000"}, 1, "FillSize 1000"},
		{"tx size", []string{"run", "--port-a", "a", "--port-b", "b", "--tx-size", "100"}, 1, "TXSize 100"},
		{"frame size", []string{"run", "--port-a", "a", "--port-b", "b", "--frame-size", "1500"}, 1, "FrameSize 1500"},
		{"frames", []string{"run", "--port-a", "a", "--port-b", "b", "--frames", "4096"}, 1, "frames 4096 per queue"},
		{"queues below cores", []string{"run", "--port-a", "a", "--port-b", "b", "--cores", "2", "--queues", "1"}, 1, "queues 1 fewer than cores 2"},
		{"xdp mode", []string{"run", "--port-a", "a", "--port-b", "b", "--xdp-mode", "fast"}, 1, "--xdp-mode"},
		{"attach", []string{"run", "--port-a", "a", "--port-b", "b", "--attach", "offload"}, 1, "--attach must be native or generic"},
		{"offload", []string{"run", "--port-a", "a", "--port-b", "b", "--offload", "maybe"}, 1, `--offload: offload mode "maybe": must be auto, on or off`},
		{"offload flows", []string{"run", "--port-a", "a", "--port-b", "b", "--offload-flows", "-1"}, 1, "offload flows -1"},
		{"fail mode", []string{"run", "--port-a", "a", "--port-b", "b", "--fail-mode", "bypass"}, 1, "--fail-mode must be closed or open"},
		{"fail-open name", []string{"run", "--port-a", "a", "--port-b", "b", "--fail-mode", "open", "--name", "a/b"}, 1, "cannot name a bpffs directory"},
		{"detach without name", []string{"detach"}, 2, "--name is required"},
		{"detach nothing", []string{"detach", "--name", "sw-nosuch-bridge", "--control-socket", "/nonexistent/sw.sock"}, 1, "nothing to detach"},
		{"cpus not numbers", []string{"run", "--port-a", "a", "--port-b", "b", "--cpus", "0,x"}, 1, `--cpus: "x" is not a CPU number`},
		{"cpus per worker", []string{"run", "--port-a", "a", "--port-b", "b", "--cores", "2", "--queues", "2", "--cpus", "0"}, 1, "1 CPUs listed for 2 workers"},
		{"rt priority", []string{"run", "--port-a", "a", "--port-b", "b", "--rt-priority", "100"}, 1, "real-time priority 100: must be 0 (off) or 1-99"},
		{"rt priority with busy poll", []string{"run", "--port-a", "a", "--port-b", "b", "--rt-priority", "10", "--busy-poll"}, 1, "busy polling with a real-time priority"},
		{"idle spin", []string{"run", "--port-a", "a", "--port-b", "b", "--idle-spin", "2s"}, 1, "idle spin 2s: must be in [0, 1s]"},
		{"non-ip", []string{"run", "--port-a", "a", "--port-b", "b", "--non-ip", "maybe"}, 1, "--non-ip"},
		{"missing interface", []string{"run", "--port-a", "sw-nosuch-a", "--port-b", "sw-nosuch-b"}, 1, `port A "sw-nosuch-a"`},
		{"MTU over frame size", []string{"run", "--port-a", "lo", "--port-b", "sw-nosuch-b", "--frame-size", "2048"}, 1, "MTU 65536 is too large"},
		{"largest MTU that works", []string{"run", "--port-a", "lo", "--port-b", "sw-nosuch-b", "--frame-size", "2048"}, 1, "the largest MTU that works is 32234"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit code got %d, want %d (stderr %q)", code, tc.wantCode, stderr)
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("stderr got %q, want it to contain %q", stderr, tc.wantErr)
			}
		})
	}
}

// TestRunHelpFailMode: run --help documents --fail-mode and its default.
func TestRunHelpFailMode(t *testing.T) {
	code, _, stderr := run(t, "run", "--help")
	if code != 0 {
		t.Errorf("exit code got %d, want 0", code)
	}
	for _, want := range []string{"-fail-mode string", `(default "closed")`, "statewire detach --name"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("run --help lacks %q", want)
		}
	}
}

// TestRunHelp: --help exits 0 and shows the example and the defaults.
func TestRunHelp(t *testing.T) {
	for _, cmd := range []string{"run", "demo"} {
		t.Run(cmd, func(t *testing.T) {
			code, _, stderr := run(t, cmd, "--help")
			if code != 0 {
				t.Errorf("exit code got %d, want 0", code)
			}
			for _, want := range []string{"Example:", "-cores int", "(default 1)", "-ring-size int", "(default 2048)", "-xdp-mode string", `(default "auto")`, "-offload string", "-offload-flows int"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("%s --help lacks %q", cmd, want)
				}
			}
		})
	}
}
