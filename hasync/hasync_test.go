package hasync

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctsync"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// The rules of the failover scenario: NEW only from port A (left).
const fwRules = `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 21 -j CT --helper ftp
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -m physdev --physdev-in pa -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

var (
	leftMAC  = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	rightMAC = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	leftIP   = net.IP{198, 18, 0, 1}
	rightIP  = net.IP{198, 18, 0, 2}
)

// seg is one TCP segment from left (fromLeft) or right.
type seg struct {
	fromLeft            bool
	sport               uint16
	dport               uint16
	seq, ack            uint32
	syn, ack_, fin, rst bool
	win                 uint16
	payload             string
	wscale              int // -1: no option
}

func (s seg) frame(t *testing.T) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: rightMAC, DstMAC: leftMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: rightIP, DstIP: leftIP}
	if s.fromLeft {
		eth.SrcMAC, eth.DstMAC = leftMAC, rightMAC
		ip.SrcIP, ip.DstIP = leftIP, rightIP
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), Seq: s.seq, Ack: s.ack,
		SYN: s.syn, ACK: s.ack_, FIN: s.fin, RST: s.rst, Window: s.win}
	if s.wscale >= 0 && s.syn {
		tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{byte(s.wscale)}}}
	}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, tcp, gopacket.Payload(s.payload))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// box is one bridge's pipeline on a one-shard table, driven by the test
// goroutine (the shard's owner).
type box struct {
	t   *testing.T
	tb  *flowtable.Table
	pl  *bridge.Pipeline
	ctl *bridge.Control
	now int64
}

func newBox(t *testing.T) *box {
	t.Helper()
	tb, err := flowtable.New(flowtable.Config{Shards: 1, Buckets: 1024, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := bridge.DefaultSettings()
	if s.Rules, err = rules.FromText("fw", fwRules, [2]string{"pa", "pb"}); err != nil {
		t.Fatal(err)
	}
	ctl := bridge.NewControl(s)
	return &box{t: t, tb: tb, ctl: ctl, pl: bridge.NewPipeline(tb, 0, ctl, nil), now: int64(time.Hour)}
}

// send runs s through the box 1ms after the previous packet.
func (b *box) send(s seg) bridge.Result {
	b.t.Helper()
	b.now += int64(time.Millisecond)
	in := bridge.PortB
	if s.fromLeft {
		in = bridge.PortA
	}
	return b.pl.Process(s.frame(b.t), 0, in, b.now)
}

// serve runs fn while the test goroutine serves the shard's mailbox, as
// a worker does between batches.
func (b *box) serve(fn func()) {
	done := make(chan struct{})
	go func() { fn(); close(done) }()
	for {
		select {
		case <-done:
			return
		default:
			b.tb.Shard(0).ServeRequests(64)
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// pairLink is an in-process link: what one side sends goes, encoded and
// decoded as on the wire, to the other side's handler.
type pairLink struct {
	mu      sync.Mutex
	peer    *pairLink
	h       Handler
	sent    []ctsync.Type
	resyncs int
}

func (l *pairLink) Start(h Handler) { l.mu.Lock(); l.h = h; l.mu.Unlock() }
func (l *pairLink) SendCT(t ctsync.Type, c *ctsync.CT) error {
	b, err := ctsync.AppendCT(nil, ctsync.Header{Type: t}, c, ctsync.Options{})
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.sent = append(l.sent, t)
	l.mu.Unlock()
	msgs, err := ctsync.Decode(b)
	if err != nil {
		return err
	}
	l.peer.mu.Lock()
	h := l.peer.h
	l.peer.mu.Unlock()
	if h != nil {
		h.CT(msgs[0].Type, msgs[0].CT)
	}
	return nil
}
func (l *pairLink) SendExp(t ctsync.Type, e *ctsync.Exp) error {
	b, err := ctsync.AppendExp(nil, ctsync.Header{Type: t}, e, ctsync.Options{})
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.sent = append(l.sent, t)
	l.mu.Unlock()
	msgs, err := ctsync.Decode(b)
	if err != nil {
		return err
	}
	l.peer.mu.Lock()
	h := l.peer.h
	l.peer.mu.Unlock()
	if h != nil {
		h.Exp(msgs[0].Type, msgs[0].Exp)
	}
	return nil
}
func (l *pairLink) RequestResync() {
	l.mu.Lock()
	l.resyncs++
	l.mu.Unlock()
	l.peer.h.ResyncRequested()
}
func (l *pairLink) Stats() LinkStats { return LinkStats{} }
func (l *pairLink) Close() error     { return nil }

func (l *pairLink) types() []ctsync.Type {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ctsync.Type(nil), l.sent...)
}

// pair is two boxes with their services joined by pairLinks; box a's
// events are drained into its service by drain.
type pair struct {
	a, b   *box
	sa, sb *Service
	la, lb *pairLink
}

func newPair(t *testing.T) *pair {
	p := &pair{a: newBox(t), b: newBox(t), la: &pairLink{}, lb: &pairLink{}}
	p.la.peer, p.lb.peer = p.lb, p.la
	p.sa = New(Config{Link: p.la, Filter: DefaultFilter, Peer: "b", Table: p.a.tb, Expect: p.a.tb.Expect, Now: func() int64 { return p.a.now }})
	p.sb = New(Config{Link: p.lb, Filter: DefaultFilter, Peer: "a", Table: p.b.tb, Expect: p.b.tb.Expect, Now: func() int64 { return p.b.now }})
	p.sa.Start()
	p.sb.Start()
	// Box a's events go to its service (the datapath's drain does this).
	p.a.ctl.Events().Subscribe(1)
	p.a.ctl.Events().AddReader(p.sa.HandleEvents)
	return p
}

func (p *pair) drain() {
	p.a.ctl.Events().Drain(make([]bridge.Event, 64), func([]bridge.Event) {})
}

// handshake opens a TCP connection from the left through box a.
func (p *pair) handshake(t *testing.T, sport, dport uint16, iss, irs uint32) {
	t.Helper()
	for _, s := range []seg{
		{fromLeft: true, sport: sport, dport: dport, seq: iss, syn: true, win: 64240, wscale: 7},
		{sport: dport, dport: sport, seq: irs, ack: iss + 1, syn: true, ack_: true, win: 65160, wscale: 7},
		{fromLeft: true, sport: sport, dport: dport, seq: iss + 1, ack: irs + 1, ack_: true, win: 502, wscale: -1},
	} {
		if r := p.a.send(s); r.Verdict != bridge.Accept {
			t.Fatalf("handshake segment %+v: verdict %v (%v), want accept", s, r.Verdict, r.Drop)
		}
	}
}

func TestFilterSendsTCPOnceEstablished(t *testing.T) {
	p := newPair(t)
	p.handshake(t, 40000, 80, 1000, 5000)
	p.drain()
	// SYN (NEW, SYN_SENT) and SYN/ACK (SYN_RECV) stay home; the ACK that
	// makes it ESTABLISHED goes as CT_UPD (cache_update_force adds it).
	if got := p.la.types(); len(got) != 1 || got[0] != ctsync.TypeCTUpd {
		t.Fatalf("sent %v after the handshake, want [CT_UPD]", got)
	}
	st := p.sa.Stats()
	if st.Events != 3 || st.Filtered != 2 || st.Internal != 1 {
		t.Errorf("events %d filtered %d internal %d, want 3, 2, 1", st.Events, st.Filtered, st.Internal)
	}
	if n := p.sb.Stats().External; n != 1 {
		t.Fatalf("peer's external cache holds %d, want 1", n)
	}
	var lines []string
	p.sb.External(func(l string) { lines = append(lines, l) })
	want := "tcp      6 432000 ESTABLISHED src=198.18.0.1 dst=198.18.0.2 sport=40000 dport=80 src=198.18.0.2 dst=198.18.0.1 sport=80 dport=40000 [ASSURED] mark=0 use=1 [active since 0s]"
	if len(lines) != 1 || lines[0] != want {
		t.Errorf("sync -e:\n got %q\nwant %q", lines, want)
	}
	// Data changes neither the state nor the status bits (the handshake's
	// last ACK made it ASSURED, as the kernel does): nothing more is sent,
	// not a message per packet.
	p.a.send(seg{fromLeft: true, sport: 40000, dport: 80, seq: 1001, ack: 5001, ack_: true, win: 502, payload: "GET /", wscale: -1})
	p.a.send(seg{sport: 80, dport: 40000, seq: 5001, ack: 1006, ack_: true, win: 509, payload: "200 OK", wscale: -1})
	p.drain()
	if got := p.la.types(); len(got) != 1 {
		t.Fatalf("sent %v after two data segments, want still [CT_UPD]", got)
	}
	// Closing: FIN_WAIT and LAST_ACK are filtered, TIME_WAIT is sent;
	// the destroy goes whatever the state.
	p.a.send(seg{fromLeft: true, sport: 40000, dport: 80, seq: 1006, ack: 5007, ack_: true, fin: true, win: 502, wscale: -1})
	p.a.send(seg{sport: 80, dport: 40000, seq: 5007, ack: 1007, ack_: true, fin: true, win: 509, wscale: -1})
	p.a.send(seg{fromLeft: true, sport: 40000, dport: 80, seq: 1007, ack: 5008, ack_: true, win: 502, wscale: -1})
	p.drain()
	got := p.la.types()
	if got[len(got)-1] != ctsync.TypeCTUpd {
		t.Fatalf("sent %v, want a CT_UPD for TIME_WAIT last", got)
	}
	var ext []string
	p.sb.External(func(l string) { ext = append(ext, l) })
	if len(ext) != 1 || !contains(ext[0], "TIME_WAIT") {
		t.Fatalf("peer's external cache %q, want the connection in TIME_WAIT", ext)
	}
	p.serveA(func() {
		if _, err := p.a.tb.FlushEntries(context.Background()); err != nil {
			t.Error(err)
		}
	})
	p.drain()
	if got := p.la.types(); got[len(got)-1] != ctsync.TypeCTDel {
		t.Fatalf("sent %v, want CT_DEL last (conntrack -F)", got)
	}
	if n := p.sb.Stats().External; n != 0 {
		t.Errorf("peer's external cache holds %d after CT_DEL, want 0", n)
	}
	if n := p.sa.Stats().Internal; n != 0 {
		t.Errorf("internal cache holds %d after the destroy, want 0", n)
	}
}

func (p *pair) serveA(fn func()) { p.a.serve(fn) }

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestCommitResumesTCP is the failover on one connection: box a tracks a
// connection and syncs it; box b commits its external cache and takes the
// next segments of the connection, mid-stream, from both sides: none is
// INVALID (the window is learnt from them), all are forwarded as
// ESTABLISHED; a NEW from the right that box a never saw is dropped.
func TestCommitResumesTCP(t *testing.T) {
	p := newPair(t)
	p.handshake(t, 40001, 80, 1000, 5000)
	// A long download: the server's sequence numbers are far on.
	p.a.send(seg{sport: 80, dport: 40001, seq: 5001, ack: 1001, ack_: true, win: 509, payload: "xxxx", wscale: -1})
	p.drain()
	var res flowtable.CommitResult
	var err error
	p.b.serve(func() { res, err = p.sb.Commit(context.Background()) })
	if err != nil || res.Inserted != 1 || res.Exists != 0 || res.Failed != 0 {
		t.Fatalf("commit: %+v, %v; want 1 inserted", res, err)
	}
	// Committing again finds it there (EEXIST), as conntrackd counts.
	p.b.serve(func() { res, err = p.sb.Commit(context.Background()) })
	if err != nil || res.Inserted != 0 || res.Exists != 1 {
		t.Fatalf("second commit: %+v, %v; want 1 existing", res, err)
	}
	// The committed connection is box b's now: a resync request from box
	// a (back after a restart, its caches empty) gets it, not sent before.
	if st := p.sb.Stats(); st.Internal != 1 || st.Sent != 0 {
		t.Fatalf("after the commit box b's internal cache holds %d and it sent %d, want 1 and 0", st.Internal, st.Sent)
	}
	p.sa.Flush()
	p.sa.RequestResync()
	if n := p.sa.Stats().External; n != 1 {
		t.Fatalf("box a's external cache after its resync request: %d, want 1", n)
	}
	// The server goes on 3 MB later than box b ever saw, window scaled
	// (box b never saw the SYNs' scale options).
	for i, s := range []seg{
		{sport: 80, dport: 40001, seq: 5001 + 3<<20, ack: 1001, ack_: true, win: 509, payload: "data after failover", wscale: -1},
		{fromLeft: true, sport: 40001, dport: 80, seq: 1001, ack: 5001 + 3<<20 + 19, ack_: true, win: 502, wscale: -1},
		{sport: 80, dport: 40001, seq: 5001 + 3<<20 + 19, ack: 1001, ack_: true, win: 509, payload: "more", wscale: -1},
		{fromLeft: true, sport: 40001, dport: 80, seq: 1001, ack: 5001 + 3<<20 + 23, ack_: true, win: 502, payload: "ok", wscale: -1},
	} {
		r := p.b.send(s)
		if r.Verdict != bridge.Accept || r.State != statemachine.StateEstablished {
			t.Fatalf("segment %d after the commit: verdict %v drop %v state %v invalid %v; want accepted ESTABLISHED",
				i, r.Verdict, r.Drop, r.State, r.Invalid)
		}
	}
	// A SYN from the right, never answered, never synced: NEW from B.
	r := p.b.send(seg{sport: 80, dport: 40099, seq: 77, syn: true, win: 64240, wscale: 7})
	if r.Verdict != bridge.Drop || r.State != statemachine.StateNew {
		t.Fatalf("unsolicited SYN from the right on the standby: verdict %v state %v, want dropped NEW", r.Verdict, r.State)
	}
}

// TestResyncAndFlush: a flushed peer gets the whole internal cache back on
// a resync request; flush empties both caches.
func TestResyncAndFlush(t *testing.T) {
	p := newPair(t)
	p.handshake(t, 40002, 80, 1, 100)
	p.handshake(t, 40003, 80, 1, 100)
	p.drain()
	if n := p.sb.Stats().External; n != 2 {
		t.Fatalf("external %d, want 2", n)
	}
	if n := p.sb.Flush(); n != 2 {
		t.Fatalf("flush removed %d, want 2", n)
	}
	p.sb.RequestResync()
	if n := p.sb.Stats().External; n != 2 {
		t.Fatalf("external %d after the resync, want 2", n)
	}
	if st := p.sa.Stats(); st.ResyncsServed != 1 || st.Sent != 4 {
		t.Fatalf("a served %d resyncs and sent %d messages, want 1 and 4", st.ResyncsServed, st.Sent)
	}
}

// TestFTPCommitPicksUp: an FTP control connection committed with its
// helper parses the first PORT command after the failover (the kernel's
// NF_CT_FTP_SEQ_PICKUP), so the server's data connection from the right is
// RELATED and passes.
func TestFTPCommitPicksUp(t *testing.T) {
	p := newPair(t)
	p.handshake(t, 40010, 21, 1000, 5000)
	p.a.send(seg{sport: 21, dport: 40010, seq: 5001, ack: 1001, ack_: true, win: 509, payload: "220 hi\r\n", wscale: -1})
	p.drain()
	var ext []string
	p.sb.External(func(l string) { ext = append(ext, l) })
	if len(ext) != 1 || !contains(ext[0], "helper=ftp") {
		t.Fatalf("external cache %q, want the control connection with helper=ftp", ext)
	}
	var res flowtable.CommitResult
	p.b.serve(func() { res, _ = p.sb.Commit(context.Background()) })
	if res.Inserted != 1 {
		t.Fatalf("commit %+v", res)
	}
	// 198,18,0,1 port 39*256+1 = 9985, sent mid-stream (seq box b never saw
	// follow a newline).
	port := "PORT 198,18,0,1,39,1\r\n"
	r := p.b.send(seg{fromLeft: true, sport: 40010, dport: 21, seq: 1500, ack: 5300, ack_: true, win: 502, payload: port, wscale: -1})
	if r.Verdict != bridge.Accept {
		t.Fatalf("PORT after the commit: %v %v", r.Verdict, r.Drop)
	}
	r = p.b.send(seg{sport: 20, dport: 9985, seq: 9000, syn: true, win: 64240, wscale: 7})
	if r.Verdict != bridge.Accept || r.State != statemachine.StateRelated {
		t.Fatalf("server's data SYN after PORT: verdict %v state %v, want accepted RELATED", r.Verdict, r.State)
	}
}
