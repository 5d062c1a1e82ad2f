package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statewire/statewire/control"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	pt "github.com/statewire/statewire/packet/packettest"
)

// ipsetSets is the `ipset save` file both bridges load: the kernel's with
// `ipset restore` in its namespace, statewire's with --ipsets. Every type
// statewire reads, nomatch entries with a longer plain entry inside one,
// and an IPv6 set.
const ipsetSets = `create sw-allow hash:ip family inet hashsize 1024 maxelem 65536
add sw-allow 198.51.100.15
add sw-allow 198.51.100.16
create sw-nets hash:net family inet hashsize 1024 maxelem 65536
add sw-nets 198.51.100.0/24
add sw-nets 198.51.100.32/27 nomatch
add sw-nets 198.51.100.40/29
create sw-svc hash:ip,port family inet hashsize 1024 maxelem 65536
add sw-svc 203.0.113.3,udp:7001
add sw-svc 198.51.100.15,udp:5002
create sw-netport hash:net,port family inet hashsize 1024 maxelem 65536
add sw-netport 203.0.113.0/28,udp:7003
add sw-netport 203.0.113.8/29,udp:7003 nomatch
create sw-ports bitmap:port range 5000-7100
add sw-ports 7004
add sw-ports 5010-5012
create sw-v6 hash:net family inet6 hashsize 1024 maxelem 65536
add sw-v6 2001:db8:1::/48
add sw-v6 2001:db8:1:5::/64 nomatch
create sw-list list:set size 8
add sw-list sw-allow
add sw-list sw-netport
`

// ipsetSetsReloaded is ipsetSets after an operator's change: the left
// host's address left sw-allow, 198.51.100.77 joined it, and the nomatch
// hole in sw-nets is gone.
var ipsetSetsReloaded = strings.NewReplacer(
	"add sw-allow 198.51.100.15\n", "add sw-allow 198.51.100.77\n",
	"add sw-nets 198.51.100.32/27 nomatch\n", "",
).Replace(ipsetSets)

// ipsetRules gates each set rule by its UDP port, as matchesRules does, so
// each step tests one rule.
const ipsetRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 7001 -m set --match-set sw-svc dst,dst -j DROP
-A FORWARD -p udp -m udp --dport 7002 -m set --match-set sw-svc src,src -j DROP
-A FORWARD -p udp -m udp --dport 7003 -m set --match-set sw-netport dst,dst -j DROP
-A FORWARD -p udp -m udp --dport 7004 -m set --match-set sw-ports dst -j DROP
-A FORWARD -p udp -m udp --dport 7005 -m set --match-set sw-nets src -j DROP
-A FORWARD -p udp -m udp --dport 7006 -m set --match-set sw-nets src --return-nomatch -j DROP
-A FORWARD -p udp -m udp --dport 7007 -m set ! --match-set sw-allow src -j DROP
-A FORWARD -p udp -m udp --dport 7008 -m set --match-set sw-list src,dst -j DROP
-A FORWARD -p udp -m udp --dport 7009 -m set --match-set sw-allow src -m set ! --match-set sw-nets dst -j DROP
-A FORWARD -p udp -m udp --dport 7010 -m set --match-set sw-ports src -j DROP
-A FORWARD -p udp -m udp --dport 7011 -m set --match-set sw-allow src,dst -j DROP
-A FORWARD -p udp -m udp --dport 7012 -m set --match-set sw-svc dst -j DROP
-A FORWARD -p udp -m udp --dport 7013 -m set ! --match-set sw-svc dst -j DROP
-A FORWARD -p udp -m udp --dport 7020 -m set ! --match-set sw-allow src -j DROP
COMMIT
`

const ipsetRules6 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 7101 -m set --match-set sw-v6 src -j DROP
-A FORWARD -p udp -m udp --dport 7102 -m set ! --match-set sw-v6 src --return-nomatch -j DROP
-A FORWARD -p udp -m udp --dport 7103 -m set --match-set sw-ports dst -j DROP
COMMIT
`

// ipsetFrame builds one crafted UDP frame as matchSteps does (same MACs,
// default addresses and a unique payload per frame).
func ipsetFrame(f matchFrame, id uint16) spoofStep {
	const L, R = "198.51.100.15", "203.0.113.3"
	if f.src == "" {
		f.src, f.dst = L, R
		if f.v6 {
			f.src, f.dst = "2001:db8:1::15", "2001:db8:2::3"
		}
		if f.from == 1 {
			f.src, f.dst = f.dst, f.src
		}
	}
	if f.sport == 0 {
		f.sport = 5000 + f.dport%1000
	}
	var fr []byte
	payload := make([]byte, 20)
	copy(payload, fmt.Sprintf("s%04x", id))
	if f.v6 {
		fr = pt.UDP6(f.src, f.dst, f.sport, f.dport, payload)
	} else {
		fr = pt.UDP4(f.src, f.dst, f.sport, f.dport, payload)
		binary.BigEndian.PutUint16(fr[18:20], id)
	}
	copy(fr[0:6], spoofDstMAC[:])
	smac := [2][6]byte{spoofLeftMAC, spoofRightMAC}[f.from]
	copy(fr[6:12], smac[:])
	what := fmt.Sprintf("udp %s.%d>%s.%d from %c: %s", f.src, f.sport, f.dst, f.dport, "AB"[f.from], f.what)
	return spoofStep{what: what, from: f.from, frame: pt.FixChecksums(fr), leftOnly: f.want}
}

// ipsetSteps are the frames before (reloaded false) or after the sets are
// reloaded.
func ipsetSteps(reloaded bool, id *uint16) []spoofStep {
	fw, dr := forwarded, dropped
	var s []matchFrame
	if !reloaded {
		s = []matchFrame{
			{dport: 7001, want: dr, what: "hash:ip,port dst,dst: 203.0.113.3,udp:7001"},
			{dport: 7001, src: "198.51.100.15", dst: "203.0.113.4", want: fw, what: "dst,dst: other address"},
			{dport: 7002, want: dr, what: "src,src: 198.51.100.15,udp:5002"},
			{dport: 7002, src: "198.51.100.16", dst: "203.0.113.3", want: fw, what: "src,src: other source"},
			{dport: 7003, want: dr, what: "hash:net,port in 203.0.113.0/28"},
			{dport: 7003, src: "198.51.100.15", dst: "203.0.113.9", want: fw, what: "hash:net,port nomatch /29 inside the /28"},
			{dport: 7003, src: "198.51.100.15", dst: "203.0.113.20", want: fw, what: "hash:net,port outside"},
			{dport: 7004, want: dr, what: "bitmap:port dst 7004"},
			{dport: 7005, want: dr, what: "hash:net src in /24"},
			{dport: 7005, src: "198.51.100.33", dst: "203.0.113.3", want: fw, what: "hash:net nomatch /27"},
			{dport: 7005, src: "198.51.100.41", dst: "203.0.113.3", want: dr, what: "hash:net /29 inside the nomatch /27: longest wins"},
			{dport: 7005, src: "198.18.0.1", dst: "203.0.113.3", want: fw, what: "hash:net outside"},
			{dport: 7006, want: fw, what: "--return-nomatch: plain entry does not match"},
			{dport: 7006, src: "198.51.100.33", dst: "203.0.113.3", want: dr, what: "--return-nomatch: nomatch entry matches"},
			{dport: 7006, src: "198.18.0.1", dst: "203.0.113.3", want: fw, what: "--return-nomatch: not in the set"},
			{dport: 7007, want: fw, what: "! allow src: allowed"},
			{dport: 7007, src: "198.51.100.77", dst: "203.0.113.3", want: dr, what: "! allow src: not allowed"},
			{dport: 7008, want: dr, what: "list:set: first member (hash:ip src)"},
			{dport: 7008, src: "198.51.100.99", dst: "203.0.113.3", want: fw, what: "list:set: no member holds it"},
			{dport: 7009, want: dr, what: "allow src and ! nets dst: dst not in nets"},
			{dport: 7009, src: "198.51.100.15", dst: "198.51.100.200", want: fw, what: "allow src, dst in nets"},
			{dport: 7010, sport: 5011, want: dr, what: "bitmap:port src 5011"},
			{dport: 7010, sport: 5013, want: fw, what: "bitmap:port src 5013"},
			{dport: 7011, want: dr, what: "hash:ip with src,dst: the extra flag is ignored"},
			{dport: 7012, want: fw, what: "hash:ip,port with one flag never matches"},
			{dport: 7013, want: dr, what: "! hash:ip,port with one flag always matches"},
			{v6: true, dport: 7101, want: dr, what: "IPv6 hash:net src in /48"},
			{v6: true, dport: 7101, src: "2001:db8:1:5::1", dst: "2001:db8:2::3", want: fw, what: "IPv6 nomatch /64"},
			{v6: true, dport: 7102, want: dr, what: "IPv6 ! --return-nomatch: plain entry"},
			{v6: true, dport: 7102, src: "2001:db8:1:5::1", dst: "2001:db8:2::3", want: fw, what: "IPv6 ! --return-nomatch: nomatch entry"},
			{v6: true, dport: 7103, want: fw, what: "IPv6 bitmap:port dst 7103 not a member"},
			// The flow that the reload will cut: allowed, repeated so
			// that the fast-path wire takes it.
			{dport: 7020, want: fw, what: "allowed flow"},
			{dport: 7020, want: fw, what: "allowed flow, again"},
			{dport: 7020, want: fw, what: "allowed flow, offered to the fast path"},
			{dport: 7020, want: fw, what: "allowed flow, by the fast path"},
			{dport: 7020, want: fw, what: "allowed flow, by the fast path"},
		}
	} else {
		s = []matchFrame{
			{dport: 7020, want: dr, what: "after the reload: the flow's source left sw-allow"},
			{dport: 7020, want: dr, what: "after the reload: again"},
			{dport: 7007, want: dr, what: "after the reload: ! allow src, 198.51.100.15 no longer allowed"},
			{dport: 7007, src: "198.51.100.77", dst: "203.0.113.3", want: fw, what: "after the reload: 198.51.100.77 allowed"},
			{dport: 7005, src: "198.51.100.33", dst: "203.0.113.3", want: dr, what: "after the reload: the nomatch hole is gone"},
			{dport: 7001, want: dr, what: "after the reload: unchanged set"},
		}
	}
	steps := make([]spoofStep, len(s))
	for i, f := range s {
		*id++
		steps[i] = ipsetFrame(f, *id)
	}
	return steps
}

// ipsetKernelWire is kernelWire46 with the sets restored first (`ipset
// restore` in the bridge's namespace; iptables refuses a rule naming a set
// that does not exist).
func ipsetKernelWire(t *testing.T, ipsetBin, restore, restore6, sets string) *spoofWire {
	t.Helper()
	l := lab.NewT(t, lab.Options{Mode: lab.KernelBridgeConntrack, Ruleset: "table inet swnothing {\n}\n"})
	for _, r := range [][2]string{{ipsetBin + " restore", sets}, {restore, ipsetRules}, {restore6, ipsetRules6}} {
		f := strings.Fields(r[0])
		cmd := l.Command(l.BridgeNS, f[0], f[1:]...)
		cmd.Stdin = strings.NewReader(portRules(l, r[1]))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", r[0], err, out)
		}
	}
	if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
		t.Fatalf("no ping through the kernel bridge")
	}
	return newSpoofWire(t, "kernel(iptables+ipset)", l)
}

// ipsetReloadKernel replaces the kernel's sets with the new file's: every
// set flushed, then restored with -exist (the create lines are unchanged).
func ipsetReloadKernel(t *testing.T, w *spoofWire, ipsetBin, sets string) {
	t.Helper()
	var flush strings.Builder
	for _, line := range strings.Split(sets, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "create" {
			flush.WriteString("flush " + f[1] + "\n")
		}
	}
	cmd := w.lab.Command(w.lab.BridgeNS, ipsetBin, "-exist", "restore")
	cmd.Stdin = strings.NewReader(flush.String() + sets)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ipset restore of the changed sets: %v\n%s", err, out)
	}
}

// ipsetStatewire runs `statewire run` with the rules, --ipsets and a
// control socket (SIGHUP reloads the rules and sets only with one) and
// returns the wire, a function that reloads the sets from text and the
// control socket.
func ipsetStatewire(t *testing.T, bin string, fast bool) (*spoofWire, func(sets string), string) {
	t.Helper()
	l := lab.NewT(t, lab.Options{Queues: 2})
	offload, name := "off", "statewire"
	if fast {
		e2etest.HostGRO(t, l, true)
		offload, name = "on", "statewire(fast)"
	}
	dir := t.TempDir()
	write := func(file, text string) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	setsFile := write("sets", ipsetSets)
	sock := filepath.Join(dir, "sw.sock")
	args := []string{"run", "--port-a", l.PortA, "--port-b", l.PortB,
		"--cores", "1", "--queues", "2", "--ring-size", "512",
		"--rules", write("fw.rules", portRules(l, ipsetRules)), "--rules6", write("fw6.rules", ipsetRules6),
		"--ipsets", setsFile, "--control-socket", sock, "--offload", offload}
	var stdout, stderr lab.SyncBuffer
	cmd := l.Command(l.BridgeNS, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s after SIGTERM: %v, want exit 0\nstderr: %s", name, err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("%s did not exit within 10s of SIGTERM", name)
		}
		if err := l.CheckNoXDP(); err != nil {
			t.Errorf("after %s exited: %v", name, err)
		}
		if fast && !fastPathForwarded(stdout.String()) {
			t.Errorf("%s: the fast path forwarded no frame\ntotals: %s", name, stdout.String())
		}
	})
	if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 10*time.Second); !ok {
		t.Fatalf("no ping through %s\nstderr: %s", name, stderr.String())
	}
	reload := func(sets string) {
		t.Helper()
		write("sets", sets)
		before := strings.Count(stderr.String(), "SIGHUP: rules reloaded")
		cmd.Process.Signal(syscall.SIGHUP)
		if !testenv.WaitFor(10*time.Second, func() bool {
			return strings.Count(stderr.String(), "SIGHUP: rules reloaded") > before
		}) {
			t.Fatalf("%s: no reload within 10s of SIGHUP\nstderr: %s", name, stderr.String())
		}
	}
	return newSpoofWire(t, name, l), reload, sock
}

// offloaded reports whether the connection table behind the control socket
// lists the UDP flow to dport as in the XDP fast path ([OFFLOAD]).
func offloaded(t *testing.T, sock string, dport int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	found := false
	_, err := control.Do(ctx, sock, control.Request{Op: control.OpList}, func(line string) {
		if strings.Contains(line, fmt.Sprintf("dport=%d ", dport)) && strings.Contains(line, "[OFFLOAD]") {
			found = true
		}
	})
	if err != nil {
		t.Fatalf("conntrack -L over %s: %v", sock, err)
	}
	return found
}

// TestIPSetAgainstKernel loads the same `ipset save` file and the same
// iptables-save files into the kernel bridge (ipset restore,
// iptables-legacy-restore, ip6tables-legacy-restore, br_netfilter) and into
// `statewire run --ipsets` (slow path only, and with the XDP fast path),
// sends the same crafted frames through all three and requires every
// frame's fate to be the kernel's and the expected one. Then the sets
// change (kernel: ipset restore; statewire: SIGHUP) without a restart: an
// allowed flow whose source left the allow set, which the fast-path wire
// forwards in XDP by then, is dropped on its next frame by all three.
func TestIPSetAgainstKernel(t *testing.T) {
	lab.RequireRoot(t)
	restore, err := exec.LookPath("iptables-legacy-restore")
	restore6, err6 := exec.LookPath("ip6tables-legacy-restore")
	ipsetBin, err2 := exec.LookPath("ipset")
	if err != nil || err6 != nil || err2 != nil {
		testenv.Unavailable(t, "iptables-legacy-restore, ip6tables-legacy-restore or ipset not found (Debian packages iptables, ipset; scripts/setup.sh installs them)")
	}
	bin := lab.StatewireBinary(t)
	kernel := ipsetKernelWire(t, ipsetBin, restore, restore6, ipsetSets)
	slow, reloadSlow, _ := ipsetStatewire(t, bin, false)
	fast, reloadFast, fastSock := ipsetStatewire(t, bin, true)
	wires := []*spoofWire{kernel, slow, fast}
	var id uint16 = 0x7700
	before := ipsetSteps(false, &id)
	runFateSteps(t, wires, before, "before the reload")
	if !testenv.WaitFor(5*time.Second, func() bool { return offloaded(t, fastSock, 7020) }) {
		t.Errorf("%s: the allowed flow to port 7020 is not in the fast path before the reload", fast.name)
	}
	ipsetReloadKernel(t, kernel, ipsetBin, ipsetSetsReloaded)
	reloadSlow(ipsetSetsReloaded)
	reloadFast(ipsetSetsReloaded)
	runFateSteps(t, wires, ipsetSteps(true, &id), "after the reload")
	if offloaded(t, fastSock, 7020) {
		t.Errorf("%s: the cut flow to port 7020 is still in the fast path after the reload", fast.name)
	}
}
