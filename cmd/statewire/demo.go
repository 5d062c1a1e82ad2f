package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctlist"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/lab"
)

func demoCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	df := addDatapathFlags(fs, false)
	cf := addConntrackFlags(fs, true)
	size := fs.Int("tcp-bytes", 10<<20, "bytes of the TCP transfer")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statewire demo [flags]\n\n"+
			"Builds a lab (left host, bridge namespace with port A and port B, right host,\n"+
			"joined by veth pairs), runs the AF_XDP datapath in the bridge namespace, drives\n"+
			"traffic through it (ping both ways, a TCP transfer checked with SHA-256, UDP),\n"+
			"prints the live table in the /proc/net/nf_conntrack format and the throughput,\n"+
			"then stops the datapath and removes the lab. Needs root.\n\n"+
			"Example:\n  sudo statewire demo --cores 2\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if removed, err := lab.RemoveStale(); err == nil && len(removed) > 0 {
		fmt.Fprintf(stdout, "removed leftovers of earlier labs: %s\n", strings.Join(removed, " "))
	}
	queues := df.queues
	if queues == 0 {
		queues = df.cores
	}
	l, err := lab.New(ctx, lab.Options{Queues: queues})
	if err != nil {
		return fmt.Errorf("build lab (needs root): %w", err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			fmt.Fprintf(stderr, "statewire demo: removing the lab: %v\n", err)
		}
	}()
	fmt.Fprintf(stdout, "lab %s: %s %s | %s [%s] %s | %s %s\n", l.Prefix,
		l.LeftIf, lab.LeftIPv4, l.PortA, l.BridgeNS, l.PortB, l.RightIf, lab.RightIPv4)

	df.portA, df.portB = l.PortA, l.PortB
	cfg, err := df.config()
	if err != nil {
		return err
	}
	settings, tcfg, err := cf.settings([2]string{l.PortA, l.PortB})
	if err != nil {
		return err
	}
	cfg.Settings, cfg.Table = settings, tcfg
	cfg.Logf = func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }
	dp, err := bridge.NewDatapath(cfg)
	if err != nil {
		return err
	}
	if err := l.Do(l.BridgeNS, dp.Start); err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			dp.Stop()
		}
	}()

	left, right := lab.LeftIPv4.Addr().String(), lab.RightIPv4.Addr().String()
	for _, p := range []struct{ ns, to, name string }{{l.LeftNS, right, "left -> right"}, {l.RightNS, left, "right -> left"}} {
		out, err := l.Run(ctx, p.ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", p.to)
		if err != nil {
			return fmt.Errorf("ping %s: %w", p.name, err)
		}
		fmt.Fprintf(stdout, "ping %s: %s\n", p.name, pingSummary(out))
	}
	before := dp.Stats()
	t0 := time.Now()
	if err := tcpTransfer(ctx, l, *size); err != nil {
		return fmt.Errorf("TCP transfer: %w", err)
	}
	dt := time.Since(t0)
	after := dp.Stats()
	fmt.Fprintf(stdout, "TCP: %d bytes left -> right in %v, SHA-256 matches: %.1f Mbit/s, %.0f frames/s through the bridge\n",
		*size, dt.Round(time.Millisecond), float64(*size)*8/dt.Seconds()/1e6,
		float64(after.Total(bridge.PortA).RX+after.Total(bridge.PortB).RX-
			before.Total(bridge.PortA).RX-before.Total(bridge.PortB).RX)/dt.Seconds())
	n, err := udpExchange(ctx, l, 20)
	if err != nil {
		return fmt.Errorf("UDP exchange: %w", err)
	}
	fmt.Fprintf(stdout, "UDP: %d datagrams echoed right -> left\n", n)

	var lines []string
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	err = dp.Table().Snapshot(sctx, func(es *flowtable.EntrySnapshot) {
		lines = append(lines, ctlist.Line(es, dp.Now(), ctlist.Proc))
	})
	scancel()
	if err != nil {
		return fmt.Errorf("table snapshot: %w", err)
	}
	sort.Strings(lines)
	fmt.Fprintf(stdout, "\n# /proc/net/nf_conntrack (%d entries)\n%s\n\n", len(lines), strings.Join(lines, "\n"))

	st, err := dp.Stop()
	stopped = true
	printTotals(stdout, &st)
	if cerr := st.CheckConservation(); cerr != nil {
		return fmt.Errorf("frame accounting: %w", cerr)
	}
	fmt.Fprintln(stdout, "frame accounting balances in both directions; removing the lab")
	return err
}

// pingSummary returns ping's packet-loss line.
func pingSummary(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "packets transmitted") {
			return strings.TrimSpace(line)
		}
	}
	return strings.TrimSpace(out)
}

// tcpTransfer sends size random bytes from the left host to the right host
// and checks that what arrived has the same SHA-256.
func tcpTransfer(ctx context.Context, l *lab.Lab, size int) error {
	data := make([]byte, size)
	rand.Read(data)
	addr := net.JoinHostPort(lab.RightIPv4.Addr().String(), "5001")
	tr, err := l.TransferTCP(ctx, l.LeftNS, l.RightNS, addr, data)
	switch {
	case err != nil:
		return err
	case tr.N != int64(size):
		return fmt.Errorf("right host got %d bytes, want %d", tr.N, size)
	case tr.Got != tr.Sent:
		return errors.New("SHA-256 of the received bytes differs from the sent ones")
	}
	return nil
}

// udpExchange sends n datagrams from the left host to an echo socket on the
// right host and returns how many echoes came back.
func udpExchange(ctx context.Context, l *lab.Lab, n int) (int, error) {
	addr := &net.UDPAddr{IP: lab.RightIPv4.Addr().AsSlice(), Port: 5002}
	var srv, cli *net.UDPConn
	if err := l.Do(l.RightNS, func() (err error) {
		srv, err = net.ListenUDP("udp4", addr)
		return err
	}); err != nil {
		return 0, err
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			srv.WriteToUDP(buf[:k], from)
		}
	}()
	if err := l.Do(l.LeftNS, func() (err error) {
		cli, err = net.DialUDP("udp4", nil, addr)
		return err
	}); err != nil {
		return 0, err
	}
	defer cli.Close()
	echoed := 0
	buf := make([]byte, 2048)
	for i := range n {
		msg := fmt.Sprintf("statewire udp %d", i)
		if _, err := cli.Write([]byte(msg)); err != nil {
			return echoed, err
		}
		cli.SetReadDeadline(time.Now().Add(time.Second))
		k, err := cli.Read(buf)
		if err == nil && string(buf[:k]) == msg {
			echoed++
		}
		if ctx.Err() != nil {
			return echoed, ctx.Err()
		}
	}
	if echoed != n {
		return echoed, fmt.Errorf("%d of %d datagrams echoed", echoed, n)
	}
	return echoed, nil
}
