package perf

import (
	"errors"
	"fmt"
	"math"
	"net"
	"time"

	"github.com/asavie/xdp"
	"github.com/statewire/statewire/lab"
	"golang.org/x/sys/unix"
)

// xskEnd is one endpoint of the CPS mode: an AF_XDP socket of
// github.com/asavie/xdp (independent of statewire's ring package) in copy
// mode on a host's veth, with asavie's own XDP program sending every frame
// of queue 0 to it. The trial loop's goroutine owns it.
type xskEnd struct {
	ns, ifname string
	ifindex    int
	sock       *xdp.Socket
	prog       *xdp.Program
	// txq is the FIFO of frames to send, as connection index<<3 | step;
	// head and n index it.
	txq     []uint64
	head, n int
}

// xskOpts size the endpoint: 64 B frames never need more than a page, and
// the rings are deep enough for a burst of a millisecond at 1 Mpps.
var xskOpts = xdp.SocketOptions{
	NumFrames:              8192,
	FrameSize:              2048,
	FillRingNumDescs:       2048,
	CompletionRingNumDescs: 2048,
	RxRingNumDescs:         2048,
	TxRingNumDescs:         2048,
}

// cpsTxQueue is the depth of an endpoint's send FIFO.
const cpsTxQueue = 1 << 16

// openXSK binds an endpoint to queue 0 of ifname in ns.
func openXSK(ns, ifname string) (e *xskEnd, err error) {
	e = &xskEnd{ns: ns, ifname: ifname, txq: make([]uint64, cpsTxQueue)}
	// Copy mode explicitly (veth has no zero-copy AF_XDP anyway); the
	// package takes its bind flags from this variable.
	xdp.DefaultSocketFlags = unix.XDP_COPY
	err = lab.Do(ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		e.ifindex = ifc.Index
		if e.prog, err = xdp.NewProgram(1); err != nil {
			return err
		}
		if err := e.prog.Attach(e.ifindex); err != nil {
			return err
		}
		if e.sock, err = xdp.NewSocket(e.ifindex, 0, &xskOpts); err != nil {
			return err
		}
		return e.prog.Register(0, e.sock.FD())
	})
	if err != nil {
		e.close()
		return nil, fmt.Errorf("perf: AF_XDP endpoint (asavie/xdp) on %s in %s: %w", ifname, ns, err)
	}
	e.sock.Fill(e.sock.GetDescs(e.sock.NumFreeFillSlots()))
	return e, nil
}

// close detaches the program and closes the socket.
func (e *xskEnd) close() error {
	var errs []error
	if e.prog != nil {
		errs = append(errs, lab.Do(e.ns, func() error { return e.prog.Detach(e.ifindex) }), e.prog.Close())
	}
	if e.sock != nil {
		errs = append(errs, e.sock.Close())
	}
	return errors.Join(errs...)
}

// push queues step of the trial's connection idx; false when the FIFO is
// full (the endpoint is the bottleneck: the connection will not complete).
func (e *xskEnd) push(idx, step int) bool {
	if e.n == len(e.txq) {
		return false
	}
	e.txq[(e.head+e.n)%len(e.txq)] = uint64(idx)<<3 | uint64(step)
	e.n++
	return true
}

// service runs one turn of the endpoint: reclaim sent frames, hand free
// frames to the fill ring, take what arrived (each frame to deliver), send
// what is queued, and kick the kernel while the TX ring is not drained
// (in copy mode one sendto sends at most 32 frames). It returns the frames
// received and sent. asavie panics on an unexpected sendto error; that
// becomes an error here.
func (e *xskEnd) service(pl *cpsPlayer, a *cpsAddrs, base uint64, atServer bool) (rx, tx int, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("perf: AF_XDP endpoint on %s: %v", e.ifname, p)
		}
	}()
	s := e.sock
	if c := s.NumCompleted(); c > 0 {
		s.Complete(c)
	}
	if f := s.NumFreeFillSlots(); f >= 64 {
		s.Fill(s.GetDescs(f))
	}
	if n := s.NumReceived(); n > 0 {
		for _, d := range s.Receive(n) {
			idx, step, ok := pl.deliver(s.GetFrame(d), a, atServer)
			if !ok {
				continue
			}
			for _, nx := range cpsScript[step].next {
				e.push(idx, nx)
			}
		}
		rx = n
	}
	if e.n > 0 {
		n := min(e.n, s.NumFreeTxSlots())
		descs := s.GetDescs(n)
		for i := range descs {
			v := e.txq[e.head]
			e.head = (e.head + 1) % len(e.txq)
			e.n--
			descs[i].Len = uint32(cpsBuild(s.GetFrame(descs[i]), a, base+(v>>3), int(v&7)))
		}
		tx = s.Transmit(descs)
	} else if s.NumFreeTxSlots() < xskOpts.TxRingNumDescs {
		s.Transmit(nil)
	}
	return rx, tx, nil
}

// CPSTrial is one connections-per-second trial.
type CPSTrial struct {
	// Target is the connection opening rate asked for (0: as fast as the
	// client can), connections per second.
	Target float64 `json:"target_cps"`
	// Offered is the rate at which the client opened the counted
	// connections; Completed is completed connections per second.
	Offered   float64 `json:"offered_cps"`
	Completed float64 `json:"completed_cps"`
	// Opened and Done are the counts of the counted connections.
	Opened uint64 `json:"opened"`
	Done   uint64 `json:"done"`
	// Ratio is Done/Opened.
	Ratio float64 `json:"complete_ratio"`
	// FramesTX and FramesRX are the endpoints' frame counts (both sides,
	// lead-in included); Stray the frames that matched no connection.
	FramesTX uint64 `json:"frames_tx"`
	FramesRX uint64 `json:"frames_rx"`
	Stray    uint64 `json:"stray"`
}

// cpsPair is the client and the server endpoint of a device, and the next
// connection index of the run (every connection a fresh 5-tuple).
type cpsPair struct {
	client, server *xskEnd
	addrs          cpsAddrs
	next           uint64
	cpu            int
}

func (p *cpsPair) close() error {
	var errs []error
	for _, e := range []*xskEnd{p.client, p.server} {
		if e != nil {
			errs = append(errs, e.close())
		}
	}
	return errors.Join(errs...)
}

// cpsDrain bounds the wait for the last connections after the trial.
const (
	cpsDrainIdle = 50 * time.Millisecond
	cpsDrainMax  = time.Second
	// cpsOpenBurst is the most connections opened in one turn, so that
	// answers are served between openings.
	cpsOpenBurst = 64
)

// run opens connections at rate (0: as fast as the client's send FIFO
// drains) for lead then d, serves both endpoints until every connection is
// complete or nothing arrived for cpsDrainIdle, and counts the connections
// opened after lead. The loop runs on its own thread pinned to p.cpu at
// nice Nice, busy-polling both sockets.
func (p *cpsPair) run(rate float64, lead, d time.Duration) (t CPSTrial, err error) {
	t.Target = rate
	maxConns := 1 << 22
	if rate > 0 {
		maxConns = int(math.Ceil(rate*(lead+d).Seconds())) + 1
	}
	base := p.next
	pl := newCPSPlayer(base, maxConns)
	var opened, countFrom, countTo int
	err = lab.Do(p.client.ns, func() error {
		if p.cpu >= 0 {
			var set unix.CPUSet
			set.Set(p.cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				return err
			}
		}
		_ = unix.Setpriority(unix.PRIO_PROCESS, 0, Nice)
		start := time.Now()
		counting := false
		var lastRX time.Duration
		for {
			now := time.Since(start)
			if !counting && now >= lead {
				counting, countFrom = true, opened
			}
			if now < lead+d {
				due := maxConns - opened
				if rate > 0 {
					due = int(rate*now.Seconds()) - opened
				} else if p.client.n > 256 {
					due = 0
				}
				for due = min(due, cpsOpenBurst, maxConns-opened); due > 0; due-- {
					if !p.client.push(opened, 0) {
						break
					}
					opened++
				}
				countTo = opened
			} else if pl.full == opened || now-lastRX > cpsDrainIdle || now > lead+d+cpsDrainMax {
				t.Offered = float64(countTo-countFrom) / d.Seconds()
				return nil
			}
			crx, ctx, err := p.client.service(pl, &p.addrs, base, false)
			if err != nil {
				return err
			}
			srx, stx, err := p.server.service(pl, &p.addrs, base, true)
			if err != nil {
				return err
			}
			if crx+srx > 0 {
				lastRX = now
			}
			t.FramesRX += uint64(crx + srx)
			t.FramesTX += uint64(ctx + stx)
		}
	})
	p.next += uint64(opened)
	t.Opened = uint64(countTo - countFrom)
	t.Done = uint64(pl.complete(countFrom, countTo))
	t.Completed = float64(t.Done) / d.Seconds()
	if t.Opened > 0 {
		t.Ratio = float64(t.Done) / float64(t.Opened)
	}
	t.Stray = pl.stray
	return t, err
}
