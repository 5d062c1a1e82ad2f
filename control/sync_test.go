package control

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctsync"
	"github.com/statewire/statewire/hasync"
	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// wireLink hands what one service sends to the other's handler, encoded
// and decoded as on the wire.
type wireLink struct {
	mu   sync.Mutex
	h    hasync.Handler
	peer *wireLink
}

func (l *wireLink) Start(h hasync.Handler) { l.mu.Lock(); l.h = h; l.mu.Unlock() }
func (l *wireLink) handler() hasync.Handler {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.h
}
func (l *wireLink) SendCT(t ctsync.Type, c *ctsync.CT) error {
	b, err := ctsync.AppendCT(nil, ctsync.Header{Type: t}, c, ctsync.Options{})
	if err != nil {
		return err
	}
	m, err := ctsync.Decode(b)
	if err != nil {
		return err
	}
	if h := l.peer.handler(); h != nil {
		h.CT(m[0].Type, m[0].CT)
	}
	return nil
}
func (l *wireLink) SendExp(ctsync.Type, *ctsync.Exp) error { return nil }
func (l *wireLink) RequestResync()                         { l.peer.handler().ResyncRequested() }
func (l *wireLink) Stats() hasync.LinkStats                { return hasync.LinkStats{} }
func (l *wireLink) Close() error                           { return nil }

// TestSync: `statewire sync` on two bridges joined by a state sync, with
// a conntrack -E client on the first: the client gets every event although
// the sync drains the same rings; -i on the first and -e on the second
// list the connection once ESTABLISHED; -c commits it into the second's
// table (conntrack -L shows it), a second -c finds it there; -f flushes;
// a bridge without sync says how to turn it on.
func TestSync(t *testing.T) {
	fa, fb := newFake(t, 2), newFake(t, 2)
	la, lb := &wireLink{}, &wireLink{}
	la.peer, lb.peer = lb, la
	sa := hasync.New(hasync.Config{Link: la, Filter: hasync.DefaultFilter, Peer: "b", Table: fa.T, Now: fa.Now,
		Events: fa.Ctl.Events(), Shards: 2})
	sb := hasync.New(hasync.Config{Link: lb, Filter: hasync.DefaultFilter, Peer: "a", Table: fb.T, Now: fb.Now,
		Events: fb.Ctl.Events(), Shards: 2})
	sa.Start()
	sb.Start()
	defer sa.Close()
	defer sb.Close()
	pa := serve(t, fa, Options{Sync: sa})
	pb := serve(t, fb, Options{Sync: sb})
	ev := eventStream(t, pa, Request{Op: OpEvents, Filter: Filter{Proto: 6}})
	waitListening(t, fa, pa, 1)

	l, r := "198.18.0.1", "198.18.1.1"
	fa.Process(pt.TCP4(l, r, 40000, 80, pt.TCPFields{Flags: packet.TCPSyn, Seq: 1, Window: 65535}), bridge.PortA)
	fa.Process(pt.TCP4(r, l, 80, 40000, pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: 9, Ack: 2, Window: 65535}), bridge.PortB)
	fa.Process(pt.TCP4(l, r, 40000, 80, pt.TCPFields{Flags: packet.TCPAck, Seq: 2, Ack: 10, Window: 65535}), bridge.PortA)
	for i, want := range []string{"[NEW]", "[UPDATE]", "[UPDATE]"} {
		if got := ev(); !strings.Contains(got, want) {
			t.Errorf("-E event %d: %q, want %s", i, got, want)
		}
	}
	tuple := "src=198.18.0.1 dst=198.18.1.1 sport=40000 dport=80 src=198.18.1.1 dst=198.18.0.1 sport=80 dport=40000 [ASSURED]"
	var lines []string
	if !testenv.WaitFor(5*time.Second, func() bool {
		lines, _, _ = call(t, pb, Request{Op: OpSync, Name: SyncExternal})
		return len(lines) == 1
	}) {
		t.Fatalf("sync -e on the second: %q, want one connection", lines)
	}
	if !strings.Contains(lines[0], "ESTABLISHED "+tuple) {
		t.Errorf("sync -e: %q, want the ESTABLISHED connection", lines[0])
	}
	lines, n, err := call(t, pa, Request{Op: OpSync, Name: SyncInternal})
	if err != nil || n != 1 || !strings.Contains(lines[0], tuple) {
		t.Errorf("sync -i on the first: %q, %d, %v; want the connection", lines, n, err)
	}
	lines, n, err = call(t, pb, Request{Op: OpSync, Name: SyncCommit})
	if err != nil || n != 1 || lines[0] != "committed 1 connections (0 already in the table, 0 failed), 0 expectations (0 failed)" {
		t.Fatalf("sync -c: %q, %d, %v", lines, n, err)
	}
	lines, _, _ = call(t, pb, Request{Op: OpList})
	if len(lines) != 1 || !strings.Contains(lines[0], "ESTABLISHED "+tuple) {
		t.Errorf("conntrack -L on the second after the commit: %q", lines)
	}
	if lines, _, _ = call(t, pb, Request{Op: OpSync, Name: SyncCommit}); lines[0] != "committed 0 connections (1 already in the table, 0 failed), 0 expectations (0 failed)" {
		t.Errorf("second sync -c: %q", lines)
	}
	if lines, _, _ = call(t, pb, Request{Op: OpSync, Name: SyncStats}); !strings.Contains(strings.Join(lines, "\n"), "last commit: created 0, existing 1, failed 0") {
		t.Errorf("sync -s: %q", lines)
	}
	// The commit made it the second's own too: in both caches.
	if _, n, err = call(t, pb, Request{Op: OpSync, Name: SyncFlush}); err != nil || n != 2 {
		t.Errorf("sync -f: %d, %v; want 2 flushed (internal and external)", n, err)
	}
	plain := serve(t, newFake(t, 1), Options{})
	if _, _, err := call(t, plain, Request{Op: OpSync, Name: SyncStats}); err == nil || !strings.Contains(err.Error(), "--sync-peer") {
		t.Errorf("sync on a bridge without it: %v, want a hint at --sync-peer", err)
	}
}
