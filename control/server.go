package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/statewire/statewire/bridge"
	"github.com/statewire/statewire/ctlist"
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/offload"
	"github.com/statewire/statewire/ring"
	"github.com/statewire/statewire/rules"
	"github.com/statewire/statewire/statemachine"
)

// Backend is what the server needs from a running bridge. *bridge.Datapath
// implements it; tests use a fake that drives a table itself.
type Backend interface {
	// Table is the connection table (Snapshot, Stats, Expect: safe from
	// any goroutine while the workers run).
	Table() *flowtable.Table
	// Control publishes the settings the workers read.
	Control() *bridge.Control
	// Now is the clock of the entries' Expires (monotonic nanoseconds).
	Now() int64
	// Stats are the datapath's published counters.
	Stats() bridge.DatapathStats
}

// Options configure a Server.
type Options struct {
	// Ports are the interface names of port A and B, for rules naming
	// -i/-o (rules.LoadFiles).
	Ports [2]string
	// RulesPath and Rules6Path are the files given at start: SIGHUP (with
	// ReloadOnSIGHUP) reloads them.
	RulesPath, Rules6Path string
	// IPSetPaths are the `ipset save` files given at start (--ipsets):
	// every rules load (SIGHUP or rules-load) reads them again, so a
	// changed set takes effect with a new rule generation.
	IPSetPaths []string
	// ReloadOnSIGHUP makes the server reload the rule files on SIGHUP.
	ReloadOnSIGHUP bool
	// Logger receives changes (sysctl, rules) and errors; nil: slog.Default.
	Logger *slog.Logger
	// Sync serves statewire sync (nil: sync off).
	Sync Sync
}

// DefaultPath returns the control socket of the bridge instance name.
func DefaultPath(name string) string {
	return filepath.Join(SocketDir, name+".sock")
}

// SocketDir is where the control sockets live by default.
const SocketDir = "/run/statewire"

// FindSocket returns the only control socket in dir, for clients given no
// instance name; with none or several it says which names there are.
func FindSocket(dir string) (string, error) {
	m, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
	switch len(m) {
	case 1:
		return m[0], nil
	case 0:
		return "", fmt.Errorf("no control socket in %s: is `statewire run` running (and are you root)?", dir)
	}
	names := make([]string, len(m))
	for i, p := range m {
		names[i] = strings.TrimSuffix(filepath.Base(p), ".sock")
	}
	return "", fmt.Errorf("several bridges run (%s): choose one with --name", strings.Join(names, ", "))
}

// Server serves the control socket of one bridge.
type Server struct {
	b    Backend
	opt  Options
	log  *slog.Logger
	ln   net.Listener
	path string

	mu  sync.Mutex // serialises settings writers (sysctl-set, rules-load)
	hub evHub      // conntrack -E clients

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// closing is set by Close under connMu; Serve adds a connection to wg
	// only under connMu while it is unset, so no wg.Add can race Close's
	// wg.Wait (a connection accepted as Close runs is closed unserved).
	connMu  sync.Mutex
	closing bool
}

// Listen creates the socket at path (its directory with mode 0700 if
// missing, a stale socket replaced) with mode 0600: only root may talk to the
// bridge. Serve must be called to answer.
func Listen(path string, b Backend, opt Options) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another statewire is serving it", path)
	}
	_ = os.Remove(path) // stale from a killed process
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	s := &Server{b: b, opt: opt, log: opt.Logger, ln: ln, path: path}
	if b.Control().Logger() == nil {
		// INVALID packets (nf_conntrack_log_invalid) go to the server's log.
		b.Control().SetLogger(opt.Logger)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if opt.ReloadOnSIGHUP {
		s.wg.Add(1)
		go s.sighup()
	}
	return s, nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Serve accepts connections until Close, one goroutine per connection.
// It returns nil after Close.
func (s *Server) Serve() error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.connMu.Lock()
		if s.closing {
			s.connMu.Unlock()
			c.Close()
			return nil
		}
		s.wg.Add(1)
		s.connMu.Unlock()
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

// Close stops accepting, ends the connections in progress (event streams
// included), removes the socket and waits for the server's goroutines.
func (s *Server) Close() error {
	s.connMu.Lock()
	s.closing = true
	s.connMu.Unlock()
	s.cancel()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) sighup() {
	defer s.wg.Done()
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	defer signal.Stop(ch)
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-ch:
			if s.opt.RulesPath == "" && s.opt.Rules6Path == "" && len(s.opt.IPSetPaths) == 0 {
				s.log.Warn("SIGHUP: no rule file given at start, nothing to reload")
				continue
			}
			if n, err := s.LoadRules(s.opt.RulesPath, s.opt.Rules6Path); err != nil {
				s.log.Error("SIGHUP: rules not reloaded, the running rules stay", "err", err)
			} else {
				s.log.Info("SIGHUP: rules reloaded", "file", s.opt.RulesPath, "file6", s.opt.Rules6Path, "ipsets", s.opt.IPSetPaths, "rules", n)
			}
		}
	}
}

// LoadRules parses and compiles the rule files (with the sets of
// IPSetPaths, read again) and, only if that succeeds,
// publishes them: a bad file leaves the running rules untouched. Existing
// entries stay; the new rules apply from the next packet (cached verdicts
// belong to the old generation). It returns the number of rules.
func (s *Server) LoadRules(path, path6 string) (int, error) {
	rs, err := rules.LoadFilesSets(path, path6, s.opt.IPSetPaths, s.opt.Ports)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ctl := s.b.Control()
	cp := *ctl.Load()
	cp.Rules = rs
	ctl.Store(&cp)
	return rs.NumRules(), nil
}

// writer sends responses and notices a client that went away.
type writer struct {
	bw     *bufio.Writer
	err    error
	cancel context.CancelFunc
}

func (w *writer) send(r Response) {
	if w.err != nil {
		return
	}
	if _, err := w.bw.Write(encodeLine(r)); err != nil {
		w.err = err
		w.cancel()
	}
}

func (w *writer) line(s string) { w.send(Response{Line: s}) }

func (w *writer) flush() {
	if w.err == nil {
		if err := w.bw.Flush(); err != nil {
			w.err = err
			w.cancel()
		}
	}
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// A client that goes away (or a Close) ends the request: the read side
	// sees EOF after the request line.
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	raw, err := br.ReadBytes('\n')
	w := &writer{bw: bufio.NewWriterSize(c, 64<<10), cancel: cancel}
	if err != nil && len(raw) == 0 {
		return
	}
	var req Request
	if err := json.Unmarshal(raw, &req); err != nil {
		w.send(Response{Error: "bad request: " + err.Error()})
		w.flush()
		return
	}
	c.SetReadDeadline(time.Time{})
	go func() {
		// Any read result (EOF, error) means the client is gone.
		var b [1]byte
		c.Read(b[:])
		cancel()
	}()
	go func() {
		<-ctx.Done()
		c.SetDeadline(time.Now()) // unblock writes to a stalled client
	}()
	n, err := s.do(ctx, &req, w)
	if err != nil {
		w.send(Response{Error: err.Error()})
	} else {
		w.send(Response{Done: true, Count: n})
	}
	w.flush()
}

// do runs one request, writing its output lines to w.
func (s *Server) do(ctx context.Context, req *Request, w *writer) (int, error) {
	switch req.Op {
	case OpList:
		return s.list(ctx, req, w)
	case OpCount:
		return s.count(ctx, req)
	case OpStats:
		s.stats(w)
		return 0, nil
	case OpExpectList:
		return s.expectList(w), nil
	case OpDelete:
		return s.delete(ctx, req, w)
	case OpFlush:
		return s.b.Table().FlushEntries(ctx)
	case OpEvents:
		return 0, s.events(ctx, req, w)
	case OpSysctlGet:
		return s.sysctlGet(req.Name, w)
	case OpSysctlSet:
		return s.sysctlSet(req.Name, req.Value, w)
	case OpRulesLoad:
		n, err := s.LoadRules(req.Path, req.Path6)
		if err != nil {
			return 0, err
		}
		s.log.Info("rules loaded", "file", req.Path, "file6", req.Path6, "rules", n)
		return n, nil
	case OpRulesShow:
		return 0, s.rulesShow(w)
	case OpSync:
		return s.syncOp(ctx, req, w)
	}
	return 0, fmt.Errorf("unknown operation %q", req.Op)
}

// formatter returns the line formatter of a list/event format.
func formatter(f string) (func(es *flowtable.EntrySnapshot, now int64) string, error) {
	switch f {
	case "", FormatConntrack:
		return func(es *flowtable.EntrySnapshot, now int64) string { return ctlist.Line(es, now, ctlist.Conntrack) }, nil
	case FormatProc:
		return func(es *flowtable.EntrySnapshot, now int64) string { return ctlist.Line(es, now, ctlist.Proc) }, nil
	case FormatJSON:
		return func(es *flowtable.EntrySnapshot, now int64) string {
			b, _ := json.Marshal(ctlist.JSON(es, now))
			return string(b)
		}, nil
	}
	return nil, fmt.Errorf("unknown format %q (conntrack, proc, json)", f)
}

func (s *Server) list(ctx context.Context, req *Request, w *writer) (int, error) {
	m, err := req.Filter.compile()
	if err != nil {
		return 0, err
	}
	format, err := formatter(req.Format)
	if err != nil {
		return 0, err
	}
	now := s.b.Now()
	n := 0
	err = s.b.Table().Snapshot(ctx, func(es *flowtable.EntrySnapshot) {
		if m.Match(es) {
			w.line(format(es, now))
			n++
		}
	})
	return n, err
}

func (s *Server) count(ctx context.Context, req *Request) (int, error) {
	if req.Filter.IsZero() {
		return s.b.Table().Len(), nil
	}
	m, err := req.Filter.compile()
	if err != nil {
		return 0, err
	}
	n := 0
	err = s.b.Table().Snapshot(ctx, func(es *flowtable.EntrySnapshot) {
		if m.Match(es) {
			n++
		}
	})
	return n, err
}

// stats writes `conntrack -S`: one line per worker (the kernel's per-CPU
// lines: worker i owns shard i) with every counter, the table's and the
// pipeline's, in the order of /proc/net/stat/nf_conntrack; then a total
// line, which also carries expect_delete (expectations are shared by all
// workers, so their deletions belong to none); then statewire's own
// lines: the targets', the drops by reason, the fast path's, fail-open's.
func (s *Server) stats(w *writer) {
	t := s.b.Table()
	ds := s.b.Stats()
	var tot flowtable.Stats
	var ptot bridge.Stats
	x := t.Expect.Stats()
	for i := 0; i < t.NumShards(); i++ {
		st := t.Shard(i).PublishedStats()
		var p bridge.Stats
		if i < len(ds.Workers) {
			p = ds.Workers[i]
		}
		w.line(fmt.Sprintf("cpu=%-4d %s", i, statsFields(&st, &p)))
		tot.Found += st.Found
		tot.Insert += st.Insert
		tot.InsertFailed += st.InsertFailed
		tot.Drop += st.Drop
		tot.EarlyDrop += st.EarlyDrop
		tot.Delete += st.Delete
		tot.Count += st.Count
	}
	if len(ds.Workers) == 0 {
		// A backend that publishes only totals.
		ptot = ds.Pipeline
	}
	for i := range ds.Workers {
		ptot.Add(&ds.Workers[i])
	}
	// csum_completed is statewire's own (no kernel counter): accepted
	// frames whose partial checksum the workers completed.
	w.line(fmt.Sprintf("total    %s expect_delete=%d csum_completed=%d", statsFields(&tot, &ptot), x.Delete, ptot.CsumCompleted))
	if t := &ptot.Targets; t.RejectsSent()+t.RejectLimited+t.RejectNone+t.RejectNoTX+t.LogLines+t.LogSuppressed > 0 {
		w.line(targetStatsLine(t))
	}
	s.dropStats(w, &ds)
	if ds.Fast.On {
		s.fastStats(w, &ds, &ptot.Fast)
	}
	if fo := &ds.Fast.FailOpen; fo[0].Packets+fo[1].Packets > 0 {
		// --fail-mode=open: frames the pinned program forwarded
		// unjudged while no worker ran (the gaps between runs).
		for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
			name := s.opt.Ports[p]
			if name == "" {
				name = p.String()
			}
			w.line(fmt.Sprintf("failopen port=%s packets=%d bytes=%d", name, fo[p].Packets, fo[p].Bytes))
		}
	}
}

// fastStats writes the XDP fast path's counters after `conntrack -S`'s
// kernel lines (the kernel has none: its flowtable's counters are not in
// /proc/net/stat/nf_conntrack), in the same name=value form: one line for
// the flows (in the fast path now, offered, adopted from the previous
// process at start, refused, taken back by reason, activated, forced,
// held back, hand-over drops, cancelled, errors), one per ingress port for the frames (forwarded by the fast
// path, their bytes, those the kernel then dropped at the egress port,
// handed to the slow path by reason). Names with a '-'
// take '_' (taken_back_slow_path, punt_no_egress).
func (s *Server) fastStats(w *writer, ds *bridge.DatapathStats, f *bridge.FastPathStats) {
	var b strings.Builder
	fmt.Fprintf(&b, "fastpath flows=%d offered=%d adopted=%d refused=%d", f.InFastPath(), f.Offered, f.Adopted, f.Refused)
	for r, n := range f.TakenBack {
		fmt.Fprintf(&b, " taken_back_%s=%d", statName(bridge.TakeBackNames[r]), n)
	}
	fmt.Fprintf(&b, " activated=%d forced=%d held_back=%d handover_drops=%d cancelled=%d errors=%d", f.Activated, f.Forced, f.HeldBack, f.Handover, f.Cancelled, f.Errors)
	w.line(b.String())
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		ps := &ds.Fast.Ports[p]
		name := s.opt.Ports[p]
		if name == "" {
			name = p.String()
		}
		b.Reset()
		fmt.Fprintf(&b, "fastpath port=%s packets=%d bytes=%d redirect_errors=%d", name, ps.FastPackets, ps.FastBytes, ps.RedirectErrors)
		for r, n := range ps.Punts {
			fmt.Fprintf(&b, " punt_%s=%d", statName(offload.PuntReason(r).String()), n)
		}
		fmt.Fprintf(&b, " csum_completed=%d", ps.CsumCompleted)
		w.line(b.String())
	}
}

// dropStats writes, once the datapath has dropped a frame, one line per
// ingress port with its drops by reason (every reason, the kernel has no
// such line: its drops are in nfstat and the rules' counters), then the
// kernel's drops on that port's AF_XDP sockets, in the name=value form of
// the other lines: `drops port=eth0 malformed=0 rule=3 ... connlimit_full=0
// handoff_full=0 kernel_rx_ring_full=0 kernel_rx_dropped=0`.
func (s *Server) dropStats(w *writer, ds *bridge.DatapathStats) {
	tot := [2]bridge.PortCounters{ds.Total(bridge.PortA), ds.Total(bridge.PortB)}
	var kernel [2]ring.Stats
	for i := range ds.Queues {
		for p := range kernel {
			kernel[p].RxRingFull += ds.Queues[i].Socket[p].RxRingFull
			kernel[p].RxDropped += ds.Queues[i].Socket[p].RxDropped
		}
	}
	var any uint64
	for p := range tot {
		any += tot[p].Dropped() + kernel[p].RxRingFull + kernel[p].RxDropped
	}
	if any == 0 {
		return
	}
	var b strings.Builder
	for _, p := range []bridge.Port{bridge.PortA, bridge.PortB} {
		name := s.opt.Ports[p]
		if name == "" {
			name = p.String()
		}
		b.Reset()
		fmt.Fprintf(&b, "drops port=%s", name)
		for r := bridge.DropReason(1); r < bridge.NumDropReasons; r++ {
			fmt.Fprintf(&b, " %s=%d", statName(r.String()), tot[p].Drops[r])
		}
		fmt.Fprintf(&b, " handoff_full=%d", tot[p].HandoffFull)
		// The kernel's own, before the frame reached the worker: the
		// RX ring was full (the worker fell behind) or another reason.
		fmt.Fprintf(&b, " kernel_rx_ring_full=%d kernel_rx_dropped=%d", kernel[p].RxRingFull, kernel[p].RxDropped)
		w.line(b.String())
	}
}

// statName turns a reason name into a counter name ("slow-path":
// "slow_path").
func statName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// statsFields formats one line's counters (kernel names; "new" and
// "insert" are equal: an entry is confirmed when created).
func statsFields(st *flowtable.Stats, p *bridge.Stats) string {
	return fmt.Sprintf("found=%d new=%d invalid=%d ignore=%d delete=%d insert=%d insert_failed=%d drop=%d early_drop=%d icmp_error=%d expect_new=%d expect_create=%d entries=%d",
		st.Found, st.Insert, p.Invalid, p.Ignore, st.Delete, st.Insert, st.InsertFailed, st.Drop, st.EarlyDrop, p.ICMPError, p.ExpectNew, p.ExpectCreate, st.Count)
}

func (s *Server) expectList(w *writer) int {
	now := s.b.Now()
	n := 0
	s.b.Table().Expect.Range(func(x flowtable.Expect) bool {
		w.line(ctlist.ExpectLine(&x, now))
		n++
		return true
	})
	return n
}

func (s *Server) delete(ctx context.Context, req *Request, w *writer) (int, error) {
	if req.Filter.IsZero() {
		return 0, errors.New("delete needs a filter (-p, -s, -d, --sport, --dport, --state, --status); use -F to flush")
	}
	m, err := req.Filter.compile()
	if err != nil {
		return 0, err
	}
	now := s.b.Now()
	var refs []flowtable.EntryRef
	err = s.b.Table().Snapshot(ctx, func(es *flowtable.EntrySnapshot) {
		if m.Match(es) {
			refs = append(refs, es.Ref)
			w.line(ctlist.Line(es, now, ctlist.Conntrack))
		}
	})
	if err != nil {
		return 0, err
	}
	n, err := s.b.Table().DeleteEntries(ctx, refs)
	if n > 0 {
		s.log.Info("conntrack entries deleted", "count", n, "filter", req.Filter)
	}
	return n, err
}

// sysctlName strips the kernel's "net.netfilter." prefix (also with
// slashes, as in /proc/sys paths).
func sysctlName(name string) string {
	name = strings.ReplaceAll(name, "/", ".")
	name = strings.TrimPrefix(name, "net.netfilter.")
	return name
}

// Extra sysctls beyond statemachine.Config: the checksum switch lives in
// the bridge settings; the sizes are fixed at start (read only).
const (
	sysctlChecksum = "nf_conntrack_checksum"
	sysctlCount    = "nf_conntrack_count"
	sysctlMax      = "nf_conntrack_max"
	sysctlBuckets  = "nf_conntrack_buckets"
	sysctlExpect   = "nf_conntrack_expect_max"
	// sysctlLogInvalid is 0 (off), 255 (all) or an IP protocol number.
	sysctlLogInvalid = "nf_conntrack_log_invalid"
)

// SysctlNames lists every name `statewire sysctl` knows, bare.
func SysctlNames() []string {
	return append(statemachine.SysctlNames(), sysctlChecksum, sysctlLogInvalid, sysctlCount, sysctlMax, sysctlBuckets, sysctlExpect)
}

func (s *Server) sysctlValue(st *bridge.Settings, name string) (string, bool) {
	switch name {
	case sysctlChecksum:
		return boolString(st.VerifyChecksum), true
	case sysctlLogInvalid:
		return strconv.Itoa(int(st.LogInvalid)), true
	case sysctlCount:
		return strconv.Itoa(s.b.Table().Len()), true
	case sysctlMax:
		return strconv.Itoa(s.b.Table().Config().MaxEntries), true
	case sysctlBuckets:
		return strconv.Itoa(s.b.Table().Config().Buckets), true
	case sysctlExpect:
		return strconv.Itoa(s.b.Table().Config().MaxExpect), true
	}
	v := st.Conntrack.Get(name)
	return v, v != ""
}

func boolString(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func (s *Server) sysctlGet(name string, w *writer) (int, error) {
	st := s.b.Control().Load()
	if name == "" {
		for _, n := range SysctlNames() {
			v, _ := s.sysctlValue(st, n)
			w.line("net.netfilter." + n + " = " + v)
		}
		return len(SysctlNames()), nil
	}
	n := sysctlName(name)
	v, ok := s.sysctlValue(st, n)
	if !ok {
		return 0, fmt.Errorf("unknown sysctl %q", name)
	}
	w.line("net.netfilter." + n + " = " + v)
	return 1, nil
}

func (s *Server) sysctlSet(name, value string, w *writer) (int, error) {
	n := sysctlName(name)
	value = strings.TrimSpace(value)
	s.mu.Lock()
	defer s.mu.Unlock()
	ctl := s.b.Control()
	cp := *ctl.Load()
	switch n {
	case sysctlCount, sysctlMax, sysctlBuckets, sysctlExpect:
		return 0, fmt.Errorf("%s is fixed at start (the table's memory is allocated once): restart with the flag", n)
	case sysctlChecksum:
		switch value {
		case "0":
			cp.VerifyChecksum = false
		case "1":
			cp.VerifyChecksum = true
		default:
			return 0, fmt.Errorf("%s must be 0 or 1, got %q", n, value)
		}
	case sysctlLogInvalid:
		v, err := strconv.ParseUint(value, 10, 8)
		if err != nil {
			return 0, fmt.Errorf("%s must be 0 (off), 255 (all protocols) or a protocol number, got %q", n, value)
		}
		cp.LogInvalid = uint8(v)
	default:
		// Conntrack is a value: the copy's Set does not touch what the
		// workers read.
		if err := cp.Conntrack.Set(n, value); err != nil {
			return 0, err
		}
	}
	ctl.Store(&cp)
	v, _ := s.sysctlValue(&cp, n)
	s.log.Info("sysctl set", "name", n, "value", v)
	w.line("net.netfilter." + n + " = " + v)
	return 1, nil
}

func (s *Server) rulesShow(w *writer) error {
	rs := s.b.Control().Load().Rules
	if rs == nil {
		rs = rules.Empty()
	}
	var b strings.Builder
	if err := rs.Save(&b, rules.FamilyIPv4|rules.FamilyIPv6); err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		w.line(l)
	}
	return nil
}
