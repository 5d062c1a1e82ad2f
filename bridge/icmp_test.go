package bridge

import (
	"fmt"
	"testing"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
	"github.com/statewire/statewire/statemachine"
)

// icmpTypeFrame builds an ICMP (v 4) or ICMPv6 (v 6) message of type typ
// from a router to the client, quoting the client's packet flow (a frame):
// an error that quotes it when typ is one. A request or reply carries
// identifier 0x4242; the ICMPv6 redirect is a valid one (link-local
// source, hop limit 255, the quote in a redirected-header option).
func icmpTypeFrame(v, typ uint8, flow []byte) []byte {
	const rest = 0x4242<<16 | 1
	if v == 4 {
		return pt.ICMP4("198.18.0.254", "198.18.0.1", typ, 0, rest, pt.Quote(flow, 28))
	}
	if typ == 137 {
		return pt.Redirect6("fe80::fe", "2001:2::1", "fe80::2", "2001:2::2", pt.Quote(flow, 0))
	}
	return pt.ICMP6("2001:2::fe", "2001:2::1", typ, 0, rest, pt.Quote(flow, 0))
}

// wantICMPState is the state the pipeline must give a message of kind k
// about a tracked flow (spec §4): a request starts a connection, a reply
// without one is INVALID, an error or redirect is RELATED to the quoted
// flow, ND and MLD are UNTRACKED, anything else INVALID.
func wantICMPState(k packet.ICMPKind) statemachine.CtState {
	switch k {
	case packet.ICMPRequest:
		return statemachine.StateNew
	case packet.ICMPError, packet.ICMPRedirect:
		return statemachine.StateRelated
	case packet.ICMPUntracked:
		return statemachine.StateUntracked
	}
	return statemachine.StateInvalid
}

// TestICMPTypesAgree sends a message of every ICMP and ICMPv6 type quoting
// a tracked UDP flow and checks that every package acts on the one
// classification (packet.ICMPClass, checked against the kernel's tables in
// package packet): the parser quotes exactly the errors, flowtable.KeyOf
// gives the quoted flow's key for them and a key of their own to requests
// and replies, the worker steers an error to the quoted flow's owner, the
// tracker starts a connection from requests alone, and the pipeline (one
// frame at a time and in a batch) gives the state of the kind.
func TestICMPTypesAgree(t *testing.T) {
	c := validConfig()
	c.Cores, c.Queues = 4, 4
	dp, err := NewDatapath(c)
	if err != nil {
		t.Fatal(err)
	}
	w := dp.workers[0]
	cfg := statemachine.DefaultConfig()
	for _, v := range []uint8{4, 6} {
		flow := pt.UDP4("198.18.0.1", "198.18.0.2", 5000, 6000, []byte("q"))
		if v == 6 {
			flow = pt.UDP6("2001:2::1", "2001:2::2", 5000, 6000, []byte("q"))
		}
		var fp packet.Packet
		packet.Parse(flow, 0, packet.Options{}, &fp)
		flowKey, _ := flowtable.KeyOf(&fp)
		single, batch := newTestPipeline(t, nil, 1024), newTestPipeline(t, nil, 1024)
		single.Process(flow, 0, PortA, sec)
		batch.ProcessBatch([][]byte{flow}, PortA, sec, make([]Result, 1))
		for i := 0; i < 256; i++ {
			typ := uint8(i)
			kind := packet.ICMPClass(v, typ)
			name := fmt.Sprintf("v%d type %d (%v)", v, typ, kind)
			f := icmpTypeFrame(v, typ, flow)

			var p packet.Packet
			if r := packet.Parse(f, 0, packet.Options{VerifyChecksum: true}, &p); r != packet.ReasonOK {
				t.Fatalf("%s: parse got %v, want ok", name, r)
			}
			isErr := kind == packet.ICMPError || kind == packet.ICMPRedirect
			if p.IsICMPError() != isErr || p.HasInner != isErr {
				t.Errorf("%s: IsICMPError %v, HasInner %v, want %v", name, p.IsICMPError(), p.HasInner, isErr)
			}

			k, ok := flowtable.KeyOf(&p)
			switch {
			case isErr && (!ok || k != flowKey):
				t.Errorf("%s: KeyOf got %+v, %v, want the quoted flow's key", name, k, ok)
			case !isErr && ok != (kind == packet.ICMPRequest || kind == packet.ICMPReply):
				t.Errorf("%s: KeyOf ok got %v, want %v", name, ok, !ok)
			}
			if isErr && w.owner(f) != w.owner(flow) {
				t.Errorf("%s: steered to worker %d, want %d (the quoted flow's)", name, w.owner(f), w.owner(flow))
			}

			if !isErr && kind != packet.ICMPUntracked {
				var conn statemachine.Conn
				res := statemachine.New(&conn, &p, sec, &cfg)
				if (res.State != statemachine.StateInvalid) != (kind == packet.ICMPRequest) {
					t.Errorf("%s: statemachine.New got %v, want a connection only from a request", name, res.State)
				}
			}

			want := wantICMPState(kind)
			if r := single.Process(f, 0, PortB, sec); r.State != want {
				t.Errorf("%s: Process state got %v, want %v", name, r.State, want)
			}
			out := make([]Result, 1)
			batch.ProcessBatch([][]byte{f}, PortB, sec, out)
			if out[0].State != want {
				t.Errorf("%s: ProcessBatch state got %v, want %v", name, out[0].State, want)
			}
		}
	}
}

// TestICMPv6ErrorTypesRelated: an ICMPv6 error of every type below 128 (not
// only the assigned 1-4) quoting a tracked UDP flow is RELATED, in either
// direction, as the kernel has it (nf_conntrack_icmpv6_error); addressed
// to a third party or quoting an unknown flow it is INVALID. From 128 up
// only the redirect quotes anything: the others keep their own handling.
func TestICMPv6ErrorTypesRelated(t *testing.T) {
	const cli, srv, rtr = "2001:2::1", "2001:2::2", "2001:2::fe"
	pl := newTestPipeline(t, nil, 1024)
	fwd := pt.UDP6(cli, srv, 5000, 6000, []byte("q"))
	rev := pt.UDP6(srv, cli, 6000, 5000, []byte("a"))
	stray := pt.UDP6(cli, srv, 5001, 6000, []byte("q"))
	runSteps(t, pl, []step{
		{"udp", fwd, PortA, 0, statemachine.StateNew, 0, Accept, DropNone},
		{"udp reply", rev, PortB, 0, statemachine.StateEstablished, 0, Accept, DropNone},
	})
	var steps []step
	for typ := 0; typ < 128; typ++ {
		e := func(dst string, q []byte) []byte { return pt.ICMP6(rtr, dst, uint8(typ), 0, 0, pt.Quote(q, 0)) }
		steps = append(steps,
			step{fmt.Sprintf("type %d to the client", typ), e(cli, fwd), PortB, 1, statemachine.StateRelated, 0, Accept, DropNone},
			step{fmt.Sprintf("type %d to the server", typ), e(srv, rev), PortA, 1, statemachine.StateRelated, 0, Accept, DropNone},
			step{fmt.Sprintf("type %d to a third party", typ), e("2001:2::7", fwd), PortB, 1, statemachine.StateInvalid, 0, Accept, DropNone},
			step{fmt.Sprintf("type %d quoting an unknown flow", typ), e(cli, stray), PortB, 1, statemachine.StateInvalid, 0, Accept, DropNone},
		)
	}
	quoting := func(typ uint8, rest uint32) []byte { return pt.ICMP6(cli, srv, typ, 0, rest, pt.Quote(fwd, 0)) }
	steps = append(steps,
		step{"echo reply without a request", quoting(129, 7<<16|1), PortA, 1, statemachine.StateInvalid, 0, Accept, DropNone},
		step{"node information reply without a query", quoting(140, 7<<16|1), PortA, 1, statemachine.StateInvalid, 0, Accept, DropNone},
		step{"neighbour solicitation", quoting(135, 0), PortA, 1, statemachine.StateUntracked, 0, Accept, DropNone},
		step{"multicast router solicitation", quoting(152, 0), PortA, 1, statemachine.StateUntracked, 0, Accept, DropNone},
		step{"router renumbering", quoting(138, 0), PortA, 1, statemachine.StateInvalid, 0, Accept, DropNone},
		step{"type 255", quoting(255, 0), PortA, 1, statemachine.StateInvalid, 0, Accept, DropNone},
		step{"redirect", pt.Redirect6("fe80::fe", cli, "fe80::2", srv, pt.Quote(fwd, 0)), PortB, 1, statemachine.StateRelated, 0, Accept, DropNone},
		step{"redirect from a global address", pt.Redirect6(rtr, cli, "fe80::2", srv, pt.Quote(fwd, 0)), PortB, 1, statemachine.StateInvalid, 0, Accept, DropNone},
		step{"echo request", quoting(128, 7<<16|1), PortA, 1, statemachine.StateNew, 0, Accept, DropNone},
	)
	runSteps(t, pl, steps)
	if n := pl.Shard().Len(); n != 2 {
		t.Errorf("table holds %d entries, want 2 (the UDP flow and the echo): errors make none", n)
	}
	unassigned := pt.ICMP6(rtr, cli, 100, 0, 0, pt.Quote(fwd, 0))
	if n := testing.AllocsPerRun(200, func() { pl.Process(unassigned, 0, PortB, 2*sec) }); n != 0 {
		t.Errorf("ICMPv6 type 100 error: %v allocations per packet, want 0", n)
	}
}
