package main

import (
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/perf"
)

// TestPerfMTUFlags: --mtu sets the labs' MTU and with it the largest
// frame size; sizes above MTU+18 are refused before any lab is built, with
// the MTU that would take them; jumbo sizes select the packet generator
// for every size of the run.
func TestPerfMTUFlags(t *testing.T) {
	o, _, _, err := perfParse([]string{"--mtu", "9000", "--frame-sizes", "1518,9018", "--flows", "1,1000", "--mode", "flood", "--quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.MTU != 9000 || o.Generator != perf.GenPacket || len(o.FrameSizes) != 2 || o.FrameSizes[1] != 9018 {
		t.Errorf("got MTU %d generator %q sizes %v, want 9000, %q, [1518 9018]", o.MTU, o.Generator, o.FrameSizes, perf.GenPacket)
	}
	o, _, _, err = perfParse([]string{"--quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.MTU != 1500 || o.Generator != perf.GenLive {
		t.Errorf("default: got MTU %d generator %q, want 1500, %q", o.MTU, o.Generator, perf.GenLive)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--frame-sizes", "9018", "--mode", "flood"}, "frame size 9018 exceeds MTU 1500: the largest frame it allows is 1518 bytes"},
		{[]string{"--mtu", "9000", "--frame-sizes", "9100", "--mode", "flood"}, "use MTU 9082 or more"},
		{[]string{"--mtu", "9000", "--frame-sizes", "9018"}, "use mode flood"},
		{[]string{"--mtu", "9000", "--frame-sizes", "9018", "--mode", "flood", "--generator", "live"}, "need the packet generator"},
		{[]string{"--mtu", "100", "--mode", "flood"}, "MTU 100 out of range"},
		{[]string{"--mtu", "jumbo"}, "invalid value"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stderr strings.Builder
			_, _, _, err := perfParse(tc.args, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestPerfLatencyFlags: --latency-loads picks the latency trials' loads
// (and turns them on), --rt-priority and --latency-interval reach the
// options with their defaults, and bad values are refused with the
// flag's name.
func TestPerfLatencyFlags(t *testing.T) {
	o, _, _, err := perfParse([]string{"--quick", "--latency-loads", "0.5", "--flows", "1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Latency || len(o.LatencyLoads) != 1 || o.LatencyLoads[0] != 0.5 {
		t.Errorf("--latency-loads 0.5: got latency %v loads %v, want on, [0.5]", o.Latency, o.LatencyLoads)
	}
	if o.LatencyGenerator != perf.LatencyPaced || o.NoFloor {
		t.Errorf("defaults: got latency generator %q, no-floor %v; want %q, false", o.LatencyGenerator, o.NoFloor, perf.LatencyPaced)
	}
	if o.RTPriority != perf.DefaultRTPriority || o.LatencyInterval != perf.DefaultLatencyInterval {
		t.Errorf("defaults: got rt-priority %d, latency-interval %v; want %d, %v", o.RTPriority, o.LatencyInterval, perf.DefaultRTPriority, perf.DefaultLatencyInterval)
	}
	o, _, _, err = perfParse([]string{"--quick", "--rt-priority", "0", "--latency-interval", "200us"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.RTPriority != 0 || o.LatencyInterval != 200*time.Microsecond || o.Latency {
		t.Errorf("--rt-priority 0 --latency-interval 200us: got %d, %v, latency %v; want 0, 200µs, off (quick)", o.RTPriority, o.LatencyInterval, o.Latency)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--latency-loads", "0"}, "--latency-loads: bad load \"0\""},
		{[]string{"--latency-loads", "0.5,1.5"}, "bad load \"1.5\""},
		{[]string{"--latency-loads", ","}, "no load given"},
		{[]string{"--rt-priority", "100"}, "--rt-priority 100: want 0 (normal policy) or 1-99"},
		{[]string{"--latency-interval", "0s"}, "--latency-interval 0s: want a positive duration"},
		{[]string{"--latency-generator", "burst"}, "--latency-generator \"burst\": want paced, live or packet"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, _, err := perfParse(tc.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestPerfWorkersFlags: --queues, --workers and --gen-cpus reach the
// options; bad values are refused with the flag's name and what to
// change, before any lab is built.
func TestPerfWorkersFlags(t *testing.T) {
	args := []string{"--quick", "--devices", "statewire-offload-off", "--queues", "2", "--workers", "1,2"}
	if runtime.NumCPU() >= 2 {
		args = append(args, "--gen-cpus", "0,1")
	}
	o, _, _, err := perfParse(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Queues != 2 || len(o.Workers) != 2 || o.Workers[0] != 1 || o.Workers[1] != 2 {
		t.Errorf("got queues %d workers %v, want 2, [1 2]", o.Queues, o.Workers)
	}
	if runtime.NumCPU() >= 2 && (len(o.GenCPUs) != 2 || o.GenCPU != 0) {
		t.Errorf("--gen-cpus 0,1: got GenCPUs %v GenCPU %d, want [0 1], 0", o.GenCPUs, o.GenCPU)
	}
	o, _, _, err = perfParse([]string{"--quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Queues != 1 || o.Workers != nil || o.GenCPUs != nil {
		t.Errorf("defaults: got queues %d workers %v gen CPUs %v, want 1, none, none", o.Queues, o.Workers, o.GenCPUs)
	}
	o, _, _, err = perfParse([]string{"--quick", "--gen-cpus", "0"}, io.Discard)
	if err != nil || o.GenCPU != 0 || o.GenCPUs != nil {
		t.Errorf("--gen-cpus 0: got %v, GenCPU %d, GenCPUs %v; want the single CPU as --gen-cpu", err, o.GenCPU, o.GenCPUs)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--queues", "0"}, "--queues 0: want 1..64"},
		{[]string{"--queues", "65"}, "--queues 65"},
		{[]string{"--queues", "two"}, "invalid value"},
		{[]string{"--workers", "2"}, "2 workers with 1 queue(s) per port: want 1..1"},
		{[]string{"--queues", "2", "--workers", "1,0"}, "--workers: bad number \"0\""},
		{[]string{"--queues", "2", "--workers", ","}, "--workers: no worker count given"},
		{[]string{"--queues", "2", "--workers", "1,2", "--devices", "kernel-bridge"}, "needs a statewire device"},
		{[]string{"--queues", "2", "--workers", "1,2", "--statewire-args", "--cores 2"}, "leave them out"},
		{[]string{"--gen-cpus", "x"}, "--gen-cpus: bad CPU \"x\""},
		{[]string{"--gen-cpus", "0,0"}, "generator CPU 0 listed twice"},
		{[]string{"--gen-cpus", "0,4096"}, "generator CPU 4096: this machine has CPUs"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, _, err := perfParse(append([]string{"--quick"}, tc.args...), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
