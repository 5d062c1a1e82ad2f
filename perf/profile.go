package perf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// profile records the device CPU, and the generator CPU (file suffix .gen,
// report lines prefixed "generator cpu"), with `perf record -g` during one
// extra full-rate trial and returns the top of `perf report` for each:
// shares by command and DSO (kernel vs statewire vs the rest), then the
// hottest symbols.
func (r *runner) profile(a *active, size, flows int) ([]string, error) {
	if r.o.DUTCPU < 0 {
		return nil, fmt.Errorf("perf: profiling needs a device CPU (--dut-cpu)")
	}
	if err := os.MkdirAll(r.o.ProfileDir, 0o755); err != nil {
		return nil, err
	}
	// The device CPU, and the generator CPU: port A's receive (the copy
	// of every frame into the veth's page pool, XDP, the copy into an
	// AF_XDP ring, the fast path and XDP_REDIRECT) runs there, next to
	// the generator, and bounds the offered load.
	type rec struct {
		label, file string
		cmd         *exec.Cmd
		stderr      bytes.Buffer
	}
	var recs []*rec
	base := filepath.Join(r.o.ProfileDir, fmt.Sprintf("%s-%d-%d", strings.ReplaceAll(a.d.name, "/", "-"), size, flows))
	type profCPU struct {
		label, suffix string
		cpu           int
	}
	cpus := []profCPU{{"", "", r.o.DUTCPU}}
	if r.o.GenCPU >= 0 && r.o.GenCPU != r.o.DUTCPU {
		cpus = append(cpus, profCPU{"generator cpu ", ".gen", r.o.GenCPU})
	}
	if err := a.d.resume(); err != nil {
		return nil, err
	}
	defer a.d.pause()
	// Warm up, then record while the generator floods.
	if _, _, err := a.g.Send(0, leadIn); err != nil {
		return nil, err
	}
	dur := r.o.Trial
	// cpu-clock: this kind of VM has no hardware PMU. perf record runs
	// until SIGINT; it gets half a second to start (it synthesizes every
	// task's maps first), then the generator floods for one trial.
	for _, c := range cpus {
		x := &rec{label: c.label, file: base + c.suffix + ".perf.data"}
		x.cmd = exec.Command("perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g",
			"-C", strconv.Itoa(c.cpu), "-o", x.file)
		x.cmd.Stderr = &x.stderr
		if err := x.cmd.Start(); err != nil {
			for _, y := range recs {
				_ = y.cmd.Process.Kill()
				_ = y.cmd.Wait()
			}
			return nil, fmt.Errorf("perf: start perf record: %w", err)
		}
		recs = append(recs, x)
	}
	time.Sleep(500 * time.Millisecond)
	_, _, sendErr := a.g.Send(0, dur)
	var recErr error
	for _, x := range recs {
		_ = x.cmd.Process.Signal(os.Interrupt)
	}
	for _, x := range recs {
		// perf writes its file and then may die of the SIGINT it was
		// sent: only other failures count.
		if err := x.cmd.Wait(); err != nil && sendErr == nil && recErr == nil {
			var ee *exec.ExitError
			ws, ok := x.cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !errors.As(err, &ee) || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
				recErr = fmt.Errorf("perf: perf record: %w: %s", err, tail(x.stderr.String(), 400))
			}
		}
	}
	if sendErr != nil {
		return nil, sendErr
	}
	if recErr != nil {
		return nil, recErr
	}
	var out []string
	for _, x := range recs {
		for _, sort := range []string{"comm,dso", "dso,sym"} {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			rep := exec.CommandContext(ctx, "perf", "report", "-i", x.file, "--stdio", "--no-children",
				"-q", "-g", "none", "--percent-limit", "1.5", "--sort", sort)
			b, err := rep.Output()
			cancel()
			if err != nil {
				return out, fmt.Errorf("perf: perf report: %w", err)
			}
			n := 0
			for _, line := range strings.Split(string(b), "\n") {
				line = strings.Join(strings.Fields(line), " ")
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				out = append(out, x.label+sort+": "+line)
				if n++; n == 12 {
					break
				}
			}
		}
	}
	return out, nil
}
