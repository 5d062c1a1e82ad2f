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

// profile records the device CPU with `perf record -g` during one extra
// full-rate trial and returns the top of `perf report`: shares by command
// and DSO (kernel vs statewire vs the rest), then the hottest symbols.
func (r *runner) profile(a *active, size, flows int) ([]string, error) {
	if r.o.DUTCPU < 0 {
		return nil, fmt.Errorf("perf: profiling needs a device CPU (--dut-cpu)")
	}
	if err := os.MkdirAll(r.o.ProfileDir, 0o755); err != nil {
		return nil, err
	}
	file := filepath.Join(r.o.ProfileDir, fmt.Sprintf("%s-%d-%d.perf.data", a.d.name, size, flows))
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
	rec := exec.Command("perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g",
		"-C", strconv.Itoa(r.o.DUTCPU), "-o", file)
	var stderr bytes.Buffer
	rec.Stderr = &stderr
	if err := rec.Start(); err != nil {
		return nil, fmt.Errorf("perf: start perf record: %w", err)
	}
	time.Sleep(500 * time.Millisecond)
	_, _, sendErr := a.g.Send(0, dur)
	_ = rec.Process.Signal(os.Interrupt)
	// perf writes its file and then may die of the SIGINT it was sent:
	// only other failures count.
	if err := rec.Wait(); err != nil && sendErr == nil {
		var ee *exec.ExitError
		ws, ok := rec.ProcessState.Sys().(syscall.WaitStatus)
		if !errors.As(err, &ee) || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			return nil, fmt.Errorf("perf: perf record: %w: %s", err, tail(stderr.String(), 400))
		}
	}
	if sendErr != nil {
		return nil, sendErr
	}
	var out []string
	for _, sort := range []string{"comm,dso", "dso,sym"} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		rep := exec.CommandContext(ctx, "perf", "report", "-i", file, "--stdio", "--no-children",
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
			out = append(out, sort+": "+line)
			if n++; n == 12 {
				break
			}
		}
	}
	return out, nil
}
