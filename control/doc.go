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
// batches) and deletes through bridge.DeleteEntries/FlushEntries (served by
// the owners, the single writers). Settings change by publishing a modified
// copy through bridge.Control.Store; concurrent writers are serialised by the
// server's mutex so no change is lost. Each connection is served by its own
// goroutine; none of them is on the packet path.
package control
