package bridge

import (
	"testing"
	"unsafe"

	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/helpers"
	"github.com/statewire/statewire/packet"
	pt "github.com/statewire/statewire/packet/packettest"
)

// ftpRules attaches the FTP helper to connections to port 21 and lets
// everything through.
const ftpRules = `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp --dport 21 -j CT --helper ftp
COMMIT
*filter
:FORWARD ACCEPT [0:0]
COMMIT
`

// ftpSide is one frame of an FTP control connection between client
// 198.18.0.1 (port A) and server 198.18.0.2:21 (port B).
type ftpSide struct {
	frame  []byte
	in     Port
	client bool // sent by the client: its port is the TCP source
}

// ftpControl builds an FTP control connection from client port cport whose
// client ISN is ciss (so its first data byte is ciss+1): handshake, banner,
// then the client's lines, each answered by the server with a 200 line.
func ftpControl(cport uint16, ciss uint32, lines ...string) []ftpSide {
	const cl, sv = "198.18.0.1", "198.18.0.2"
	const siss = 5000
	c := func(f pt.TCPFields) ftpSide {
		return ftpSide{pt.TCP4(cl, sv, cport, 21, f), PortA, true}
	}
	s := func(f pt.TCPFields) ftpSide {
		return ftpSide{pt.TCP4(sv, cl, 21, cport, f), PortB, false}
	}
	cseq, sseq := ciss+1, uint32(siss+1)
	out := []ftpSide{
		c(pt.TCPFields{Flags: packet.TCPSyn, Seq: ciss, Window: 65535}),
		s(pt.TCPFields{Flags: packet.TCPSyn | packet.TCPAck, Seq: siss, Ack: cseq, Window: 65535}),
		c(pt.TCPFields{Flags: packet.TCPAck, Seq: cseq, Ack: sseq, Window: 65535}),
	}
	say := func(client bool, line string) {
		f := pt.TCPFields{Flags: packet.TCPAck | packet.TCPPsh, Window: 65535, Payload: []byte(line)}
		if client {
			f.Seq, f.Ack = cseq, sseq
			out = append(out, c(f))
			cseq += uint32(len(line))
		} else {
			f.Seq, f.Ack = sseq, cseq
			out = append(out, s(f))
			sseq += uint32(len(line))
		}
	}
	say(false, "220 statewire test\r\n")
	for _, l := range lines {
		say(true, l)
		say(false, "200 ok\r\n")
	}
	return out
}

// setClientPort rewrites the client port of a frame built by ftpControl
// (IPv4 without options: TCP at byte 34). Checksums are left stale.
func setClientPort(f ftpSide, port uint16) {
	off := 34 // source port
	if !f.client {
		off = 36 // destination port
	}
	f.frame[off], f.frame[off+1] = byte(port>>8), byte(port)
}

// TestHelperConnAllocatesNothing: a whole FTP control connection with the
// helper attached, from the SYN to the last command, allocates nothing in
// Process: the helper's per-connection state has its place already.
func TestHelperConnAllocatesNothing(t *testing.T) {
	s := DefaultSettings()
	s.VerifyChecksum = false // client ports are rewritten in place
	s.Rules = loadRules(t, ftpRules)
	pl := newTestPipeline(t, s, 1<<12)
	conn := ftpControl(1024, 100, "USER anonymous\r\n", "PASS x\r\n", "TYPE I\r\n", "NOOP\r\n", "SYST\r\n")
	port := uint16(1024)
	run := func() {
		port++
		for _, f := range conn {
			setClientPort(f, port)
			if r := pl.Process(f.frame, 0, f.in, sec); r.Verdict != Accept {
				t.Fatalf("port %d: verdict got %v/%v, want Accept", port, r.Verdict, r.Drop)
			}
		}
	}
	run() // first use of the pipeline's lazily made parts
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("FTP control connection: %v allocations, want 0", n)
	}
	withHelper := 0
	pl.Shard().Range(func(e *flowtable.Entry) bool {
		if helpers.ID(e.Helper) == helpers.IDFTP {
			withHelper++
		}
		return true
	})
	if withHelper < 100 {
		t.Errorf("entries with the FTP helper: got %d, want ≥ 100 (one per connection)", withHelper)
	}
}

// TestHelperStateFreshOnReuse: the helper state of a connection never
// leaks into the next connection that takes the same entry slot. The
// first connection leaves "a line ends before client seq S" in its state;
// the second, in the reused slot, sends PORT as its first data at seq S.
// The kernel's FTP helper parses only data that starts right after a
// newline it saw, so a fresh state ignores that PORT; a stale one would
// create an expectation.
func TestHelperStateFreshOnReuse(t *testing.T) {
	s := DefaultSettings()
	s.Rules = loadRules(t, ftpRules)
	pl := newTestPipeline(t, s, 1) // one entry slot
	const user = "USER anonymous\r\n"
	first := ftpControl(2000, 100, user)
	for _, f := range first {
		pl.Process(f.frame, 0, f.in, sec)
	}
	var e *flowtable.Entry
	pl.Shard().Range(func(x *flowtable.Entry) bool { e = x; return false })
	if e == nil || helpers.ID(e.Helper) != helpers.IDFTP {
		t.Fatalf("first connection: entry %v, want one with the FTP helper", e)
	}
	ref := pl.Shard().Ref(e)
	pl.Shard().Delete(e)

	// The client's first data byte of the second connection is at
	// 101+len(user): where the first connection's line ended.
	second := ftpControl(2001, 100+uint32(len(user)), "PORT 198,18,0,1,7,208\r\n")
	for i, f := range second {
		if r := pl.Process(f.frame, 0, f.in, 2*sec); r.Verdict != Accept {
			t.Fatalf("second connection, frame %d: verdict got %v/%v, want Accept", i, r.Verdict, r.Drop)
		}
	}
	pl.Shard().Range(func(x *flowtable.Entry) bool { e = x; return false })
	if got := pl.Shard().Ref(e); got.Index != ref.Index || got.Gen == ref.Gen {
		t.Fatalf("second connection: slot %d gen %d, want slot %d reused (gen ≠ %d)", got.Index, got.Gen, ref.Index, ref.Gen)
	}
	if n := pl.Stats().ExpectCreate; n != 0 {
		t.Errorf("expectations created: got %d, want 0 (the PORT did not follow a newline of this connection)", n)
	}

	// Control: the same PORT after a line of its own connection is parsed.
	before := pl.Stats().ExpectCreate
	pl.Shard().Delete(e)
	third := ftpControl(2002, 100, user, "PORT 198,18,0,1,7,208\r\n")
	for _, f := range third {
		pl.Process(f.frame, 0, f.in, 3*sec)
	}
	if n := pl.Stats().ExpectCreate - before; n != 1 {
		t.Errorf("expectations created by a PORT after a newline: got %d, want 1", n)
	}
}

// TestHelperSlotSize holds helperStates to the 24 bytes per entry its doc
// comment and NewPipeline's state.
func TestHelperSlotSize(t *testing.T) {
	if got := unsafe.Sizeof(helperSlot{}); got != 24 {
		t.Errorf("helperSlot: got %d bytes, want 24", got)
	}
}
