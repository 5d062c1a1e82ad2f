package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/replay"
)

// Labels KernelStates gives a packet besides the five conntrack states.
const (
	Dropped      = "DROPPED"       // sent, never arrived at the far side
	SkipNonIP    = "SKIP:non-ip"   // not IPv4/IPv6: no conntrack state, not sent
	SkipFragment = "SKIP:fragment" // a fragment: sent (the kernel reassembles), not compared
)

// stateDSCP is the DSCP the oracle ruleset writes for each user-land state.
// The values are unusual ones so that an original DSCP left untouched (a
// packet conntrack never saw) is unlikely to be mistaken for a state; such
// a packet is labelled "DSCP<n>".
var stateDSCP = []struct {
	ct    string // nft ct state keyword
	state string // label
	dscp  uint8
}{
	{"new", "NEW", 41},
	{"established", "ESTABLISHED", 42},
	{"related", "RELATED", 43},
	{"invalid", "INVALID", 44},
	{"untracked", "UNTRACKED", 45},
}

// Options configure the kernel oracle.
type Options struct {
	// Helpers attaches the ftp (TCP 21), tftp (UDP 69) and irc (TCP 6667)
	// helpers by rule (nft `ct helper set`), as in kernel-states/helpers.
	Helpers bool
	// Wait is how long to wait for a packet at the far side before calling
	// it DROPPED (default 200ms). Forwarding over veths takes microseconds;
	// the margin is for a loaded machine.
	Wait time.Duration
	// InjectFragments sends IP fragments too (the kernel reassembles them
	// and conntrack sees the datagram), still labelled SKIP:fragment. The
	// committed kernel-states fixtures were made without it: with it, the
	// replies to the three fragmented NFS writes of ipv4-frag-udp-nfs become
	// ESTABLISHED instead of NEW.
	InjectFragments bool
	// FragmentWait is how long to collect output after an injected
	// fragment (default 20ms); an incomplete datagram produces nothing.
	FragmentWait time.Duration
	// HelperPorts attach helpers on further ports by rule (nft `ct helper
	// set`), e.g. ftp on TCP 2121 as in the kernel's nft_conntrack_helper
	// selftest. Independent of Helpers.
	HelperPorts []HelperPort
	// IgnoreVLAN runs statewire's side with flowtable.Config.IgnoreVLAN
	// (--vlan-zones=false), the kernel's keys. The kernel side is the same
	// either way: its bridge (bridge-nf-filter-vlan-tagged=1) tracks tagged
	// frames in zone 0, whatever their tag.
	IgnoreVLAN bool
}

// HelperPort attaches a kernel helper (ftp, tftp, irc) to one L4 port by rule.
type HelperPort struct {
	Helper string // "ftp", "tftp" or "irc"
	Proto  string // "tcp" or "udp"
	Port   uint16
}

func (o *Options) defaults() {
	if o.Wait <= 0 {
		o.Wait = 200 * time.Millisecond
	}
	if o.FragmentWait <= 0 {
		o.FragmentWait = 20 * time.Millisecond
	}
}

// Ruleset returns the nftables ruleset of the oracle: every forwarded
// packet gets the DSCP of its ct state, nothing is dropped by rule.
func Ruleset(helpers bool) string {
	return ruleset(Options{Helpers: helpers})
}

func ruleset(opts Options) string {
	var b bytes.Buffer
	b.WriteString("table inet sworacle {\n")
	for i, hp := range opts.HelperPorts {
		l3 := "inet"
		if hp.Helper == "irc" {
			l3 = "ip"
		}
		fmt.Fprintf(&b, "\tct helper h_x%d { type %q protocol %s; l3proto %s; }\n", i, hp.Helper, hp.Proto, l3)
	}
	if len(opts.HelperPorts) > 0 {
		b.WriteString("\tchain helpers_extra {\n\t\ttype filter hook prerouting priority filter; policy accept;\n")
		for i, hp := range opts.HelperPorts {
			fmt.Fprintf(&b, "\t\t%s dport %d ct helper set \"h_x%d\"\n", hp.Proto, hp.Port, i)
		}
		b.WriteString("\t}\n")
	}
	if opts.Helpers {
		// irc is IPv4-only in the kernel, hence l3proto ip.
		b.WriteString("\tct helper h_ftp { type \"ftp\" protocol tcp; l3proto inet; }\n")
		b.WriteString("\tct helper h_tftp { type \"tftp\" protocol udp; l3proto inet; }\n")
		b.WriteString("\tct helper h_irc { type \"irc\" protocol tcp; l3proto ip; }\n")
		// After conntrack (-200), before the state is read in forward.
		b.WriteString("\tchain helpers {\n\t\ttype filter hook prerouting priority filter; policy accept;\n")
		b.WriteString("\t\ttcp dport 21 ct helper set \"h_ftp\"\n")
		b.WriteString("\t\tudp dport 69 ct helper set \"h_tftp\"\n")
		b.WriteString("\t\tmeta nfproto ipv4 tcp dport 6667 ct helper set \"h_irc\"\n")
		b.WriteString("\t}\n")
	}
	b.WriteString("\tchain mark_state {\n\t\ttype filter hook forward priority filter; policy accept;\n")
	for _, s := range stateDSCP {
		fmt.Fprintf(&b, "\t\tct state %s ip dscp set %d accept\n", s.ct, s.dscp)
		fmt.Fprintf(&b, "\t\tct state %s ip6 dscp set %d accept\n", s.ct, s.dscp)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// Sysctls are the conntrack settings of the oracle (per namespace).
var Sysctls = []string{
	"net.netfilter.nf_conntrack_checksum=0",
	"net.netfilter.nf_conntrack_tcp_loose=1",
	"net.netfilter.nf_conntrack_tcp_be_liberal=0",
}

// MACs written into injected frames: captures carry MACs the bridge would
// refuse (zero, multicast source, source equal to destination in loopback
// captures) or learn on the wrong port; conntrack never reads them.
var (
	leftMAC  = [6]byte{0x02, 0x73, 0x77, 0, 0, 1}
	rightMAC = [6]byte{0x02, 0x73, 0x77, 0, 0, 2}
)

// Oracle is a KernelBridgeConntrack lab with one AF_PACKET socket on each
// host. One goroutine at a time may call States.
type Oracle struct {
	lab  *lab.Lab
	opts Options
	fd   [2]int // AF_PACKET sockets on the left and right host veths
	// sider assigns frames to sides; it lives from one flush to the next.
	sider *sider
	idx   [2]int // their ifindexes
	buf   []byte
}

// NewOracle builds the lab and the sockets. Close it when done.
func NewOracle(ctx context.Context, opts Options) (*Oracle, error) {
	opts.defaults()
	l, err := lab.New(ctx, lab.Options{
		Mode:    lab.KernelBridgeConntrack,
		Bare:    true,
		MTU:     9000,
		Ruleset: ruleset(opts),
		Sysctls: Sysctls,
		// The oracle's bridge must see the captured frames as a wire
		// carries them: no GRO merging injected segments.
		OffloadsOff: true,
	})
	if err != nil {
		return nil, err
	}
	o := &Oracle{lab: l, opts: opts, fd: [2]int{-1, -1}, buf: make([]byte, 1<<16), sider: newSider()}
	for i, h := range []struct{ ns, ifc string }{{l.LeftNS, l.LeftIf}, {l.RightNS, l.RightIf}} {
		err := l.Do(h.ns, func() error {
			ifi, err := net.InterfaceByName(h.ifc)
			if err != nil {
				return err
			}
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
			if err != nil {
				return fmt.Errorf("conformance: AF_PACKET socket: %w", err)
			}
			o.fd[i], o.idx[i] = fd, ifi.Index
			// Our own injections must not come back as captures.
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
				return fmt.Errorf("conformance: PACKET_IGNORE_OUTGOING: %w", err)
			}
			return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
		})
		if err != nil {
			o.Close()
			return nil, err
		}
	}
	return o, nil
}

// Lab returns the oracle's lab (for inspection with conntrack -L etc.).
func (o *Oracle) Lab() *lab.Lab { return o.lab }

// Close closes the sockets and removes the lab.
func (o *Oracle) Close() error {
	for i := range o.fd {
		if o.fd[i] >= 0 {
			unix.Close(o.fd[i])
			o.fd[i] = -1
		}
	}
	return o.lab.Close()
}

// KernelStates returns, for each packet of the capture at pcapPath (pcap or
// pcapng, Ethernet), the label Linux gave it (see States). It builds and
// removes its own lab; to run many captures, use one Oracle.
func KernelStates(ctx context.Context, pcapPath string, opts Options) ([]string, error) {
	o, err := NewOracle(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	return o.States(ctx, pcapPath)
}

// States replays a capture through the kernel bridge, one packet at a time
// from the side it came from, and returns one label per packet: NEW,
// ESTABLISHED, RELATED, INVALID, UNTRACKED; DROPPED if it never arrived;
// SKIP:non-ip and SKIP:fragment for packets not compared (fragments are
// not sent unless Options.InjectFragments); DSCP<n> if it
// arrived without a state mark (conntrack never saw it, e.g. QinQ). The
// conntrack table, expectations and bridge FDB are flushed first.
func (o *Oracle) States(ctx context.Context, pcapPath string) ([]string, error) {
	frames, err := ReadFrames(pcapPath)
	if err != nil {
		return nil, err
	}
	return o.StatesFrames(ctx, frames)
}

// StatesFrames is States for frames already in memory (Ethernet framing,
// padded to wire length): captures read with ReadFrames, or scenarios built
// with packettest. The frames are not modified.
func (o *Oracle) StatesFrames(ctx context.Context, frames [][]byte) ([]string, error) {
	if err := o.flush(ctx); err != nil {
		return nil, err
	}
	return o.inject(ctx, frames)
}

// inject sends frames one at a time and reads their states (see States).
func (o *Oracle) inject(ctx context.Context, frames [][]byte) ([]string, error) {
	sd := o.sider
	out := make([]string, len(frames))
	for i, f := range frames {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k := classify(f)
		if k == kindNonIP {
			out[i] = SkipNonIP
			continue
		}
		if k == kindFragment && !o.opts.InjectFragments {
			out[i] = SkipFragment
			continue
		}
		d := sd.side(f)
		frame := append([]byte(nil), f...)
		fixIPv4Checksum(frame)
		if d == left {
			copy(frame[0:6], rightMAC[:])
			copy(frame[6:12], leftMAC[:])
		} else {
			copy(frame[0:6], leftMAC[:])
			copy(frame[6:12], rightMAC[:])
		}
		far := int(d ^ 1)
		o.drain(far)
		if err := o.send(d, frame); err != nil {
			return nil, fmt.Errorf("conformance: packet %d: send: %w", i+1, err)
		}
		if k == kindFragment {
			o.await(far, o.opts.FragmentWait, nil)
			out[i] = SkipFragment
			continue
		}
		got, err := o.await(far, o.opts.Wait, frame)
		if err != nil {
			return nil, fmt.Errorf("conformance: packet %d: %w", i+1, err)
		}
		out[i] = label(got)
	}
	return out, nil
}

// send injects frame on host d. ENOBUFS (the veth's queue momentarily
// full, e.g. after a burst of flooded multicast) is retried for a while.
func (o *Oracle) send(d side, frame []byte) error {
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: o.idx[d]}
	for try := 0; ; try++ {
		err := unix.Sendto(o.fd[d], frame, 0, sa)
		if err == nil || !errors.Is(err, unix.ENOBUFS) || try == 100 {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// label turns the far-side frame (nil: none) into a label.
func label(got []byte) string {
	if got == nil {
		return Dropped
	}
	v, ok := dscp(got)
	if !ok {
		return "DSCP?"
	}
	for _, s := range stateDSCP {
		if s.dscp == v {
			return s.state
		}
	}
	return "DSCP" + strconv.Itoa(int(v))
}

// await waits up to wait for a frame on host h carrying sent's IP packet
// and returns a copy of it, or nil. With sent == nil it just collects
// (and discards) frames until wait passes.
func (o *Oracle) await(h int, wait time.Duration, sent []byte) ([]byte, error) {
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nil
		}
		ms := int(left / time.Millisecond)
		if ms == 0 {
			ms = 1
		}
		pfd := []unix.PollFd{{Fd: int32(o.fd[h]), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, ms)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("poll: %w", err)
		}
		if n <= 0 {
			continue
		}
		m, _, err := unix.Recvfrom(o.fd[h], o.buf, unix.MSG_DONTWAIT)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, fmt.Errorf("recv: %w", err)
		}
		if sent != nil && sameL3(sent, o.buf[:m]) {
			return append([]byte(nil), o.buf[:m]...), nil
		}
	}
}

// drain discards frames already queued on host h (late output of earlier
// packets, e.g. fragments of a datagram completed later).
func (o *Oracle) drain(h int) {
	for {
		_, _, err := unix.Recvfrom(o.fd[h], o.buf, unix.MSG_DONTWAIT)
		if err != nil {
			return
		}
	}
}

// Flush empties conntrack, expectations and the bridge's learned MACs, as
// States does before a capture.
func (o *Oracle) Flush(ctx context.Context) error { return o.flush(ctx) }

// Continue injects more frames like StatesFrames but without flushing
// first: the table the earlier frames built stays (scenarios that wait
// between packets, e.g. for a timeout to pass). The side of each frame is
// decided afresh, by its MAC addresses first.
func (o *Oracle) Continue(ctx context.Context, frames [][]byte) ([]string, error) {
	return o.inject(ctx, frames)
}

// flush empties conntrack, expectations and the bridge's learned MACs so
// one capture cannot influence the next.
func (o *Oracle) flush(ctx context.Context) error {
	l := o.lab
	for _, args := range [][]string{{"-F"}, {"-F", "expect"}} {
		if _, err := l.Run(ctx, l.BridgeNS, "conntrack", args...); err != nil {
			return err
		}
	}
	if _, err := l.Run(ctx, l.BridgeNS, "ip", "link", "set", l.BridgeIf, "type", "bridge", "fdb_flush"); err != nil {
		return err
	}
	o.drain(0)
	o.drain(1)
	o.sider = newSider()
	return nil
}

// ReadFrames reads every frame of a pcap or pcapng file as an Ethernet
// frame (replay.ReadFile: raw-IP and Linux cooked captures get a
// synthesised Ethernet header with zero MAC addresses; other link types are
// an error wrapping replay.ErrLinkType). Frames captured shorter than their
// wire length (snaplen) are padded with zeros to the wire length, so that
// the kernel sees the lengths the IP header announces.
func ReadFrames(path string) ([][]byte, error) {
	frs, err := replay.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("conformance: %w", err)
	}
	frames := make([][]byte, len(frs))
	for i, f := range frs {
		frames[i] = Padded(f)
	}
	return frames, nil
}

// Padded returns f's bytes padded with zeros to its wire length (a copy
// when padding is needed), the frame both sides of a comparison see.
func Padded(f replay.Frame) []byte {
	if len(f.Data) >= f.WireLen {
		return f.Data
	}
	fr := make([]byte, f.WireLen)
	copy(fr, f.Data)
	return fr
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
