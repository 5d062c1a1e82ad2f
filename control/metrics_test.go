package control

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/offload"
)

func TestMetricsScrape(t *testing.T) {
	f := newFake(t, 2)
	table3(t, f)
	var q bridge.QueueStats
	q.Port[bridge.PortA].RX, q.Port[bridge.PortA].RXBytes = 10, 1000
	q.Port[bridge.PortA].Forwarded = 7
	q.Port[bridge.PortA].Drops[bridge.DropRule] = 3
	q.Socket[bridge.PortB].TX = 7
	f.DPStats.Queues = []bridge.QueueStats{q}
	f.DPStats.Pipeline.Accepted = 7
	f.DPStats.Pipeline.Drops[bridge.DropRule] = 3
	f.DPStats.Pipeline.CsumCompleted = 5
	f.DPStats.Frags = bridge.FragStats{Cached: 4, Unknown: 1, Steered: 2, Overlaps: 1}
	f.DPStats.Pipeline.Fast = bridge.FastPathStats{Offered: 9, Adopted: 1, Refused: 2, TakenBack: [bridge.NumTakeBackReasons]uint64{3, 1, 1}, Errors: 1, Activated: 4, Forced: 3, HeldBack: 2, Handover: 17}
	f.DPStats.Fast.On = true
	f.DPStats.Fast.Ports[bridge.PortA] = offload.PortStats{FastPackets: 50, FastBytes: 3200}
	f.DPStats.Fast.Ports[bridge.PortA].Punts[offload.PuntWindow] = 6
	f.DPStats.Fast.Ports[bridge.PortB].FastPackets = 40
	f.DPStats.Fast.Ports[bridge.PortB].RedirectErrors = 5
	f.DPStats.Fast.Ports[bridge.PortB].CsumCompleted = 8
	// The table publishes its counters from the owner's ServeRequests: wait
	// for the three entries to show.
	for end := time.Now().Add(5 * time.Second); f.T.Len() != 3 && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	m, err := ServeMetrics("127.0.0.1:0", f, [2]string{"ethA", "ethB"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	resp, err := http.Get("http://" + m.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := string(body)
	for _, want := range []string{
		`statewire_rx_packets_total{port="ethA",queue="0"} 10`,
		`statewire_rx_bytes_total{port="ethA",queue="0"} 1000`,
		`statewire_forwarded_packets_total{port="ethA",queue="0"} 7`,
		`statewire_tx_packets_total{port="ethB",queue="0"} 7`,
		`statewire_drops_total{port="ethA",queue="0",reason="` + bridge.DropRule.String() + `"} 3`,
		`statewire_verdicts_total{verdict="accept"} 7`,
		`statewire_verdicts_total{verdict="drop"} 3`,
		`statewire_checksums_completed_total{path="slow"} 5`,
		`statewire_checksums_completed_total{path="fast"} 8`,
		`statewire_fragments_total{outcome="cached"} 4`,
		`statewire_fragments_total{outcome="unknown"} 1`,
		`statewire_fragments_total{outcome="steered"} 2`,
		`statewire_fragments_total{outcome="overlap"} 1`,
		`statewire_fragments_total{outcome="evicted"} 0`,
		`statewire_conntrack_entries 3`,
		`statewire_conntrack_max 4096`,
		`statewire_conntrack_stat_total{counter="insert"} 3`,
		`statewire_expectations 0`,
		`statewire_conntrack_entries_by_state{proto="tcp",state="ESTABLISHED"} 1`,
		`statewire_conntrack_entries_by_state{proto="tcp",state="SYN_SENT"} 1`,
		`statewire_conntrack_entries_by_state{proto="udp",state=""} 1`,
		`statewire_fastpath_enabled 1`,
		`statewire_fastpath_flows 5`,
		`statewire_fastpath_flows_offered_total 9`,
		`statewire_fastpath_flows_adopted_total 1`,
		`statewire_fastpath_offers_refused_total 2`,
		`statewire_fastpath_flows_taken_back_total{reason="slow-path"} 3`,
		`statewire_fastpath_flows_taken_back_total{reason="remove"} 1`,
		`statewire_fastpath_flows_taken_back_total{reason="settings"} 1`,
		`statewire_fastpath_errors_total 1`,
		`statewire_fastpath_offers_activated_total 4`,
		`statewire_fastpath_offers_forced_total 3`,
		`statewire_fastpath_offers_held_back_total 2`,
		`statewire_fastpath_handover_drops_total 17`,
		`statewire_fastpath_packets_total{port="ethA"} 50`,
		`statewire_fastpath_bytes_total{port="ethA"} 3200`,
		`statewire_fastpath_packets_total{port="ethB"} 40`,
		`statewire_fastpath_redirect_errors_total{port="ethB"} 5`,
		`statewire_fastpath_redirect_errors_total{port="ethA"} 0`,
		`statewire_fastpath_punts_total{port="ethA",reason="window"} 6`,
		`statewire_fastpath_punts_total{port="ethB",reason="no-egress"} 0`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("scrape: missing %q", want)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", got)
	}
}
