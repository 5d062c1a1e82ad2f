package ctsync

// DeferSends makes the caller's goroutine the link's only sender: from
// then on SendCT, SendExp, RequestResync and the link's own messages
// (ACK, NACK, ALIVE, HELLO_BACK, resends after a NACK) are queued, owner
// is called (it must not block: a wake-up) instead of the link's loop
// sending them, and they go out when the owner calls Flush. A caller that
// runs its goroutine at a low priority (hasync: SCHED_IDLE) thus keeps the
// encoding and the sendmsg calls of a connection flood off the CPU time
// of everything else; the loop still receives, decodes and calls the
// Handler. DeferSends must be called before Start.
func (l *Link) DeferSends(owner func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		l.owner = owner
	}
}

// Flush sends everything queued, as datagrams packed up to the MTU, from
// the calling goroutine. It allocates nothing. Any goroutine may call it;
// sends are serialised.
func (l *Link) Flush() {
	l.sendMu.Lock()
	if l.obuf == nil {
		l.obuf = make([]byte, 0, l.cfg.MTU)
	}
	l.flush(&l.obuf)
	l.sendMu.Unlock()
}

// send is the loop's turn after each event: it sends what is queued, or,
// with an owner (DeferSends), asks the owner to.
func (l *Link) send(out *[]byte) {
	if l.owner == nil {
		l.sendMu.Lock()
		l.flush(out)
		l.sendMu.Unlock()
		return
	}
	l.mu.Lock()
	queued := l.f.tx.n > 0
	l.mu.Unlock()
	if queued {
		l.owner()
	}
}
