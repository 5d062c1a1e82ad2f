package flowtable

// The connection mark (ct->mark: CONNMARK, -m connmark, mark= in
// listings) is kept beside the entries, not in them: Entry is exactly two
// cache lines (128 bytes) with no padding left, and most rule sets never
// set a mark. A shard allocates its marks, 4 bytes per entry slot, the
// first time a non-zero mark is set; until then reading a mark costs a nil
// check. A rule set that uses connmark touches one more cache line per
// evaluated packet (the slot's mark). Marks live on the heap, not in the
// state file: a restart with --state-file keeps the connections but their
// marks restart at 0.

// ConnMark returns the connection mark of live entry e. Owner only.
func (s *Shard) ConnMark(e *Entry) uint32 {
	if s.marks == nil {
		return 0
	}
	if i := entryIndex(s.entries, e); i >= 0 {
		return s.marks[i]
	}
	return 0
}

// SetConnMark sets the connection mark of live entry e. The first
// non-zero mark of a shard allocates the shard's marks (once). Owner only.
func (s *Shard) SetConnMark(e *Entry, m uint32) {
	if s.marks == nil {
		if m == 0 {
			return
		}
		s.marks = make([]uint32, len(s.entries))
	}
	if i := entryIndex(s.entries, e); i >= 0 {
		s.marks[i] = m
	}
}
