package perf

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/statewire/statewire/lab"
)

// Sink counts the harness's frames in XDP on the far host's veth and drops
// them. Counting happens here, never from a device's own counters.
//
// Ownership: any goroutine may read the counters; Close once.
type Sink struct {
	prog    *ebpf.Program
	counter *ebpf.Map
	hist    *ebpf.Map
	link    link.Link
}

// AttachSink attaches a sink to ifname in namespace ns (native XDP). With
// hist it also keeps a 1 µs latency histogram from the generator's stamps.
func AttachSink(ns, ifname string, hist bool) (*Sink, error) {
	return attachSink(ns, ifname, hist, udpLayout)
}

func attachSink(ns, ifname string, hist bool, lay layout) (*Sink, error) {
	s := &Sink{}
	var err error
	if s.counter, err = newPerCPUArray("swperf_scnt", 2); err != nil {
		return nil, err
	}
	if hist {
		if s.hist, err = newPerCPUArray("swperf_hist", HistBuckets); err != nil {
			s.Close()
			return nil, err
		}
	}
	if s.prog, err = sinkProgram(s.counter, s.hist, lay); err != nil {
		s.Close()
		return nil, err
	}
	if s.link, err = attachXDP(ns, ifname, s.prog); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// attachXDP attaches prog to ifname in ns in driver mode with a bpf_link.
func attachXDP(ns, ifname string, prog *ebpf.Program) (link.Link, error) {
	var l link.Link
	err := lab.Do(ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("perf: attach XDP to %s in %s: %w", ifname, ns, err)
	}
	return l, nil
}

// Count returns the number of harness frames the sink has seen.
func (s *Sink) Count() (uint64, error) { return sumPerCPU(s.counter, 0) }

// Other returns the number of other frames the sink has seen and dropped.
func (s *Sink) Other() (uint64, error) { return sumPerCPU(s.counter, 1) }

// Hist returns the latency histogram (bucket i counts frames delayed
// [i, i+1) µs) and clears it. It is nil without a histogram.
func (s *Sink) Hist() ([]uint64, error) {
	if s.hist == nil {
		return nil, nil
	}
	out := make([]uint64, HistBuckets)
	var vals []uint64
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("perf: possible CPUs: %w", err)
	}
	zero := make([]uint64, ncpu)
	for i := range uint32(HistBuckets) {
		if err := s.hist.Lookup(i, &vals); err != nil {
			return nil, fmt.Errorf("perf: read histogram: %w", err)
		}
		for _, v := range vals {
			out[i] += v
		}
		if out[i] != 0 {
			if err := s.hist.Put(i, zero); err != nil {
				return nil, fmt.Errorf("perf: clear histogram: %w", err)
			}
		}
	}
	return out, nil
}

// Close detaches the sink and frees its maps.
func (s *Sink) Close() error {
	var errs []error
	if s.link != nil {
		errs = append(errs, s.link.Close())
	}
	if s.prog != nil {
		errs = append(errs, s.prog.Close())
	}
	for _, m := range []*ebpf.Map{s.counter, s.hist} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}
