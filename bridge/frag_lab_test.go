package bridge

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
	"github.com/statewire/statewire/statemachine"
)

// TestFragmentedDatagramsTwoWorkers runs a real two-worker datapath on
// two-queue veths with the classic policy (NEW only from the left,
// ESTABLISHED and RELATED both ways, the rest dropped) and sends UDP
// datagrams of 4000 bytes (three fragments at MTU 1500) from 32 sockets on
// the left to an echo server on the right, which sends them back, then
// pings with 4000-byte ICMP echoes. About half of the flows belong to the
// worker that did not receive them: their first fragments are handed off,
// and their later fragments must follow. Every datagram must come back, no
// later fragment may be judged without its first fragment's verdict, and
// nothing may be dropped by the rules. Needs root (lab); fails in CI
// without it.
func TestFragmentedDatagramsTwoWorkers(t *testing.T) {
	l := lab.NewT(t, lab.Options{Queues: 2})
	dp := startLabDatapath(t, l, 1024, 4096, newOnlyFromA, false)
	right := lab.RightIPv4.Addr().String()
	if _, ok := l.PingWithin(l.LeftNS, right, 5*time.Second); !ok {
		t.Fatalf("no ping reply through the bridge within 5 s")
	}

	const clients, rounds, size = 32, 10, 4000
	t.Run("udp", func(t *testing.T) {
		var srv *net.UDPConn
		if err := l.Do(l.RightNS, func() (err error) {
			srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(lab.RightIPv4.Addr().AsSlice()), Port: 9000})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		// Bursts of fragmented datagrams must not overflow the echo
		// server's socket on a loaded machine (a host drop, not ours).
		srv.SetReadBuffer(4 << 20)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // echo
			defer wg.Done()
			buf := make([]byte, 65536)
			for {
				n, from, err := srv.ReadFromUDP(buf)
				if err != nil {
					return
				}
				srv.WriteToUDP(buf[:n], from)
			}
		}()
		defer func() { srv.Close(); wg.Wait() }()
		var conns []*net.UDPConn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		if err := l.Do(l.LeftNS, func() error {
			for range clients {
				c, err := net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
				if err != nil {
					return err
				}
				conns = append(conns, c)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		msg := func(client, round int) []byte {
			b := bytes.Repeat([]byte{byte(client)}, size)
			binary.BigEndian.PutUint32(b, uint32(client))
			binary.BigEndian.PutUint32(b[4:], uint32(round))
			return b
		}
		buf := make([]byte, 65536)
		lost := 0
		for round := range rounds {
			// Bursts of group clients: 3*group fragments each way at once.
			const group = 8
			for g := 0; g < clients; g += group {
				for i := g; i < g+group; i++ {
					if _, err := conns[i].Write(msg(i, round)); err != nil {
						t.Fatalf("client %d round %d: send: %v", i, round, err)
					}
				}
				// 2 s for the burst's echoes; once past, the reads left only
				// collect what already came (a run that loses datagrams
				// must not wait 2 s for each).
				deadline := time.Now().Add(2 * time.Second)
				for i := g; i < g+group; i++ {
					if !echoed(t, conns[i], buf, msg(i, round), round, deadline) {
						lost++
						if lost <= 5 {
							t.Errorf("client %d round %d: no echo of the %d-byte datagram", i, round, size)
						}
					}
				}
			}
		}
		if lost > 0 {
			t.Errorf("%d of %d datagrams got no echo, want 0", lost, clients*rounds)
			logHostDrops(t, l)
		}
	})
	t.Run("ping", func(t *testing.T) {
		// Each ping process has its own ICMP id, so its own flow and owner.
		// -w 10: ping sends until 5 replies came (or 10 s passed); -c
		// alone gives up 2 RTTs after the last request, and on a loaded
		// machine a reply forwarded late would count as lost. A lost
		// datagram shows as a gap in the sequence numbers answered.
		for i := range 8 {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			out, err := l.Run(ctx, l.LeftNS, "ping", "-c", "5", "-i", "0.05", "-w", "10", "-s", strconv.Itoa(size), right)
			cancel()
			if got := answered(out); err != nil || got < 5 {
				t.Errorf("ping %d -s %d: got %v, %d replies in sequence, want 5 from icmp_seq=1 without a gap:\n%s", i, size, err, got, out)
				logHostDrops(t, l)
			}
		}
	})

	st := stopLabDatapath(t, l, dp)
	for _, p := range []Port{PortA, PortB} {
		if tot := st.Total(p); tot.Dropped() != 0 {
			t.Errorf("%s->%s: dropped %d (%s), want 0", p, p.Other(), tot.Dropped(), tot.DropList())
		}
	}
	pl := st.Pipeline
	t.Logf("later fragments: given their first fragment's verdict %d, first fragment not seen %d, steered to the first's worker %d",
		pl.FragCached, pl.FragUnknown, st.Frags.Steered)
	if st.Frags.Cached != pl.FragCached || st.Frags.Unknown != pl.FragUnknown || st.Frags.Steered != dp.frags.Steered() {
		t.Errorf("DatapathStats.Frags %+v disagrees with the pipelines (cached %d, unknown %d) or the cache (steered %d)",
			st.Frags, pl.FragCached, pl.FragUnknown, dp.frags.Steered())
	}
	if pl.FragUnknown != 0 {
		t.Errorf("later fragments with no first fragment seen: got %d, want 0", pl.FragUnknown)
	}
	if n := pl.States[stateIndex(statemachine.StateInvalid)]; n != 0 {
		t.Errorf("INVALID packets: got %d, want 0", n)
	}
	if want := uint64(2 * 2 * clients * rounds); pl.FragCached < want {
		t.Errorf("later fragments given their first fragment's verdict: got %d, want at least %d (2 per datagram, both ways)", pl.FragCached, want)
	}
	if st.Frags.Steered == 0 {
		t.Errorf("later fragments steered to their first fragment's worker: got 0, want some (%d flows over 2 workers)", clients)
	}
}

// echoed reads from c until want comes back (echoes of earlier rounds are
// skipped) and reports whether it did by the deadline, or, past it, among
// the datagrams already received.
func echoed(t *testing.T, c *net.UDPConn, buf, want []byte, round int, deadline time.Time) bool {
	t.Helper()
	if now := time.Now(); now.After(deadline) {
		deadline = now.Add(20 * time.Millisecond)
	}
	c.SetReadDeadline(deadline)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return false
		}
		if n >= 8 && binary.BigEndian.Uint32(buf[4:]) < uint32(round) {
			continue // a late echo of an earlier round
		}
		if !bytes.Equal(buf[:n], want) {
			t.Errorf("round %d: echo of %d bytes differs from the %d sent", round, n, len(want))
		}
		return true
	}
}

// logHostDrops logs the hosts' reassembly and socket drop counters, so a
// loss can be told apart: a frame the bridge dropped is in its own
// counters; these are the hosts' own (a full socket buffer on a loaded
// machine).
func logHostDrops(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, ns := range []string{l.LeftNS, l.RightNS} {
		out, err := l.Run(context.Background(), ns, "nstat", "-az", "IpReasm*", "UdpRcvbufErrors", "UdpInErrors", "IcmpInEchoReps", "IcmpInEchos", "IcmpOutEchoReps")
		t.Logf("%s: nstat (err %v):\n%s", ns, err, out)
		// The hosts' veths count what they dropped on receive (a frame the
		// bridge sent that never reached the host's stack).
		out, err = l.Run(context.Background(), ns, "ip", "-s", "link", "show")
		t.Logf("%s: ip -s link (err %v):\n%s", ns, err, out)
	}
}

// answered returns how many of ping's requests, from icmp_seq=1 on and
// without a gap, were answered in its output out.
func answered(out string) int {
	seen := map[int]bool{}
	for _, line := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(line, "icmp_seq="); ok && strings.Contains(line, "bytes from") {
			if f := strings.Fields(rest); len(f) > 0 {
				if n, err := strconv.Atoi(f[0]); err == nil {
					seen[n] = true
				}
			}
		}
	}
	n := 0
	for seen[n+1] {
		n++
	}
	return n
}
