// Package flowtable is the connection table: entries keyed by a canonical
// tuple (both directions of a flow give one Key), hashed with seeded xxhash,
// held in fixed memory allocated once by New, split into shards, with lazy
// and incremental expiry, a maximum size enforced by early drop of
// non-ASSURED entries, and the expectation table the helpers fill.
//
// # Ownership
//
// Shard i belongs to one goroutine, worker i (its owner). Only the owner
// calls Lookup, LookupBatch, Insert, Delete, Expire, Range, Ref, Resolve,
// Len, Stats, ServeRequests, Snapshot and SetRemoveHook on the shard, and
// only the owner touches an *Entry of the shard. No shard method takes a
// lock or waits for another goroutine.
//
// Other goroutines read and delete through the owner. Each shard has a
// mailbox of two atomic pointers: Table.Snapshot posts a read request,
// Table.DeleteEntries and Table.FlushEntries (conntrack -D, -F) post a
// delete or flush request, and each waits. The owner, between batches,
// calls ServeRequests, which serves a delete or flush whole and copies a
// bounded number of entries into a read request's buffer, then signals on
// a channel with room for the signal. The channel hand-off orders the
// owner's writes before the poster's reads, so the exchange is race-free
// without the owner ever waiting; with nothing posted the call costs one
// atomic load. ServeRequests also publishes the shard's counters into
// atomics, read by Table.Stats and Table.Len from any goroutine. A
// Snapshot or a delete therefore completes only while the workers run; when
// they do not (replay, tests, after shutdown) the single goroutine that
// drives the table uses Shard.Range and Shard.Delete directly. The mailbox
// belongs to the table: two tables share nothing, and a dropped table is
// garbage like any value.
//
// A remove hook (SetRemoveHook, for conntrack -E [DESTROY] events) runs on
// the owner inside whichever call removes the entry; it is nil, and costs
// one branch per removal, while nobody listens. An expiry hook
// (SetExpiryHook, for entries offered to the XDP fast path) is asked for
// the live Expires of an offloaded entry before any expiry removes it, and
// a snapshot hook (SetSnapshotHook) writes the fast path's live values into
// every copy of an offloaded entry (EntrySnapshot.Offloaded), for listings;
// neither runs for entries that are not offloaded.
//
// Table.HashKey, Table.ShardFor, Table.Config and everything on
// Expectations are safe from any goroutine. Expectations are shared by all
// shards because an expected connection may land on any of them: lookups
// read an immutable slice through one atomic pointer; the rare writers
// copy it under a mutex that lookups never take.
//
// # State file
//
// Open makes a table whose entry slots, aux slots (Config.AuxSize, Table.Aux),
// counters and expectations live in a file mapped MAP_SHARED (store.go), so
// that the next process adopts them after a graceful Close or a crash. The
// ownership rules are the same: the mapping is memory like any other, and
// the adoption (chains and free lists rebuilt from the slots, expired
// entries dropped) and ResumeOffloaded run in Open and before any owner
// starts. An adopted entry forgets its cached verdicts (their rule-set
// generations were the earlier process's). A datapath that adopted the
// fast path's map with the table settles the offloaded entries one by one
// instead of with ResumeOffloaded (Entry.ResumeOffloaded for those whose
// flow the map lost; bridge adoptFastPath). The expectations are mirrored
// into the file under their mutex on every change. Close, after every owner
// stopped, marks the file clean and unmaps it.
//
// # Per batch
//
// A worker, per batch: for each packet Key.SetOf (of the quoted packet for an
// ICMP error) and Table.HashKey into arrays, then one Shard.LookupBatch
// (it overlaps the cache misses of large shards); per packet Entry.DirOf
// (Entry.InnerDir for an error); on a miss Table.Expect.Match, then
// Shard.Insert with the packet's Tuple and setting Conn.Expires; Shard.Delete
// when the state machine kills the entry. After the batch, with the batch's
// now: Shard.Expire(now, budget), Table.Expect.Expire(now),
// Shard.ServeRequests(budget).
package flowtable
