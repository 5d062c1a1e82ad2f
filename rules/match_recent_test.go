package rules

import (
	"errors"
	"strings"
	"testing"
)

// TestRecentSaveForm: inputs and what iptables-legacy-save 1.8.9 printed for
// them (iptables-legacy-restore of the same text into a namespace).
func TestRecentSaveForm(t *testing.T) {
	tests := []struct{ in, want string }{
		{"-m recent --set --name foo --rsource", "-m recent --set --name foo --mask 255.255.255.255 --rsource"},
		{"-m recent --rcheck --seconds 60 --hitcount 3 --name foo --rsource --mask 255.255.255.0",
			"-m recent --rcheck --seconds 60 --hitcount 3 --name foo --mask 255.255.255.0 --rsource"},
		{"-m recent --update --seconds 60 --reap --rttl --name bar --rdest",
			"-m recent --update --seconds 60 --reap --rttl --name bar --mask 255.255.255.255 --rdest"},
		{"-m recent ! --remove", "-m recent ! --remove --name DEFAULT --mask 255.255.255.255 --rsource"},
	}
	for _, tc := range tests {
		rs := mustLoad(t, wrap("filter", "-A FORWARD "+tc.in+" -j DROP"), FamilyIPv4)
		if got := saveString(t, rs, FamilyIPv4); !strings.Contains(got, "-A FORWARD "+tc.want+" -j DROP\n") {
			t.Errorf("%q saved as\n%s\nwant %q", tc.in, got, tc.want)
		}
	}
}

// TestRecentRefusals: what iptables-legacy-restore 1.8.9 or the kernel (6.x)
// refused on the same text.
func TestRecentRefusals(t *testing.T) {
	for _, tc := range []struct{ rule, msg string }{
		{"-m recent --set --seconds 5", "--seconds and --hitcount"},
		{"-m recent --rcheck --reap", "--reap needs --seconds"},
		{"-m recent --rcheck --hitcount 65536", "larger than the allowed maximum"},
		{"-m recent --name a/b --set", "bad list name"},
		{"-m recent --rcheck ! --seconds 5", "cannot be inverted"},
		{"-m recent --set --rcheck", "cannot be used with"},
		{"-m recent", "you must specify one of"},
		{"-m recent --set --rttl", "--rttl goes with"},
		{"-m recent --rcheck --seconds 0", "bad --seconds"},
		{"--rcheck", "needs -m recent"},
		{"-m recent --set -m limit", "one -m limit, -m recent or -m connlimit per rule"},
	} {
		_, err := load(t, wrap("filter", "-A FORWARD "+tc.rule), FamilyIPv4)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != 6 || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: got %v, want an error on line 6 containing %q", tc.rule, err, tc.msg)
		}
	}
	for _, ok := range []string{"-m recent --rcheck --hitcount 65535", "-m recent --update --seconds 1 --reap --hitcount 2"} {
		if _, err := load(t, wrap("filter", "-A FORWARD "+ok), FamilyIPv4); err != nil {
			t.Errorf("%q: %v, want it read (the kernel takes it)", ok, err)
		}
	}
}

// TestRecentSSH is the classic brute-force rule pair: the 3rd new
// connection from one source within 60 s is dropped, the list is per
// source (masked to /24 here), and the window slides.
func TestRecentSSH(t *testing.T) {
	rs := mustLoad(t, wrap("filter", strings.Join([]string{
		"-A FORWARD -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m recent --set --name ssh --mask 255.255.255.0 --rsource",
		"-A FORWARD -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m recent --update --seconds 60 --hitcount 3 --name ssh --rsource -j DROP",
		"-A FORWARD -p tcp -m tcp --dport 23 -m recent --remove --name ssh -j DROP",
	}, "\n")), FamilyIPv4)
	at := func(src string, dport uint16, now int64) Action {
		c := Ctx{State: stNew, Now: now}
		v, cacheable := rs.FilterCtx(tcpPkt(src, "10.9.0.1", 40000, dport, syn), &c)
		if cacheable && dport == 22 {
			t.Fatalf("a verdict through -m recent was cacheable")
		}
		return v.Action
	}
	t0 := 100 * sec
	want := []Action{Accept, Accept, Drop, Drop}
	for i, w := range want {
		if a := at("10.0.0.1", 22, t0+int64(i)*sec); a != w {
			t.Errorf("connection %d: got %v, want %v", i+1, a, w)
		}
	}
	// 10.0.0.77 is in the same /24: the list's entry is the network.
	if a := at("10.0.0.77", 22, t0+5*sec); a != Drop {
		t.Errorf("same /24: got %v, want DROP", a)
	}
	if a := at("10.0.1.1", 22, t0+5*sec); a != Accept {
		t.Errorf("another /24: got %v, want ACCEPT", a)
	}
	// Every --update that matched refreshed the times: 60 s after the last
	// one the window is clear.
	if a := at("10.0.0.1", 22, t0+66*sec); a != Accept {
		t.Errorf("after the window: got %v, want ACCEPT", a)
	}
	// --remove takes the address out of the list (and matches).
	if a := at("10.0.1.1", 23, t0+67*sec); a != Drop {
		t.Errorf("--remove of a listed address: got %v, want DROP", a)
	}
	if a := at("10.0.1.1", 23, t0+68*sec); a != Accept {
		t.Errorf("--remove again: got %v, want ACCEPT (no longer listed)", a)
	}
}

// TestRecentLRU: a list holds 100 addresses; the 101st evicts the least
// recently set one.
func TestRecentLRU(t *testing.T) {
	rs := mustLoad(t, wrap("filter", "-A FORWARD -p udp -m udp --dport 1 -m recent --set\n-A FORWARD -p udp -m udp --dport 2 -m recent --rcheck -j DROP"), FamilyIPv4)
	run := func(i int, dport uint16) Action {
		c := Ctx{State: stNew, Now: int64(i) * sec}
		src := "10.1." + string(rune('0'+i/100)) + "." + itoa(i%100+1)
		v, _ := rs.FilterCtx(udpPkt(src, "10.9.0.1", 5, dport), &c)
		return v.Action
	}
	for i := range 101 {
		run(i, 1)
	}
	if a := run(0, 2); a != Accept {
		t.Errorf("the first address after 101 --set: got %v, want ACCEPT (evicted)", a)
	}
	if a := run(1, 2); a != Drop {
		t.Errorf("the second address: got %v, want DROP (listed)", a)
	}
	if a := run(100, 2); a != Drop {
		t.Errorf("the last address: got %v, want DROP (listed)", a)
	}
	p := udpPkt("10.1.0.5", "10.9.0.1", 5, 1)
	c := Ctx{State: stNew, Now: 500 * sec}
	if n := testing.AllocsPerRun(1000, func() { c.Now += sec; rs.FilterCtx(p, &c) }); n != 0 {
		t.Errorf("FilterCtx through -m recent: %v allocs per run, want 0", n)
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
