package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/control"
	"github.com/statewire/statewire/hasync"
)

// syncFlags are the state-sync flags of `statewire run`.
type syncFlags struct {
	listen, peer, mode, priority string
}

func addSyncFlags(fs *flag.FlagSet) *syncFlags {
	sf := &syncFlags{}
	fs.StringVar(&sf.listen, "sync-listen", "", "state sync with a peer bridge (conntrackd's protocol, UDP): this side's ADDR:PORT on the\n"+
		"sync link's own interface, e.g. 198.19.0.1:3780; with --sync-peer. statewire sync reads\n"+
		"the caches, commits the peer's connections at a failover (-c) and asks for a resync (-n)")
	fs.StringVar(&sf.peer, "sync-peer", "", "the peer's ADDR:PORT (a statewire or a conntrackd); with --sync-listen")
	fs.StringVar(&sf.mode, "sync-mode", hasync.ModeFTFW, "sync link mode, as conntrackd's: ftfw (reliable: sequence numbers, ACK/NACK, resend,\n"+
		"resync when the peer lost too much) or notrack (each message once; recover a loss\n"+
		"with statewire sync -n)")
	fs.StringVar(&sf.priority, "sync-priority", hasync.PriorityIdle, "scheduling priority of the sync's thread (drain, encoding, sends): idle (SCHED_IDLE: only CPU\n"+
		"time the workers leave; what it cannot keep up with is lost in the event rings, counted, and\n"+
		"resent by a walk of the table), nice (nice 19) or normal")
	return sf
}

// start starts the state sync of dp, or returns nil when the flags ask for
// none.
func (sf *syncFlags) start(dp *bridge.Datapath, log *slog.Logger) (*hasync.Service, error) {
	if sf.listen == "" && sf.peer == "" {
		return nil, nil
	}
	if sf.listen == "" || sf.peer == "" {
		return nil, fmt.Errorf("state sync needs both --sync-listen and --sync-peer (ADDR:PORT each)")
	}
	if err := hasync.CheckPriority(sf.priority); err != nil {
		return nil, err
	}
	link, err := hasync.NewLink(sf.mode, sf.listen, sf.peer, log)
	if err != nil {
		return nil, err
	}
	s := hasync.New(hasync.Config{
		Link: link, Filter: hasync.DefaultFilter, Peer: sf.peer,
		Table: dp.Table(), Expect: dp.Table().Expect, Now: dp.Now,
		Events: dp.Control().Events(), Shards: dp.Table().NumShards(),
		Priority: sf.priority, Logger: log, CacheSize: dp.Table().Config().MaxEntries,
	})
	s.Start()
	log.Info("state sync", "listen", sf.listen, "peer", sf.peer, "mode", sf.mode, "priority", sf.priority, "thread", s.ThreadID())
	return s, nil
}

func syncCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cl := addClientFlags(fs)
	var ops = []struct {
		flag, name, help string
		v                *bool
	}{
		{"i", control.SyncInternal, "show the internal cache: the connections this bridge sent its peer", nil},
		{"e", control.SyncExternal, "show the external cache: the connections the peer sent", nil},
		{"c", control.SyncCommit, "commit the external cache into the live table (at a failover, before the ports come up)", nil},
		{"f", control.SyncFlush, "flush the internal and external caches", nil},
		{"n", control.SyncResync, "ask the peer to send its whole internal cache again", nil},
		{"s", control.SyncStats, "show the sync's statistics", nil},
	}
	for i := range ops {
		ops[i].v = fs.Bool(ops[i].flag, false, ops[i].help)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statewire sync [--name NAME] -i | -e | -c | -f | -n | -s\n\n"+
			"Talks to the state sync of a running bridge (statewire run --sync-listen/--sync-peer),\n"+
			"as conntrackd's options do. A failover script (keepalived notify, systemd, link\n"+
			"state) runs `statewire sync -c` on the standby, then brings its ports up.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	name := ""
	for _, o := range ops {
		if *o.v {
			if name != "" {
				fmt.Fprintf(stderr, "statewire sync: one of -i, -e, -c, -f, -n, -s at a time\n\n")
				fs.Usage()
				return errUsage
			}
			name = o.name
		}
	}
	if name == "" || fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	n, err := cl.do(control.Request{Op: control.OpSync, Name: name}, stdout)
	if err != nil {
		return err
	}
	if name == control.SyncFlush {
		fmt.Fprintf(stdout, "flushed %d connections from the caches\n", n)
	}
	return nil
}
