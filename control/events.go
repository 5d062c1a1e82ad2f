package control

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctlist"
)

// Events (conntrack -E) come from the workers: each writes a fixed-size
// record into its own ring (bridge.Events) when it creates an entry,
// changes its TCP state or status bits, or removes it, but only while at
// least one -E client is connected. One drain goroutine per server, running
// while there are clients, empties the rings every drainInterval and hands
// each event to every client whose filter matches, through a buffered
// channel; the client's own goroutine formats and writes. Nothing waits on
// a slow reader: a full ring (workers) or a full client channel (server)
// drops the event and counts it, and the client is told how many it lost,
// as the kernel's conntrack prints on ENOBUFS.

// drainInterval is how often the rings are emptied while clients listen.
// A ring holds bridge.EventRingSize events per worker: at this interval
// that is 4 M events per second per worker before one is lost.
const drainInterval = time.Millisecond

// clientEventBuf is how many events a client may lag behind.
const clientEventBuf = 8192

// evClient is one -E connection.
type evClient struct {
	m    *matcher
	ch   chan bridge.Event
	lost uint64 // events dropped for this client; under evHub.mu
}

// evHub fans events out to the -E clients of a server.
//
// Lock order: life (join/leave: a first client's subscription, a last
// client's teardown) is never held with mu by the same goroutine while it
// takes the rings' drain lock; fanOut takes mu under the drain lock, which
// a drain by another reader (the state sync) may hold at any time.
type evHub struct {
	life     sync.Mutex // serialises join and leave
	mu       sync.Mutex
	clients  map[*evClient]struct{}
	ringLost uint64 // bridge.Events.Lost at the last drain; under mu
	remove   func() // the fan-out's bridge.Events.AddReader registration; under life
	stop     chan struct{}
	done     chan struct{}
}

// join adds c, subscribing to the workers' events and starting the drain
// goroutine for the first client.
func (s *Server) join(c *evClient) {
	h := &s.hub
	h.life.Lock()
	defer h.life.Unlock()
	h.mu.Lock()
	if h.clients == nil {
		h.clients = map[*evClient]struct{}{}
	}
	h.clients[c] = struct{}{}
	first := len(h.clients) == 1
	h.mu.Unlock()
	if !first {
		return
	}
	ev := s.b.Control().Events()
	ev.Subscribe(s.b.Table().NumShards())
	// Events left in the rings from an earlier listener are stale.
	// (Readers registered by others, the state sync, still get them.)
	ev.Drain(make([]bridge.Event, 256), func([]bridge.Event) {})
	h.mu.Lock()
	h.ringLost = ev.Lost()
	h.mu.Unlock()
	// The fan-out is a reader of the rings rather than the drain's own fn,
	// so that the events another reader's drain pops reach the clients too.
	h.remove = ev.AddReader(s.fanOut)
	h.stop, h.done = make(chan struct{}), make(chan struct{})
	go s.drainEvents(h.stop, h.done)
}

// leave removes c; the last client stops the drain goroutine and the
// workers' event production.
func (s *Server) leave(c *evClient) {
	h := &s.hub
	h.life.Lock()
	defer h.life.Unlock()
	h.mu.Lock()
	delete(h.clients, c)
	last := len(h.clients) == 0
	h.mu.Unlock()
	if !last {
		return
	}
	close(h.stop)
	<-h.done
	h.remove()
	s.b.Control().Events().Unsubscribe()
}

// drainEvents empties the workers' rings until stop is closed.
func (s *Server) drainEvents(stop, done chan struct{}) {
	defer close(done)
	h := &s.hub
	ev := s.b.Control().Events()
	buf := make([]bridge.Event, 256)
	t := time.NewTicker(drainInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ev.Drain(buf, func([]bridge.Event) {})
		if l := ev.Lost(); l != h.ringLost {
			h.mu.Lock()
			for c := range h.clients {
				c.lost += l - h.ringLost
			}
			h.ringLost = l
			h.mu.Unlock()
		}
	}
}

// fanOut hands each event of a drained batch to the clients whose filter
// matches it, without waiting (a full client queue counts a loss).
func (s *Server) fanOut(batch []bridge.Event) {
	h := &s.hub
	h.mu.Lock()
	for i := range batch {
		e := &batch[i]
		for c := range h.clients {
			if !c.m.Match(&e.Entry) {
				continue
			}
			select {
			case c.ch <- *e:
			default:
				c.lost++
			}
		}
	}
	h.mu.Unlock()
}

// eventFormatter returns the line formatter of an event format.
func eventFormatter(f string) (func(e *bridge.Event) string, error) {
	switch f {
	case "", FormatConntrack:
		return func(e *bridge.Event) string {
			return ctlist.EventLine(e.Kind.String(), &e.Entry, e.Now, e.ProtoInfo)
		}, nil
	case FormatProc:
		return func(e *bridge.Event) string {
			return ctlist.EventPrefix(e.Kind.String()) + ctlist.Line(&e.Entry, e.Now, ctlist.Proc)
		}, nil
	case FormatJSON:
		type eventJSON struct {
			Event string `json:"event"`
			ctlist.EntryJSON
		}
		return func(e *bridge.Event) string {
			b, _ := json.Marshal(eventJSON{Event: e.Kind.String(), EntryJSON: ctlist.JSON(&e.Entry, e.Now)})
			return string(b)
		}, nil
	}
	return nil, fmt.Errorf("unknown format %q (conntrack, proc, json)", f)
}

// events serves one -E client until it goes away or the server closes.
func (s *Server) events(ctx context.Context, req *Request, w *writer) error {
	m, err := req.Filter.compile()
	if err != nil {
		return err
	}
	format, err := eventFormatter(req.Format)
	if err != nil {
		return err
	}
	c := &evClient{m: m, ch: make(chan bridge.Event, clientEventBuf)}
	s.join(c)
	defer s.leave(c)
	var reported uint64
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-c.ch:
			w.line(format(&e))
		}
		// Write what is queued, then flush once.
	more:
		for {
			select {
			case e := <-c.ch:
				w.line(format(&e))
			default:
				break more
			}
		}
		s.hub.mu.Lock()
		lost := c.lost
		s.hub.mu.Unlock()
		if lost != reported {
			w.line(fmt.Sprintf("WARNING: %d events lost (a ring or this client's queue was full)", lost-reported))
			reported = lost
		}
		w.flush()
		if w.err != nil {
			return w.err
		}
	}
}
