// Package hasync keeps two statewire bridges (or a statewire and a Linux
// firewall running conntrackd) in step, as conntrackd does: the
// connections this bridge tracks go to the peer, the peer's go into an
// external cache, and a failover commits that cache into the live table
// (issue 14).
//
// What is sent follows conntrackd's sync mode (src/sync-mode.c) with the
// State filter its documentation recommends (conntrackd.conf: TCP only in
// ESTABLISHED, CLOSE_WAIT, TIME_WAIT and CLOSE; every other protocol's
// events as they come): a NEW or UPDATE event that passes the filter is
// recorded in the internal cache and sent (CT_NEW for a NEW, CT_UPD for an
// UPDATE, which adds a connection the cache did not hold yet, as
// cache_update_force does); a DESTROY of a connection the internal cache
// holds is sent as CT_DEL whatever its state. Received CT_NEW/CT_UPD
// replace the external cache's copy, CT_DEL removes it. A resync request
// from the peer sends the whole internal cache as CT_UPD.
//
// A commit (statewire sync -c) inserts the external cache into the table
// through the owners (flowtable.Table.InsertEntries), as conntrackd -c
// creates its entries through ctnetlink (src/netlink.c
// nl_create_conntrack): the timeout the peer sent, IPS_EXPECTED cleared,
// an existing entry left alone, and, without window scales in the message
// (the peer's TCPWindowTracking off, conntrackd's default), both TCP
// directions BE_LIBERAL (ctd_force_tcp_be_liberal). The window data is not
// in the message: the tracker learns it from the next packet of each
// direction (the kernel's tcp_in_window on a td_maxwin of zero), so the
// first segments after a failover are not INVALID.
//
// Expectations (exp.go) go the same way, as conntrackd's ExpectationSync:
// the table's expectations are compared with the internal expectation
// cache after each drain and sent as EXP_NEW/EXP_DEL; the peer's are kept
// in an external expectation cache and a commit adds them with their
// committed master (flowtable.Commit.Expects). The connection mark
// (NTA_MARK) is sent with every connection and committed with it.
//
// A DESTROY lost to a full event ring would leave its connection cached
// forever; after ring losses the service walks the table and repairs both
// caches (reconcile.go), as conntrackd's NetlinkOverrunResync.
//
// # Ownership
//
// The workers publish events into their rings (bridge.Events); Service is
// one more reader of those rings (bridge.Events.AddReader): its handler
// runs on whichever goroutine drains, under the drain lock, and only
// copies, filters and hands messages to the Link (ctsync's FTFW or NOTRACK
// link), which never blocks. The caches are guarded by Service's mutex;
// the Link's goroutine (which calls the Handler methods) and the control
// server's goroutines take it too. The expectation table is read without
// a lock from the drain goroutine (SyncExpectations). A reconciliation runs
// on the service's thread (the walk waits for the owners) and takes the
// mutex per entry it visits. Nothing here runs on the packet path.
//
// With Events, the service has a thread of its own (runner.go): one
// goroutine locked to an OS thread lowered to Config.Priority (statewire
// run: SCHED_IDLE), which drains the rings every DrainInterval, encodes,
// sends every datagram of the link (ctsync.Link.DeferSends: the link's
// loop only receives), compares the expectations, serves the peer's
// resync requests and runs the reconciliations. It works in the CPU time
// the workers leave; when it cannot keep up, the workers' rings drop
// events and count them (bridge.Events.Lost), and the reconciliation
// repairs what they took: lost, counted, repaired, never silent.
package hasync
