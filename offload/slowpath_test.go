package offload_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/offload"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const childEnv = "SWT_OFFLOAD_CHILD"

// TestMain doubles as the "previous run" in TestKilledProcessDoesNotBlock:
// with childEnv set, the binary attaches a program and waits to be killed.
func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		if err := child(v); err != nil {
			fmt.Println("child error:", err)
			os.Exit(1)
		}
		time.Sleep(time.Minute) // killed long before
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func child(spec string) error {
	f := strings.Split(spec, "|")
	if len(f) != 3 {
		return fmt.Errorf("bad child spec %q", spec)
	}
	ns, ifname, how := f[0], f[1], f[2]
	return lab.Do(ns, func() error {
		p, err := offload.Load(offload.Options{SlowOnly: true})
		if err != nil {
			return err
		}
		switch how {
		case "link":
			if err := p.Attach(offload.PortA, ifname, offload.Native); err != nil {
				return err
			}
		case "netlink":
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetXdpFdWithFlags(l, p.EBPF(offload.PortA).FD(), unix.XDP_FLAGS_DRV_MODE); err != nil {
				return err
			}
		}
		fmt.Println("ready")
		return nil
	})
}

// TestMissAction runs the program, slow-only (--offload=off) and not, on a
// frame with an empty XSKMAP: the action must be the requested fallback.
func TestMissAction(t *testing.T) {
	lab.RequireRoot(t)
	frame := make([]byte, 64)
	for _, tc := range []struct {
		pass, slowOnly bool
		want           uint32
	}{{false, true, offload.ActionDrop}, {true, true, offload.ActionPass}, {false, false, offload.ActionDrop}, {true, false, offload.ActionPass}} {
		t.Run(fmt.Sprintf("pass=%v/slow-only=%v", tc.pass, tc.slowOnly), func(t *testing.T) {
			p, err := offload.Load(offload.Options{PassOnMiss: tc.pass, SlowOnly: tc.slowOnly, Queues: 4})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			defer p.Close()
			got, err := p.EBPF(offload.PortA).Run(&ebpf.RunOptions{Data: frame})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got != tc.want {
				t.Fatalf("action got %d, want %d", got, tc.want)
			}
		})
	}
}

func attachedIn(t *testing.T, ns, ifname string) (bool, uint32) {
	t.Helper()
	var att bool
	var id uint32
	err := lab.Do(ns, func() (err error) {
		att, id, err = offload.XDPAttached(ifname)
		return err
	})
	if err != nil {
		t.Fatalf("XDPAttached %s: %v", ifname, err)
	}
	return att, id
}

func TestAttachClose(t *testing.T) {
	l := lab.NewT(t, lab.Options{Bare: true})
	for _, mode := range []offload.Mode{offload.Native, offload.Generic} {
		t.Run(mode.String(), func(t *testing.T) {
			p, err := offload.Load(offload.Options{SlowOnly: true})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			err = lab.Do(l.BridgeNS, func() error { return p.Attach(offload.PortA, l.PortA, mode) })
			if err != nil {
				p.Close()
				t.Fatalf("Attach: %v", err)
			}
			if att, _ := attachedIn(t, l.BridgeNS, l.PortA); !att {
				t.Errorf("after Attach: netlink shows no XDP program on %s", l.PortA)
			}
			if err := p.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if att, id := attachedIn(t, l.BridgeNS, l.PortA); att {
				t.Errorf("after Close: XDP program id %d still on %s, want none", id, l.PortA)
			}
		})
	}
}

// TestKilledProcessDoesNotBlock: a previous run attached a program and was
// killed with SIGKILL. With a bpf_link the program is gone with the process;
// with a netlink attach it stays, and Attach must replace it and log it.
func TestKilledProcessDoesNotBlock(t *testing.T) {
	l := lab.NewT(t, lab.Options{Bare: true})
	for _, tc := range []struct {
		how         string
		wantStale   bool
		wantLogLine bool
	}{
		{"link", false, false},
		{"netlink", true, true},
	} {
		t.Run(tc.how, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+l.BridgeNS+"|"+l.PortA+"|"+tc.how)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatalf("start child: %v", err)
			}
			line, _ := bufio.NewReader(out).ReadString('\n')
			if line != "ready\n" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("child said %q, want ready", line)
			}
			if att, _ := attachedIn(t, l.BridgeNS, l.PortA); !att {
				t.Fatalf("child's program not attached")
			}
			cmd.Process.Kill() // SIGKILL: no cleanup runs
			cmd.Wait()
			// The bpf_link is released when the last fd goes; give the
			// kernel's deferred cleanup time (seconds on a loaded machine).
			var stale bool
			testenv.WaitFor(5*time.Second, func() bool {
				stale, _ = attachedIn(t, l.BridgeNS, l.PortA)
				return !stale || tc.wantStale
			})
			if stale != tc.wantStale {
				t.Fatalf("after kill: program attached got %v, want %v", stale, tc.wantStale)
			}
			var mu sync.Mutex
			var logs []string
			p, err := offload.Load(offload.Options{SlowOnly: true, Logf: func(f string, a ...any) {
				mu.Lock()
				logs = append(logs, fmt.Sprintf(f, a...))
				mu.Unlock()
			}})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			defer p.Close()
			if err := lab.Do(l.BridgeNS, func() error { return p.Attach(offload.PortA, l.PortA, offload.Native) }); err != nil {
				t.Fatalf("Attach after killed run: %v", err)
			}
			if got := len(logs) == 1 && strings.Contains(logs[0], "replaced stale XDP program"); got != tc.wantLogLine {
				t.Errorf("log lines got %q, want a replacement line: %v", logs, tc.wantLogLine)
			}
			if err := p.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if att, id := attachedIn(t, l.BridgeNS, l.PortA); att {
				t.Errorf("after Close: program id %d still attached", id)
			}
		})
	}
}

// TestLiveLinkNotStolen: a program held by a live bpf_link (another running
// instance) must not be removed; Attach fails instead.
func TestLiveLinkNotStolen(t *testing.T) {
	l := lab.NewT(t, lab.Options{Bare: true})
	first, err := offload.Load(offload.Options{SlowOnly: true})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer first.Close()
	second, err := offload.Load(offload.Options{SlowOnly: true})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer second.Close()
	err = lab.Do(l.BridgeNS, func() error {
		if err := first.Attach(offload.PortA, l.PortA, offload.Native); err != nil {
			return err
		}
		if err := second.Attach(offload.PortA, l.PortA, offload.Native); err == nil {
			return fmt.Errorf("second Attach got nil error, want a refusal")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if att, _ := attachedIn(t, l.BridgeNS, l.PortA); !att {
		t.Fatal("first program was removed by the second Attach")
	}
}
