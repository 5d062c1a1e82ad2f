package perf

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// A generator on several CPUs (GenConfig.CPUs) is how a lab with several
// queues gets its frames spread over port A's RX queues by flow. The live
// frames leave the left host's veth through veth_xdp_xmit, which puts them
// on the peer's RX queue smp_processor_id() mod its queue count
// (drivers/net/veth.c, veth_select_rxq): whatever the flow, a generator on
// one CPU fills one queue. One thread per CPU, each sending its own flows
// (f mod len(CPUs) == k, the program picks them by the CPU it runs on),
// puts each flow on one queue, as a NIC's RSS does, at the live
// generator's speed; the packet generator (AF_PACKET, whose skbs keep the
// TX queue the flow hash picked) would do it by flow on one CPU but tops
// out near 0.5 Mpps, below one worker.
//
// The threads share the program, its per-CPU counter and the anchor (the
// program attached to the left veth for the whole Send, see send): a
// second program could not be attached beside it, and without an anchor
// every BPF_PROG_RUN call rewrites the kernel's XDP dispatcher.

// partFlows returns how many of flows part k of n sends: the f in
// [0, flows) with f mod n == k.
func partFlows(flows, k, n int) int {
	if k >= flows {
		return 0
	}
	return (flows - k + n - 1) / n
}

// split makes g's threads, one per CPU that has flows to send (with fewer
// flows than CPUs the last CPUs have none and stay idle: a flow is never
// on two queues).
func (g *Generator) split() {
	n := len(g.cfg.CPUs)
	if n < 2 {
		return
	}
	for k, cpu := range g.cfg.CPUs {
		own := partFlows(g.cfg.Flows, k, n)
		if own == 0 {
			continue
		}
		p := *g
		p.cfg.CPU, p.cfg.CPUs, p.cfg.Flows, p.parts = cpu, nil, own, nil
		p.cfg.prog = g.prog // the parent closes it
		g.parts = append(g.parts, &p)
	}
}

// sendParts is send for a generator on several CPUs: every thread sends
// its share of rate (and of limit), in proportion to its flows, at the
// same time; sent is their sum and elapsed the longest.
func (g *Generator) sendParts(rate float64, d time.Duration, limit uint64) (sent uint64, elapsed time.Duration, err error) {
	anchor, aerr := attachXDP(g.cfg.NS, g.cfg.Ifname, g.prog)
	if aerr != nil {
		return 0, 0, fmt.Errorf("perf: anchor the generator on %s (a generator on several CPUs needs it: each thread's calls would otherwise rewrite the XDP dispatcher): %w", g.cfg.Ifname, aerr)
	}
	defer func() {
		if cerr := anchor.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("perf: detach generator anchor: %w", cerr)
		}
	}()
	type out struct {
		sent uint64
		el   time.Duration
		err  error
	}
	res := make([]out, len(g.parts))
	var wg sync.WaitGroup
	var given uint64
	for i, p := range g.parts {
		share := float64(p.cfg.Flows) / float64(g.cfg.Flows)
		var lim uint64
		if limit > 0 {
			lim = uint64(float64(limit) * share)
			if i == len(g.parts)-1 {
				lim = limit - given
			}
			given += lim
			if lim == 0 {
				continue
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The parent holds the anchor: the part's own attach fails
			// (the slot is taken) and it sends without one.
			r := &res[i]
			r.sent, r.el, r.err = p.send(rate*share, d, lim)
		}()
	}
	wg.Wait()
	var errs []error
	for _, r := range res {
		sent += r.sent
		elapsed = max(elapsed, r.el)
		errs = append(errs, r.err)
	}
	return sent, elapsed, errors.Join(errs...)
}
