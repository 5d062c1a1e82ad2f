package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/statewire/statewire/e2e/e2etest"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// htons converts a protocol number to network byte order for AF_PACKET.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket opens an AF_PACKET socket bound to ifc in ns, receiving every
// protocol, with PACKET_AUXDATA on so the VLAN tag the kernel strips on
// receive is reported.
func packetSocket(t *testing.T, l *lab.Lab, ns, ifc string) int {
	t.Helper()
	var fd int
	err := l.Do(ns, func() error {
		i, err := net.InterfaceByName(ifc)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: i.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.Timeval{Usec: 100000}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatalf("AF_PACKET socket on %s: %v", ifc, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// taggedFrame builds an 802.1Q-tagged IPv4/UDP frame with valid checksums.
func taggedFrame(t *testing.T, src, dst net.HardwareAddr, vid uint16, sip, dip net.IP, sport uint16, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeDot1Q}
	tag := &layers.Dot1Q{VLANIdentifier: vid, Type: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: sip, DstIP: dip}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: 7000}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, tag, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// received is one captured frame with the tag the kernel reported.
type received struct {
	data   []byte
	vid    uint16
	tagged bool
}

// capture reads frames on fd until one contains marker or d passes.
func capture(fd int, marker []byte, d time.Duration) (received, bool) {
	buf := make([]byte, 4096)
	oob := make([]byte, 256)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
		if err != nil || !bytes.Contains(buf[:n], marker) {
			continue
		}
		r := received{data: append([]byte(nil), buf[:n]...)}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			// struct tpacket_auxdata: status, len, snaplen u32; mac, net,
			// vlan_tci, vlan_tpid u16.
			if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= 20 {
				status := binary.NativeEndian.Uint32(m.Data[0:])
				tci := binary.NativeEndian.Uint16(m.Data[16:])
				r.tagged = status&unix.TP_STATUS_VLAN_VALID != 0
				r.vid = tci & 0x0fff
			}
		}
		// A tag still in the bytes (not stripped) counts too.
		if !r.tagged && n >= 18 && binary.BigEndian.Uint16(buf[12:]) == 0x8100 {
			r.tagged, r.vid = true, binary.BigEndian.Uint16(buf[14:])&0x0fff
		}
		return r, true
	}
	return received{}, false
}

// TestVLANTagged: 802.1Q-tagged frames injected on one host cross the bridge
// both ways and arrive with their tag. The kernel here has no VLAN devices,
// so frames are injected and captured with AF_PACKET.
func TestVLANTagged(t *testing.T) {
	forEachCores(t, func(t *testing.T, cores int) {
		r := e2etest.Start(t, e2etest.Options{Cores: cores})
		l := r.Lab
		leftFD := packetSocket(t, l, l.LeftNS, l.LeftIf)
		rightFD := packetSocket(t, l, l.RightNS, l.RightIf)
		a, b := net.IPv4(198, 18, 1, 1), net.IPv4(198, 18, 1, 2)
		for _, tc := range []struct {
			name         string
			fromFD, toFD int
			src, dst     net.HardwareAddr
			sip, dip     net.IP
			vid          uint16
		}{
			{"left to right", leftFD, rightFD, l.LeftMAC, l.RightMAC, a, b, 100},
			{"right to left", rightFD, leftFD, l.RightMAC, l.LeftMAC, b, a, 100},
			{"left to right other vlan", leftFD, rightFD, l.LeftMAC, l.RightMAC, a, b, 3001},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for i := range 4 {
					marker := []byte(fmt.Sprintf("statewire-vlan-%s-%d-%d", tc.name, tc.vid, i))
					f := taggedFrame(t, tc.src, tc.dst, tc.vid, tc.sip, tc.dip, uint16(40000+i), marker)
					if _, err := unix.Write(tc.fromFD, f); err != nil {
						t.Fatalf("inject: %v", err)
					}
					got, ok := capture(tc.toFD, marker, 2*time.Second)
					if !ok {
						t.Fatalf("frame %d not captured at the far end", i)
					}
					if !got.tagged || got.vid != tc.vid {
						t.Errorf("frame %d: tag got (tagged %v, vid %d), want vid %d", i, got.tagged, got.vid, tc.vid)
					}
				}
			})
		}
		// The tag is the conntrack zone: the same 5-tuple on VLAN 100 and
		// VLAN 3001 are two connections. VLAN 100 has 4 flows each way
		// (different initiators), VLAN 3001 has 4.
		zones := map[uint16]int{}
		c := ctx(t, 5*time.Second)
		if err := r.DP.Table().Snapshot(c, func(es *flowtable.EntrySnapshot) {
			if es.Orig.Proto == 17 {
				zones[es.Orig.VLAN]++
			}
		}); err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		if zones[100] != 8 || zones[3001] != 4 || len(zones) != 2 {
			t.Errorf("UDP entries by VLAN got %v, want 8 in VLAN 100 and 4 in VLAN 3001", zones)
		}
	})
}

// oneWayTagging makes the lab's right host tag what it sends with VLAN
// vid and the left host take tagged frames as untagged: frames from left to
// right cross the bridge untagged, frames from right to left tagged, as on
// a capture point or trunk that tags one direction. Two small TCX programs
// do it (bpf_skb_vlan_push on the right host's egress, bpf_skb_vlan_pop on
// the left host's ingress; this kernel has no act_vlan). The right host
// inserts the tag in the frame (tx-vlan-hw-insert off), so the bridge's
// ports see it in the bytes, not in veth metadata an XDP program cannot
// read. The programs go when the test ends (their links are closed).
func oneWayTagging(t *testing.T, l *lab.Lab, vid uint16) {
	t.Helper()
	if out, err := l.Run(context.Background(), l.RightNS, "ethtool", "-K", l.RightIf, "txvlan", "off"); err != nil {
		t.Fatalf("ethtool -K %s txvlan off: %v %s", l.RightIf, err, out)
	}
	attach := func(ns, ifc string, at ebpf.AttachType, insns asm.Instructions) {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
		if err != nil {
			t.Fatalf("load the VLAN program for %s: %v", ifc, err)
		}
		defer prog.Close() // the link holds it
		var lk link.Link
		if err := l.Do(ns, func() error {
			i, err := net.InterfaceByName(ifc)
			if err != nil {
				return err
			}
			lk, err = link.AttachTCX(link.TCXOptions{Interface: i.Index, Program: prog, Attach: at})
			return err
		}); err != nil {
			t.Fatalf("attach the VLAN program to %s: %v", ifc, err)
		}
		t.Cleanup(func() { lk.Close() })
	}
	const tcxNext = 0 // TCX_NEXT: go on as if no program were attached
	attach(l.RightNS, l.RightIf, ebpf.AttachTCXEgress, asm.Instructions{
		asm.Mov.Imm(asm.R2, int32(htons(0x8100))), // r1 is the skb
		asm.Mov.Imm(asm.R3, int32(vid)),
		asm.FnSkbVlanPush.Call(),
		asm.Mov.Imm(asm.R0, tcxNext),
		asm.Return(),
	})
	attach(l.LeftNS, l.LeftIf, ebpf.AttachTCXIngress, asm.Instructions{
		asm.FnSkbVlanPop.Call(),
		asm.Mov.Imm(asm.R0, tcxNext),
		asm.Return(),
	})
}

// newOnlyFromLeft admits NEW only from port A (the left host): a reply
// that does not find its connection is dropped.
const newOnlyFromLeft = `*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A FORWARD -m physdev --physdev-in {PortA} -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

// TestVLANZonesRunOneWay runs `statewire run` (two workers, so the
// workers' steering must bring both directions to one owner) with the
// fast path on in a
// lab whose right host tags what it sends (VLAN 100) while the left host
// sends untagged, with rules that admit NEW only from the left.
// --vlan-zones=false: ping and a 10 MB TCP transfer pass intact (SHA-256
// compared), the table holds the transfer as one ESTABLISHED connection
// listed without a zone (conntrack -L) and with zone=0 (proc format), and
// the XDP fast path forwarded frames of both directions, the tagged ones
// included (the program builds its key without the VLAN too). The default
// (--vlan-zones=true): the tagged replies are another connection, in zone
// 100, and the rules drop them: the connection never opens.
func TestVLANZonesRunOneWay(t *testing.T) {
	lab.RequireRoot(t)
	bin := lab.StatewireBinary(t)
	for _, tc := range []struct {
		name  string
		zones string
	}{{"vlan-zones=false", "false"}, {"vlan-zones=true", "true"}} {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.NewT(t, lab.Options{Queues: 2})
			e2etest.HostGRO(t, l, true) // XDP redirects into a veth need NAPI on its peer
			oneWayTagging(t, l, 100)
			dir := t.TempDir()
			rulesFile := filepath.Join(dir, "fw.rules")
			text := strings.NewReplacer("{PortA}", l.PortA).Replace(newOnlyFromLeft)
			if err := os.WriteFile(rulesFile, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, "ctl.sock")
			var stderr lab.SyncBuffer
			cmd := l.Command(l.BridgeNS, bin, "run", "--port-a", l.PortA, "--port-b", l.PortB, "--cores", "2", "--queues", "2",
				"--ring-size", "1024", "--rules", rulesFile, "--offload", "on", "--vlan-zones="+tc.zones,
				"--control-socket", sock)
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			stopped := false
			stop := func() {
				if stopped {
					return
				}
				stopped = true
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("statewire run after SIGTERM: %v, want exit 0\nstderr: %s", err, stderr.String())
					}
				case <-time.After(15 * time.Second):
					cmd.Process.Kill()
					<-done
					t.Errorf("statewire run did not stop within 15 s of SIGTERM")
				}
			}
			defer stop()
			if !testenv.WaitFor(startWithin, func() bool { return strings.Contains(stderr.String(), " workers, ") }) {
				t.Fatalf("statewire run did not start within %v; stderr:\n%s", startWithin, stderr.String())
			}
			ctl := func(args ...string) string {
				out, err := l.Command(l.BridgeNS, bin, append([]string{"conntrack", "--socket", sock}, args...)...).CombinedOutput()
				if err != nil {
					t.Fatalf("statewire conntrack %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				return string(out)
			}
			addr := net.JoinHostPort(rightIP.String(), "5001")

			if tc.zones == "true" {
				if ok, out := l.Ping(l.LeftNS, rightIP.String(), 2); ok {
					t.Errorf("ping with --vlan-zones=true got %q, want no reply (the tagged reply is NEW in zone 100 and dropped)", out)
				}
				var ln net.Listener
				if err := l.Do(l.RightNS, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				if c, err := dialTCP(l, l.LeftNS, addr, 2*time.Second); err == nil {
					c.Close()
					t.Errorf("TCP connection with --vlan-zones=true opened, want it refused by the rules (SYN/ACK in zone 100 dropped)")
				}
				// The left host's SYNs are NEW in zone 0; the right host's
				// SYN/ACKs, tagged, find no connection in zone 100 and are
				// INVALID: the connection stays unreplied.
				list := ctl("-L", "-p", "tcp")
				if !strings.Contains(list, "SYN_SENT") || strings.Contains(list, "ESTABLISHED") {
					t.Errorf("conntrack -L -p tcp with --vlan-zones=true:\n%s\nwant the SYN's entry unreplied in SYN_SENT", list)
				}
				stop()
				return
			}

			if _, ok := l.PingWithin(l.LeftNS, rightIP.String(), 5*time.Second); !ok {
				t.Fatalf("ping with --vlan-zones=false failed\nstderr: %s", stderr.String())
			}
			if ok, out := l.Ping(l.RightNS, leftIP.String(), 1); ok {
				t.Errorf("ping from the right got %q, want it dropped (NEW only from the left)", out)
			}
			data := make([]byte, 10<<20)
			rand.Read(data)
			c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			tr, err := l.TransferTCP(c, l.LeftNS, l.RightNS, addr, data)
			if err != nil {
				t.Fatalf("TCP transfer with --vlan-zones=false: %v\nstderr: %s", err, stderr.String())
			}
			if tr.Got != tr.Sent || tr.N != int64(len(data)) {
				t.Fatalf("TCP transfer got %d bytes sha256 %x, want %d bytes sha256 %x", tr.N, tr.Got[:8], len(data), tr.Sent[:8])
			}
			t.Logf("10 MB left to right, replies tagged, in %v", tr.Took.Round(time.Millisecond))

			tcp := ctl("-L", "-p", "tcp")
			if n := strings.Count(tcp, "dport=5001 "); n != 1 || strings.Contains(tcp, "zone=") {
				t.Errorf("conntrack -L -p tcp:\n%s\nwant the transfer once (one connection for both directions) and no zone", tcp)
			}
			proc := ctl("-L", "-p", "tcp", "-o", "proc")
			if !strings.Contains(proc, " zone=0 ") || strings.Contains(proc, "zone=100") {
				t.Errorf("conntrack -L -o proc:\n%s\nwant zone=0, as the kernel without zones", proc)
			}
			// The fast path forwarded frames of both directions: port A's
			// untagged data and port B's tagged ACKs. Without the VLAN
			// left out of its key, port B's would all be misses.
			stats := ctl("-S")
			for _, port := range []string{l.PortA, l.PortB} {
				m := regexp.MustCompile(`fastpath port=` + regexp.QuoteMeta(port) + ` packets=(\d+)`).FindStringSubmatch(stats)
				if m == nil {
					t.Errorf("conntrack -S:\n%s\nwant a fastpath line for %s", stats, port)
					continue
				}
				if n, _ := strconv.Atoi(m[1]); n < 20 {
					t.Errorf("fast path frames in at %s: got %d, want at least 20 of the transfer's\nconntrack -S:\n%s", port, n, stats)
				} else {
					t.Logf("fast path frames in at %s: %d", port, n)
				}
			}
			stop()
		})
	}
}
