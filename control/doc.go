// Package control is the operator's interface to a running bridge: a unix
// socket (mode 0600, root only) served by a goroutine of `statewire run`, and
// the client the `statewire conntrack`, `sysctl` and `rules` subcommands use.
//
// # Protocol
//
// One request per connection, JSON lines both ways: the client writes one
// Request; the server answers with zero or more Response lines carrying
// output (Line) and ends with one carrying Done (and Count) or Error.
// Event streams (-E) never send Done: the client closes the connection.
//
// # Ownership
//
// The server never touches a flow-table entry: it reads through
// flowtable.Table.Snapshot (copies made by the owning workers between
// batches) and deletes through flowtable.Table.DeleteEntries/FlushEntries
// (served by the owners, the single writers). Settings change by publishing a modified
// copy through bridge.Control.Store; concurrent writers are serialised by the
// server's mutex so no change is lost. Each connection is served by its own
// goroutine; none of them is on the packet path.
//
// # Events
//
// `conntrack -E` is fed by the workers, not by snapshots: while at least one
// -E client is connected (bridge.Events.Subscribe), each worker writes a
// fixed-size bridge.Event into its own SPSC ring when it creates an entry
// ([NEW]), when a packet changes its TCP state or status bits ([UPDATE],
// one per packet, as ctnetlink sends the IPCT_* bits a packet cached), and
// when the entry is removed for any reason ([DESTROY]: expiry, early drop,
// -D, -F, a tracker kill, a reopening SYN). One drain goroutine of the
// server (running while clients are connected) empties the rings every
// millisecond and gives each client the events its filter matches, through
// a buffered channel; the client's goroutine formats them
// (ctlist.EventLine: the kernel's lines, checked against Linux in the lab).
// A full ring or client queue drops events and the client is told how many
// ("WARNING: N events lost"), as conntrack reports ENOBUFS. Events of one
// connection are in order; events of connections on different workers may
// interleave differently from their wall-clock order, as the kernel's
// per-CPU events do.
//
// # Logging INVALID packets
//
// The sysctl nf_conntrack_log_invalid (0 off, 255 all protocols, or one
// protocol number) makes the workers log INVALID packets through the
// server's logger as "nf_ct_proto_N: <reason>" with the tuple, at most 10
// per 5 seconds per worker (the kernel's net_ratelimit) and then by the
// logger's per-message limit. Listen gives the workers the server's logger
// unless bridge.Control already has one.
package control
