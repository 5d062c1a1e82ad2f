package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns add` bind-mounts namespaces.
const netnsDir = "/run/netns"

// Do runs f on a fresh OS thread that has joined namespace ns and returns
// f's error. Sockets f creates stay in ns for their whole life, so a
// listener or AF_PACKET socket opened in f may be used from any goroutine
// afterwards. Goroutines started by f do NOT run in ns. The thread is never
// handed back to the Go scheduler (the goroutine exits locked, so the
// runtime ends the thread): no other goroutine can ever run in ns by
// accident, even if f panics.
func (l *Lab) Do(ns string, f func() error) error {
	return Do(ns, f)
}

// Do is Lab.Do for any namespace made by `ip netns add`.
func Do(ns string, f func() error) error {
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread on purpose: see the doc comment.
		var r result
		defer func() {
			if p := recover(); p != nil {
				r.panic = p
			}
			done <- r
		}()
		fd, err := unix.Open(filepath.Join(netnsDir, ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.err = fmt.Errorf("lab: open netns %s: %w", ns, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			r.err = fmt.Errorf("lab: setns %s: %w", ns, err)
			return
		}
		r.err = f()
	}()
	r := <-done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// Command returns a command that runs name with args inside namespace ns
// (through `ip netns exec`, which also gives it the namespace's /sys).
func (l *Lab) Command(ns, name string, args ...string) *exec.Cmd {
	return l.CommandContext(context.Background(), ns, name, args...)
}

// CommandContext is Command with a context that kills the command.
func (l *Lab) CommandContext(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Run runs name with args inside ns and returns its stdout; the error
// carries the command line and its stderr.
func (l *Lab) Run(ctx context.Context, ns, name string, args ...string) (string, error) {
	cmd := l.CommandContext(ctx, ns, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := runCmd(cmd)
	return out.String(), err
}

// run runs a command and wraps a failure with its stderr.
func run(ctx context.Context, name string, args ...string) error {
	return runCmd(exec.CommandContext(ctx, name, args...))
}

func runCmd(cmd *exec.Cmd) error {
	var stderr bytes.Buffer
	if cmd.Stderr == nil {
		cmd.Stderr = &stderr
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("lab: %s: %w: %s", strings.Join(cmd.Args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return nil
}

// sysctl sets key=value pairs inside ns.
func sysctl(ctx context.Context, ns string, kv ...string) error {
	if len(kv) == 0 {
		return nil
	}
	args := append([]string{"netns", "exec", ns, "sysctl", "-q", "-w"}, kv...)
	return run(ctx, "ip", args...)
}

// offloadsOff turns off the veth offloads that produce frames no wire
// carries (Options.OffloadsOff, see the package doc).
func offloadsOff(ctx context.Context, ns, ifc string) error {
	return run(ctx, "ip", "netns", "exec", ns, "ethtool", "-K", ifc,
		"tx", "off", "rx", "off", "gso", "off", "tso", "off", "gro", "off")
}

func nsExists(ns string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, ns))
	return err == nil
}
