package hasync

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctsync"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/statemachine"
)

// ftpPort opens an FTP control connection through box a and sends PORT
// 198,18,0,1,39,1 (the client's data port 9985) on it: box a's helper
// registers the expectation of the server's data connection.
func (p *pair) ftpPort(t *testing.T) {
	t.Helper()
	p.handshake(t, 40010, 21, 1000, 5000)
	p.a.send(seg{sport: 21, dport: 40010, seq: 5001, ack: 1001, ack_: true, win: 509, payload: "220 hi\r\n", wscale: -1})
	// The helper reads a line only after one it saw end (find_nl_seq).
	p.a.send(seg{fromLeft: true, sport: 40010, dport: 21, seq: 1001, ack: 5009, ack_: true, win: 502, payload: "USER ftp\r\n", wscale: -1})
	port := "PORT 198,18,0,1,39,1\r\n"
	if r := p.a.send(seg{fromLeft: true, sport: 40010, dport: 21, seq: 1011, ack: 5009, ack_: true, win: 502, payload: port, wscale: -1}); r.Verdict != bridge.Accept {
		t.Fatalf("PORT: %v %v", r.Verdict, r.Drop)
	}
	if n := p.a.tb.Expect.Len(); n != 1 {
		t.Fatalf("box a has %d expectations after PORT, want 1", n)
	}
	p.drain()
	p.sa.SyncExpectations()
}

const wantFTPExp = "300 proto=6 src=198.18.0.2 dst=198.18.0.1 sport=0 dport=9985 mask-src=255.255.255.255 mask-dst=255.255.255.255 sport=0 dport=65535 " +
	"master-src=198.18.0.1 master-dst=198.18.0.2 sport=40010 dport=21 class=0 helper=ftp"

// TestFTPExpectationCommitted is the failover of an FTP data connection
// announced before it: the PORT command crosses box a, its expectation
// goes to box b (EXP_NEW, listed as conntrack -L expect lists it); box b
// commits and the server's data connection, opened after the commit
// without any command crossing box b, is RELATED there.
func TestFTPExpectationCommitted(t *testing.T) {
	p := newPair(t)
	p.ftpPort(t)
	if st := p.sa.Stats(); st.ExpSent != 1 || st.ExpInternal != 1 || st.ExpNoMaster != 0 {
		t.Fatalf("box a: %d expectation messages sent, %d in the internal cache, %d without master; want 1, 1, 0", st.ExpSent, st.ExpInternal, st.ExpNoMaster)
	}
	var in, ext []string
	p.sa.Internal(func(l string) { in = append(in, l) })
	p.sb.External(func(l string) { ext = append(ext, l) })
	if len(in) != 2 || in[1] != wantFTPExp {
		t.Errorf("box a's sync -i:\n%s\nwant the control connection, then\n%s", strings.Join(in, "\n"), wantFTPExp)
	}
	if len(ext) != 2 || ext[1] != wantFTPExp {
		t.Fatalf("box b's sync -e:\n%s\nwant the control connection, then\n%s", strings.Join(ext, "\n"), wantFTPExp)
	}
	// Nothing changed: nothing sent again.
	p.sa.SyncExpectations()
	if st := p.sa.Stats(); st.ExpSent != 1 {
		t.Errorf("a second look at an unchanged table sent %d expectation messages in all, want 1", st.ExpSent)
	}

	var res flowtable.CommitResult
	p.b.serve(func() { res, _ = p.sb.Commit(context.Background()) })
	if res.Inserted != 1 || res.Expectations != 1 || res.ExpectFailed != 0 {
		t.Fatalf("commit %+v, want the control connection and its expectation", res)
	}
	r := p.b.send(seg{sport: 20, dport: 9985, seq: 9000, syn: true, win: 64240, wscale: 7})
	if r.Verdict != bridge.Accept || r.State != statemachine.StateRelated {
		t.Fatalf("server's data SYN on box b after the commit: verdict %v drop %v state %v, want accepted RELATED", r.Verdict, r.Drop, r.State)
	}
	// It was used: box b's table has no expectation left.
	if n := p.b.tb.Expect.Len(); n != 0 {
		t.Errorf("box b holds %d expectations after the data connection, want 0", n)
	}
}

// TestFTPExpectationDeleted: the data connection opening on box a (the
// expectation is used) sends EXP_DEL, and box b's external cache forgets
// it; so does the control connection's end.
func TestFTPExpectationDeleted(t *testing.T) {
	p := newPair(t)
	p.ftpPort(t)
	if n := p.sb.Stats().ExpExternal; n != 1 {
		t.Fatalf("box b's external expectations: %d, want 1", n)
	}
	if r := p.a.send(seg{sport: 20, dport: 9985, seq: 9000, syn: true, win: 64240, wscale: 7}); r.State != statemachine.StateRelated {
		t.Fatalf("data SYN on box a: state %v, want RELATED", r.State)
	}
	p.drain()
	p.sa.SyncExpectations()
	if st, sb := p.sa.Stats(), p.sb.Stats(); st.ExpInternal != 0 || sb.ExpExternal != 0 || st.ExpSent != 2 {
		t.Fatalf("after the data connection: a's internal %d, b's external %d, a sent %d expectation messages; want 0, 0, 2",
			st.ExpInternal, sb.ExpExternal, st.ExpSent)
	}
	if got := p.la.types(); got[len(got)-1] != ctsync.TypeExpDel && !containsType(got, ctsync.TypeExpDel) {
		t.Errorf("box a sent %v, want an EXP_DEL", got)
	}

	// A second PORT, then the expectation times out on box a.
	port := "PORT 198,18,0,1,39,2\r\n"
	p.a.send(seg{fromLeft: true, sport: 40010, dport: 21, seq: 1011 + 22, ack: 5009, ack_: true, win: 502, payload: port, wscale: -1})
	p.sa.SyncExpectations()
	if n := p.sb.Stats().ExpExternal; n != 1 {
		t.Fatalf("box b's external expectations after the second PORT: %d, want 1", n)
	}
	p.a.now += 301 * int64(time.Second)
	p.sa.SyncExpectations()
	if n := p.sb.Stats().ExpExternal; n != 0 {
		t.Errorf("box b's external expectations after box a's timed out: %d, want 0", n)
	}
}

// TestExpectationResyncAndFlush: a resync sends the internal expectation
// cache again; flush empties both.
func TestExpectationResyncAndFlush(t *testing.T) {
	p := newPair(t)
	p.ftpPort(t)
	if n := p.sb.Flush(); n != 2 {
		t.Fatalf("flush removed %d, want 2 (a connection and an expectation)", n)
	}
	p.sb.RequestResync()
	if st := p.sb.Stats(); st.External != 1 || st.ExpExternal != 1 {
		t.Fatalf("after the resync box b holds %d connections and %d expectations, want 1 and 1", st.External, st.ExpExternal)
	}
}

// TestExpectationRefused: an expectation box b cannot take exactly (a
// source netmask) is counted, not kept.
func TestExpectationRefused(t *testing.T) {
	p := newPair(t)
	p.ftpPort(t)
	var e ctsync.Exp
	p.sb.mu.Lock()
	for _, c := range p.sb.x.ext["a"] {
		e = c.exp
	}
	p.sb.mu.Unlock()
	e.Expect.DstPort++
	e.Mask.Src = e.Mask.Src.Prev() // 255.255.255.254
	p.sb.Exp(ctsync.TypeExpNew, &e)
	if st := p.sb.Stats(); st.ExpRecvBad != 1 || st.ExpExternal != 1 {
		t.Errorf("refused %d, external %d; want 1 and 1", st.ExpRecvBad, st.ExpExternal)
	}
}

func containsType(ts []ctsync.Type, t ctsync.Type) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// TestSyncExpectationsAllocs: looking at an unchanged expectation table
// (what the drain does every millisecond while an FTP session waits)
// allocates nothing.
func TestSyncExpectationsAllocs(t *testing.T) {
	p := newPair(t)
	p.ftpPort(t)
	if n := testing.AllocsPerRun(100, p.sa.SyncExpectations); n != 0 {
		t.Errorf("SyncExpectations allocates %v times per call with one unchanged expectation, want 0", n)
	}
	if st := p.sa.Stats(); st.ExpSent != 1 {
		t.Errorf("sent %d expectation messages, want 1", st.ExpSent)
	}
}
