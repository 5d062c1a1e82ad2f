package xdpprog

import (
	"errors"
	"fmt"
	"github.com/statewire/statewire/offload"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Mode is the XDP attach mode.
type Mode int

const (
	// Native runs the program in the driver (veth supports it).
	Native Mode = iota
	// Generic runs it on the skb path (any device, slower).
	Generic
)

// String returns "native" or "generic".
func (m Mode) String() string {
	if m == Generic {
		return "generic"
	}
	return "native"
}

// XDP actions, from enum xdp_action.
const (
	actionDrop = 1 // XDP_DROP
	actionPass = 2 // XDP_PASS
)

// offRxQueueIndex is offsetof(struct xdp_md, rx_queue_index).
const offRxQueueIndex = 16

// DefaultQueues is the XSKMAP size when Options.Queues is 0.
const DefaultQueues = 64

// Options configure Load.
type Options struct {
	// Queues is the number of XSKMAP entries: the highest queue id that
	// can be registered, plus one (default DefaultQueues).
	Queues int
	// PassOnMiss hands frames of queues without a registered socket to
	// the kernel stack (XDP_PASS) instead of dropping them (XDP_DROP).
	PassOnMiss bool
	// Logf receives one line per notable event (a stale program
	// replaced). nil discards them.
	Logf func(format string, args ...any)
}

// Program is the loaded program with its XSKMAP and the links attaching it.
type Program struct {
	prog  *ebpf.Program
	xsks  *ebpf.Map
	opts  Options
	links []attached
}

type attached struct {
	ifname string
	l      link.Link
}

// Instructions returns the program: r2 = ctx->rx_queue_index;
// return bpf_redirect_map(xsks, r2, fallback). The map pointer is filled in
// by Load (reference "xsks").
func Instructions(passOnMiss bool) asm.Instructions {
	fallback := int64(actionDrop)
	if passOnMiss {
		fallback = actionPass
	}
	return asm.Instructions{
		// r2 = ctx->rx_queue_index (r1 is the xdp_md context)
		asm.LoadMem(asm.R2, asm.R1, offRxQueueIndex, asm.Word),
		// r1 = &xsks
		asm.LoadMapPtr(asm.R1, 0).WithReference("xsks"),
		// r3 = flags: on a miss the kernel returns these low bits
		asm.Mov.Imm(asm.R3, int32(fallback)),
		asm.FnRedirectMap.Call(),
		// return r0 (XDP_REDIRECT, or the fallback action)
		asm.Return(),
	}
}

// Load creates the XSKMAP and loads the program. Nothing is attached yet.
func Load(opts Options) (*Program, error) {
	if opts.Queues == 0 {
		opts.Queues = DefaultQueues
	}
	if opts.Queues < 0 || opts.Queues > 1<<16 {
		return nil, fmt.Errorf("xdpprog: Queues %d out of range 1..65536", opts.Queues)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "sw_xsks",
		Type:       ebpf.XSKMap,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: uint32(opts.Queues),
	})
	if err != nil {
		return nil, fmt.Errorf("xdpprog: create XSKMAP: %w", err)
	}
	insns := Instructions(opts.PassOnMiss)
	for i := range insns {
		if insns[i].Reference() == "xsks" {
			if err := insns[i].AssociateMap(m); err != nil {
				m.Close()
				return nil, fmt.Errorf("xdpprog: associate map: %w", err)
			}
		}
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "sw_xsk_redir",
		Type: ebpf.XDP,
		// Frags: the program only redirects, so it takes multi-buffer
		// frames as they are, and veth refuses a program without it
		// above an MTU of about 3500 (ERANGE).
		Flags:        unix.BPF_F_XDP_HAS_FRAGS,
		Instructions: insns,
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("xdpprog: load program: %w", err)
	}
	return &Program{prog: prog, xsks: m, opts: opts}, nil
}

// EBPF returns the loaded program (for test runs and introspection).
func (p *Program) EBPF() *ebpf.Program { return p.prog }

// XSKMap returns the queue -> AF_XDP socket map.
func (p *Program) XSKMap() *ebpf.Map { return p.xsks }

// Register points queue at the AF_XDP socket fd: frames received on that
// queue of the attached interface go to that socket.
func (p *Program) Register(queue, fd int) error {
	if err := p.xsks.Put(uint32(queue), uint32(fd)); err != nil {
		return fmt.Errorf("xdpprog: register queue %d fd %d: %w", queue, fd, err)
	}
	return nil
}

// Unregister removes the socket of queue; its frames get the fallback.
func (p *Program) Unregister(queue int) error {
	if err := p.xsks.Delete(uint32(queue)); err != nil {
		return fmt.Errorf("xdpprog: unregister queue %d: %w", queue, err)
	}
	return nil
}

func (p *Program) logf(format string, args ...any) {
	if p.opts.Logf != nil {
		p.opts.Logf(format, args...)
	}
}

// Attach attaches the program to ifname with a bpf_link, in the network
// namespace of the calling thread. If a program attached through netlink
// (not tied to any process) is in the way, it is detached, the replacement
// is logged, and the attach is retried. A program held by another live
// process's bpf_link is not touched: Attach fails with an error naming it.
func (p *Program) Attach(ifname string, mode Mode) error {
	l, err := offload.AttachLink(p.prog, ifname, mode == Generic, func(f string, a ...any) { p.logf("xdpprog: "+f, a...) })
	if err != nil {
		return fmt.Errorf("xdpprog: %w", err)
	}
	p.links = append(p.links, attached{ifname: ifname, l: l})
	return nil
}

// XDPAttached reports whether netlink shows an XDP program on ifname (in
// the calling thread's namespace), and its id.
func XDPAttached(ifname string) (bool, uint32, error) { return offload.XDPAttached(ifname) }

// Close detaches the program from every interface and closes it and its
// map. The sockets registered in the map are not closed.
func (p *Program) Close() error {
	var errs []error
	for _, a := range p.links {
		if err := a.l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("xdpprog: detach %s: %w", a.ifname, err))
		}
	}
	p.links = nil
	if p.prog != nil {
		errs = append(errs, p.prog.Close())
		p.prog = nil
	}
	if p.xsks != nil {
		errs = append(errs, p.xsks.Close())
		p.xsks = nil
	}
	return errors.Join(errs...)
}
