package bridge

// owner returns the worker owning the flow of frame: the shard of its
// key (of the quoted connection for an ICMP error), or w itself for
// frames without a key. It parses frame in slot 0 of w's pipeline batch,
// as rxBatch does, and records nothing (route does, for fragments).
func (w *worker) owner(frame []byte) int {
	w.pl.prepare(0, frame, w.pl.parseOptions())
	if _, _, hash, ok := w.pl.prepared(0); ok {
		return w.table.ShardFor(hash)
	}
	return w.id
}

// route is steer for one frame received at now, parsed in slot 0 of w's
// pipeline batch.
func (w *worker) route(frame []byte, now int64) (o int, steered bool) {
	w.pl.prepare(0, frame, w.pl.parseOptions())
	return w.steer(0, now)
}
