package hasync

import (
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/internal/testenv"
)

// udpFrom sends a UDP datagram from the left, source port sport, through
// box b.
func (b *box) udpFrom(t *testing.T, sport uint16) bridge.Result {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: leftMAC, DstMAC: rightMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: leftIP, DstIP: rightIP}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: 53}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, gopacket.Payload("q")); err != nil {
		t.Fatal(err)
	}
	b.now += int64(time.Millisecond)
	return b.pl.Process(buf.Bytes(), 0, bridge.PortA, b.now)
}

// TestLostDestroyReconciled: events lost to a full ring (a DESTROY among
// them) leave the caches wrong until the drain notices the loss
// (CheckLost) and the service walks the table: the connection that is
// gone is sent as CT_DEL and leaves both caches, the connections whose NEW
// was lost are sent, and nothing else is.
func TestLostDestroyReconciled(t *testing.T) {
	a, b := newBox(t), newBox(t)
	la, lb := &pairLink{}, &pairLink{}
	la.peer, lb.peer = lb, la
	ev := a.ctl.Events()
	sa := New(Config{Link: la, Filter: DefaultFilter, Peer: "b", Table: a.tb, Expect: a.tb.Expect, Now: func() int64 { return a.now },
		Events: ev, Shards: 1, DrainInterval: time.Hour, ReconcileInterval: time.Millisecond})
	sb := New(Config{Link: lb, Filter: DefaultFilter, Peer: "a", Table: b.tb, Now: func() int64 { return b.now }})
	sa.Start()
	defer sa.Close()
	sb.Start()
	p := &pair{a: a}
	drain := func() { ev.Drain(make([]bridge.Event, 256), func([]bridge.Event) {}) }

	p.handshake(t, 40040, 80, 1000, 5000)
	drain()
	if n := sb.Stats().External; n != 1 {
		t.Fatalf("box b's external cache: %d, want the connection", n)
	}
	// The drain falls behind: 4200 UDP flows fill the ring (4096 events),
	// then the TCP connection is reset and expires: its UPDATE and DESTROY
	// are lost with the last 104 NEWs.
	const flows = 4200
	for i := range flows {
		if r := a.udpFrom(t, uint16(10000+i)); r.Verdict != bridge.Accept {
			t.Fatalf("UDP flow %d: %v %v", i, r.Verdict, r.Drop)
		}
	}
	a.send(seg{fromLeft: true, sport: 40040, dport: 80, seq: 1001, rst: true, wscale: -1})
	a.now += int64(11 * time.Second) // TCP CLOSE lasts 10 s
	a.tb.Shard(0).Expire(a.now, 1<<20)
	a.pl.WatchEvents(a.now)
	lost := ev.Lost()
	if lost < flows-bridge.EventRingSize+2 {
		t.Fatalf("the rings lost %d events, want at least %d", lost, flows-bridge.EventRingSize+2)
	}
	drain()
	if st := sa.Stats(); st.Internal != bridge.EventRingSize+1 {
		t.Fatalf("box a's internal cache before the reconciliation: %d, want the %d flows whose NEW arrived and the dead TCP connection", st.Internal, bridge.EventRingSize)
	}
	sa.CheckLost()
	a.serve(func() {
		testenv.WaitFor(10*time.Second, func() bool { return sa.Stats().Reconciles >= 1 })
	})
	st := sa.Stats()
	if st.Reconciles != 1 || st.ReconcilePurged != 1 || st.ReconcileSent != flows-bridge.EventRingSize || st.Internal != flows {
		t.Fatalf("reconciliation: %d runs, %d purged, %d sent, internal cache %d; want 1, 1, %d, %d",
			st.Reconciles, st.ReconcilePurged, st.ReconcileSent, st.Internal, flows-bridge.EventRingSize, flows)
	}
	if n := sb.Stats().External; n != flows {
		t.Errorf("box b's external cache: %d, want the %d UDP flows", n, flows)
	}
	var ext []string
	sb.External(func(l string) {
		if strings.Contains(l, "sport=40040") {
			ext = append(ext, l)
		}
	})
	if len(ext) != 0 {
		t.Errorf("box b still holds the dead connection: %q", ext)
	}
	// No loss since: no walk is asked for.
	sa.CheckLost()
	if sa.run.reconcileWanted.Load() {
		t.Errorf("a reconciliation was asked for without a new loss")
	}
}
