package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctlist"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/replay"
	"github.com/statewire/statewire/statemachine"
)

func replayCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cf := addConntrackFlags(fs, false)
	noTS := fs.Bool("no-timestamps", false, "replay every packet at the same instant (no timeout expires)")
	format := fs.String("format", "text", "output format: text or json")
	quiet := fs.Bool("q", false, "print only the final table, not a line per packet")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statewire replay [flags] FILE.pcap|FILE.pcapng\n\n"+
			"Runs every packet of a capture through the conntrack pipeline and prints, per\n"+
			"packet: number, ingress port, direction, user-land state, TCP state, verdict and\n"+
			"drop reason; then the table in the /proc/net/nf_conntrack format and the\n"+
			"expectations in the /proc/net/nf_conntrack_expect format.\n\n"+
			"Example:\n  statewire replay --checksum=false --rules fw.rules capture.pcap\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("--format must be text or json, got %q", *format)
	}
	settings, tcfg, err := cf.settings([2]string{"A", "B"})
	if err != nil {
		return err
	}
	frames, err := replay.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	rp, err := replay.New(replay.Options{Settings: settings, Table: tcfg, NoTimestamps: *noTS})
	if err != nil {
		return err
	}
	var pkts []packetJSON
	for _, f := range frames {
		pk := rp.Step(f)
		switch {
		case *format == "json":
			pkts = append(pkts, toPacketJSON(pk))
		case !*quiet:
			fmt.Fprintln(stdout, packetLine(pk))
		}
	}
	entries := rp.Entries()
	sort.Slice(entries, func(i, j int) bool { return entries[i].Orig.String() < entries[j].Orig.String() })
	now := rp.Now()
	var exps []flowtable.Expect
	rp.Table.Expect.Range(func(x flowtable.Expect) bool {
		if x.Expires > now {
			exps = append(exps, x)
		}
		return true
	})
	st := rp.Pipeline.Stats()
	if *format == "json" {
		out := replayJSON{Packets: pkts, Stats: statsJSON(st)}
		for i := range entries {
			out.Table = append(out.Table, ctlist.JSON(&entries[i], now))
		}
		for i := range exps {
			out.Expect = append(out.Expect, ctlist.ExpectLine(&exps[i], now))
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(stdout, "\n# /proc/net/nf_conntrack (%d entries)\n", len(entries))
	for i := range entries {
		fmt.Fprintln(stdout, ctlist.Line(&entries[i], now, ctlist.Proc))
	}
	fmt.Fprintf(stdout, "\n# /proc/net/nf_conntrack_expect (%d expectations)\n", len(exps))
	for i := range exps {
		fmt.Fprintln(stdout, ctlist.ExpectLine(&exps[i], now))
	}
	fmt.Fprintf(stdout, "\n# %d packets: %d accepted, %d dropped; states:", len(frames), st.Accepted, st.Dropped())
	for i, n := range st.States {
		if n > 0 {
			fmt.Fprintf(stdout, " %s=%d", bridge.StateNames[i], n)
		}
	}
	fmt.Fprintln(stdout)
	return nil
}

func dirName(d statemachine.Dir) string {
	if d == statemachine.Reply {
		return "reply"
	}
	return "original"
}

func stateName(r *bridge.Result) string {
	if r.State == 0 {
		return "-"
	}
	return r.State.String()
}

func tcpStateName(r *bridge.Result) string {
	if !r.Tracked || r.TCPState == statemachine.TCPNone {
		return "-"
	}
	return r.TCPState.String()
}

func reasonName(r *bridge.Result) string {
	switch {
	case r.Verdict == bridge.Drop && r.Drop == bridge.DropMalformed:
		return r.Drop.String() + ":" + r.Parse.String()
	case r.Verdict == bridge.Drop:
		return r.Drop.String()
	case r.State == statemachine.StateInvalid && r.Invalid != statemachine.ReasonNone:
		return "invalid:" + r.Invalid.String()
	case r.State == statemachine.StateInvalid && r.Parse != 0:
		return "invalid:" + r.Parse.String()
	}
	return "-"
}

func packetLine(pk replay.Packet) string {
	r := &pk.Result
	dir := "-"
	if r.State != 0 && r.State != statemachine.StateInvalid && r.State != statemachine.StateUntracked {
		dir = dirName(r.Dir)
	}
	return fmt.Sprintf("%d\t%s>%s\t%s\t%s\t%s\t%s\t%s", pk.Num, pk.Port, pk.Port.Other(), dir,
		stateName(r), tcpStateName(r), r.Verdict, reasonName(r))
}

type packetJSON struct {
	Num      int    `json:"num"`
	Ingress  string `json:"ingress"`
	Dir      string `json:"dir,omitempty"`
	State    string `json:"state"`
	TCPState string `json:"tcp_state,omitempty"`
	Verdict  string `json:"verdict"`
	Reason   string `json:"reason,omitempty"`
}

func toPacketJSON(pk replay.Packet) packetJSON {
	r := &pk.Result
	j := packetJSON{Num: pk.Num, Ingress: pk.Port.String(), State: stateName(r), Verdict: r.Verdict.String()}
	if r.Tracked {
		j.Dir = dirName(r.Dir)
	}
	if s := tcpStateName(r); s != "-" {
		j.TCPState = s
	}
	if s := reasonName(r); s != "-" {
		j.Reason = s
	}
	return j
}

type replayJSON struct {
	Packets []packetJSON       `json:"packets"`
	Table   []ctlist.EntryJSON `json:"table"`
	Expect  []string           `json:"expectations"`
	Stats   map[string]uint64  `json:"stats"`
}

func statsJSON(st *bridge.Stats) map[string]uint64 {
	m := map[string]uint64{
		"accepted": st.Accepted, "invalid": st.Invalid, "ignore": st.Ignore,
		"icmp_error": st.ICMPError, "expect_new": st.ExpectNew,
	}
	for i, n := range st.Drops {
		if n > 0 {
			m["drop_"+bridge.DropReason(i).String()] = n
		}
	}
	for i, n := range st.States {
		if n > 0 {
			m["state_"+bridge.StateNames[i]] = n
		}
	}
	_ = os.Stdout
	return m
}
