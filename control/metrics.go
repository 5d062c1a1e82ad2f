package control

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctlist"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/packet"
	"github.com/statewire/statewire/statemachine"
)

// Metrics are exported by a collector that reads, at each scrape, the
// counters the workers already publish (bridge.DatapathStats, the table's
// published shard counters, the expectation table): the packet path pays
// nothing for them.

// MetricsServer is the HTTP endpoint of the metrics.
type MetricsServer struct {
	srv *http.Server
	ln  net.Listener
}

// Addr returns the address the endpoint listens on.
func (m *MetricsServer) Addr() string { return m.ln.Addr().String() }

// Close stops the endpoint.
func (m *MetricsServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return m.srv.Shutdown(ctx)
}

// ServeMetrics serves b's metrics at http://addr/metrics from a goroutine.
// ports names port A and B in the labels ("" keeps "A" and "B").
func ServeMetrics(addr string, b Backend, ports [2]string) (*MetricsServer, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(NewCollector(b, ports)); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	m := &MetricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener is gone; nothing to report to
		}
	}()
	return m, nil
}

// Collector is a prometheus.Collector over a running bridge.
type Collector struct {
	b     Backend
	ports [2]string
	d     map[string]*prometheus.Desc
}

type metricDef struct {
	name, help string
	labels     []string
}

var metricDefs = []metricDef{
	{"rx_packets_total", "Frames taken from the RX rings, by ingress port and queue.", []string{"port", "queue"}},
	{"rx_bytes_total", "Bytes of the frames taken from the RX rings.", []string{"port", "queue"}},
	{"tx_packets_total", "Frames submitted on the TX rings, by egress port and queue.", []string{"port", "queue"}},
	{"forwarded_packets_total", "Frames accepted and put on the other port's TX ring, by ingress port and queue.", []string{"port", "queue"}},
	{"forwarded_bytes_total", "Bytes of the forwarded frames, by ingress port and queue.", []string{"port", "queue"}},
	{"drops_total", "Frames dropped, by ingress port, queue and reason.", []string{"port", "queue", "reason"}},
	{"kernel_drops_total", "Frames the kernel dropped before the RX ring (XDP_STATISTICS), by port, queue and kind.", []string{"port", "queue", "kind"}},
	{"ring_events_total", "AF_XDP ring events: fill ring empty, TX ring empty, TX kicks, fill wakeups.", []string{"port", "queue", "event"}},
	{"verdicts_total", "Pipeline verdicts.", []string{"verdict"}},
	{"fragments_total", "Fragment handling: later fragments given their first fragment's verdict (cached) or not (unknown), handed to the first fragment's worker (steered); datagram records evicted; duplicate and overlapping fragments.", []string{"outcome"}},
	{"packets_by_state_total", "Packets by conntrack state (ctstate).", []string{"state"}},
	{"checksums_completed_total", "Accepted frames that came with a partial checksum (a sender offloading it: CHECKSUM_PARTIAL) and left with the checksum completed, by the path that completed it (slow: the AF_XDP workers; fast: the XDP fast path).", []string{"path"}},
	{"conntrack_entries", "Live connection-table entries.", nil},
	{"conntrack_max", "Most entries the table holds (nf_conntrack_max).", nil},
	{"conntrack_fill_ratio", "conntrack_entries / conntrack_max.", nil},
	{"conntrack_stat_total", "Table counters under /proc/net/stat/nf_conntrack names.", []string{"counter"}},
	{"expectations", "Live expectations.", nil},
	{"conntrack_entries_by_state", "Live entries by L4 protocol and TCP state (from a table snapshot; absent above 262144 entries).", []string{"proto", "state"}},
	// The XDP fast path (DESIGN.md "Two levels"): its frames never reach
	// the sockets, so none of the counters above count them.
	{"fastpath_enabled", "1 when the XDP fast path runs (--offload), 0 otherwise.", nil},
	{"fastpath_flows", "Flows in the fast path now (offered and not taken back).", nil},
	{"fastpath_flows_offered_total", "Flows the workers put into the fast path.", nil},
	{"fastpath_flows_adopted_total", "Flows the previous process left in the fast path that this one kept there at start (the connection table and the pinned flow map both adopted).", nil},
	{"fastpath_offers_refused_total", "Offers the fast path refused (its map full, or an error).", nil},
	{"fastpath_flows_taken_back_total", "Flows taken back from the fast path, by reason: slow-path (a packet of the flow came up the slow path), remove (the entry was removed: expiry, early drop, conntrack -D/-F), settings (a rules reload or sysctl change).", []string{"reason"}},
	{"fastpath_offers_activated_total", "Pending offers made active (the worker had judged every frame the program punted while the offer was pending).", nil},
	{"fastpath_offers_forced_total", "Of the activated offers, those activated at once because the worker stayed behind the program for 5 ms (overload); their frames still queued are dropped (fastpath_handover_drops_total).", nil},
	{"fastpath_offers_held_back_total", "Activations given up after waiting 1 ms for another worker to send frames of the flow judged for it (two or more workers); the offer stays pending and its next marked frame tries again (activating would let the fast path overtake those frames).", nil},
	{"fastpath_handover_drops_total", "Frames a forced activation left behind: punted while their flow was pending, still queued, dropped unjudged so that the flow keeps its order (also in drops_total, reason handover).", nil},
	{"fastpath_offers_cancelled_total", "Pending offers withdrawn before they became active (the flow changed, a settings change, or marks missing for 50 ms).", nil},
	{"fastpath_errors_total", "Fast-path map reads or take-backs that failed (the flow is treated as taken back).", nil},
	{"fastpath_packets_total", "Frames the fast path forwarded in the kernel, by ingress port.", []string{"port"}},
	{"fastpath_bytes_total", "Bytes of the frames the fast path forwarded, by ingress port.", []string{"port"}},
	{"fastpath_redirect_errors_total", "Frames the fast path forwarded (in fastpath_packets_total) that the kernel then dropped: the egress port down, the frame above its MTU, its driver refusing them (a veth whose peer is down), by ingress port.", []string{"port"}},
	{"fastpath_punts_total", "Frames the fast path handed to the slow path (AF_XDP), by ingress port and reason.", []string{"port", "reason"}},
	// --fail-mode=open: frames the pinned XDP program forwarded unjudged
	// while no worker was registered (between two runs, at start and stop).
	{"failopen_packets_total", "Frames forwarded unjudged by the fail-open XDP program while no statewire worker ran (--fail-mode=open; kept across restarts in the pinned map), by ingress port.", []string{"port"}},
	{"failopen_bytes_total", "Bytes of those frames, by ingress port.", []string{"port"}},
}

// maxStateScan is the largest table the collector walks for
// conntrack_entries_by_state: a snapshot costs the workers one copy of every
// entry, which is not worth it at every scrape of a huge table.
const maxStateScan = 1 << 18

// NewCollector returns a collector of b's counters.
func NewCollector(b Backend, ports [2]string) *Collector {
	c := &Collector{b: b, ports: ports, d: map[string]*prometheus.Desc{}}
	for _, m := range metricDefs {
		c.d[m.name] = prometheus.NewDesc("statewire_"+m.name, m.help, m.labels, nil)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.d {
		ch <- d
	}
}

func (c *Collector) port(p bridge.Port) string {
	if c.ports[p] != "" {
		return c.ports[p]
	}
	return p.String()
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(name string, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.d[name], prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.d[name], prometheus.GaugeValue, v, labels...)
	}
	st := c.b.Stats()
	for _, q := range st.Queues {
		qs := strconv.Itoa(q.Queue)
		for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
			pc, sk, pn := &q.Port[p], &q.Socket[p], c.port(p)
			counter("rx_packets_total", pc.RX, pn, qs)
			counter("rx_bytes_total", pc.RXBytes, pn, qs)
			counter("tx_packets_total", sk.TX, pn, qs)
			counter("forwarded_packets_total", pc.Forwarded, pn, qs)
			counter("forwarded_bytes_total", pc.FwdBytes, pn, qs)
			for r := bridge.DropReason(1); r < bridge.NumDropReasons; r++ {
				counter("drops_total", pc.Drops[r], pn, qs, r.String())
			}
			counter("drops_total", pc.HandoffFull, pn, qs, "handoff-full")
			counter("kernel_drops_total", sk.RxDropped, pn, qs, "rx_dropped")
			counter("kernel_drops_total", sk.RxRingFull, pn, qs, "rx_ring_full")
			counter("kernel_drops_total", sk.RxInvalidDescs, pn, qs, "rx_invalid_descs")
			counter("kernel_drops_total", sk.TxInvalidDescs, pn, qs, "tx_invalid_descs")
			counter("ring_events_total", sk.RxFillRingEmptyDescs, pn, qs, "fill_ring_empty")
			counter("ring_events_total", sk.TxRingEmptyDescs, pn, qs, "tx_ring_empty")
			counter("ring_events_total", sk.Kicks, pn, qs, "tx_kick")
			counter("ring_events_total", sk.FillWakeups, pn, qs, "fill_wakeup")
		}
	}
	pl := &st.Pipeline
	counter("verdicts_total", pl.Accepted, "accept")
	counter("verdicts_total", pl.Dropped(), "drop")
	fr := &st.Frags
	for _, kv := range []struct {
		outcome string
		v       uint64
	}{
		{"cached", fr.Cached}, {"unknown", fr.Unknown}, {"steered", fr.Steered},
		{"evicted", fr.Evictions}, {"duplicate", fr.Duplicates}, {"overlap", fr.Overlaps},
	} {
		counter("fragments_total", kv.v, kv.outcome)
	}
	counter("checksums_completed_total", pl.CsumCompleted, "slow")
	collectTargets(counter, &pl.Targets)
	counter("checksums_completed_total", st.Fast.Ports[bridge.PortA].CsumCompleted+st.Fast.Ports[bridge.PortB].CsumCompleted, "fast")
	for i, n := range pl.States {
		if i > 0 {
			counter("packets_by_state_total", n, bridge.StateNames[i])
		}
	}
	fast := &pl.Fast
	on := 0.0
	if st.Fast.On {
		on = 1
	}
	gauge("fastpath_enabled", on)
	gauge("fastpath_flows", float64(fast.InFastPath()))
	counter("fastpath_flows_offered_total", fast.Offered)
	counter("fastpath_flows_adopted_total", fast.Adopted)
	counter("fastpath_offers_refused_total", fast.Refused)
	for r, n := range fast.TakenBack {
		counter("fastpath_flows_taken_back_total", n, bridge.TakeBackNames[r])
	}
	counter("fastpath_offers_activated_total", fast.Activated)
	counter("fastpath_offers_forced_total", fast.Forced)
	counter("fastpath_offers_held_back_total", fast.HeldBack)
	counter("fastpath_handover_drops_total", fast.Handover)
	counter("fastpath_offers_cancelled_total", fast.Cancelled)
	counter("fastpath_errors_total", fast.Errors)
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		ps, pn := &st.Fast.Ports[p], c.port(p)
		counter("fastpath_packets_total", ps.FastPackets, pn)
		counter("fastpath_bytes_total", ps.FastBytes, pn)
		counter("fastpath_redirect_errors_total", ps.RedirectErrors, pn)
		for r, n := range ps.Punts {
			counter("fastpath_punts_total", n, pn, offload.PuntReason(r).String())
		}
		counter("failopen_packets_total", st.Fast.FailOpen[p].Packets, pn)
		counter("failopen_bytes_total", st.Fast.FailOpen[p].Bytes, pn)
	}
	t := c.b.Table()
	ts := t.Stats()
	max := t.Config().MaxEntries
	gauge("conntrack_entries", float64(ts.Count))
	gauge("conntrack_max", float64(max))
	if max > 0 {
		gauge("conntrack_fill_ratio", float64(ts.Count)/float64(max))
	}
	x := t.Expect.Stats()
	for _, kv := range []struct {
		n string
		v uint64
	}{
		{"found", ts.Found}, {"insert", ts.Insert}, {"insert_failed", ts.InsertFailed},
		{"drop", ts.Drop}, {"early_drop", ts.EarlyDrop}, {"delete", ts.Delete},
		{"invalid", pl.Invalid}, {"ignore", pl.Ignore}, {"icmp_error", pl.ICMPError},
		{"expect_new", x.New}, {"expect_create", x.Create}, {"expect_delete", x.Delete},
	} {
		counter("conntrack_stat_total", kv.v, kv.n)
	}
	gauge("expectations", float64(t.Expect.Len()))
	if ts.Count <= maxStateScan {
		type ps struct {
			proto uint8
			state statemachine.TCPState
		}
		by := map[ps]int{}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := t.Snapshot(ctx, func(es *flowtable.EntrySnapshot) {
			k := ps{proto: es.Orig.Proto}
			if k.proto == packet.ProtoTCP {
				k.state = es.Conn.State
			}
			by[k]++
		})
		if err == nil {
			for k, n := range by {
				st := ""
				if k.proto == packet.ProtoTCP {
					st = k.state.String()
				}
				gauge("conntrack_entries_by_state", float64(n), ctlist.L4Name(k.proto), st)
			}
		}
	}
}
