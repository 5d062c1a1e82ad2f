package e2etest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
)

// TransferOK sends size random bytes from fromNS to a listener on addr in
// toNS over one TCP connection (lab.TransferTCP, 60 s) and fails t unless
// they all arrive intact (same count, same SHA-256). It logs and returns
// the transfer.
func TransferOK(t testing.TB, l *lab.Lab, fromNS, toNS, addr string, size int) lab.Transfer {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tr, err := l.TransferTCP(ctx, fromNS, toNS, addr, data)
	if err != nil {
		t.Fatalf("TCP transfer: %v", err)
	}
	if tr.Got != tr.Sent || tr.N != int64(size) {
		t.Fatalf("TCP transfer got %d bytes sha256 %x, want %d bytes sha256 %x", tr.N, tr.Got[:8], size, tr.Sent[:8])
	}
	t.Logf("TCP transfer of %d bytes intact in %v", size, tr.Took.Round(time.Millisecond))
	return tr
}

// PacedTransfer is one TCP connection carrying random bytes in 64 KiB
// writes with a pause after each, so that it lives long enough to span a
// fault or a flood. Its goroutines own the sockets.
type PacedTransfer struct {
	// Local and Remote are the sender's connection addresses, set once the
	// connection is up (when StartPacedTransfer returns).
	Local, Remote *net.TCPAddr
	Size          int
	// Active is true while the sender is still writing.
	Active atomic.Bool

	done      chan error
	sent, got [32]byte
}

// StartPacedTransfer listens on addr (IPv4 host:port) in toNS, connects from
// fromNS and sends size random bytes in 64 KiB writes, sleeping gap after
// each, then half-closes. It returns once the connection is up; the outcome
// comes on Done: nil when the receiver got exactly size bytes with the
// SHA-256 of what was sent, else what went wrong. Each side has 60 s.
func StartPacedTransfer(t testing.TB, l *lab.Lab, fromNS, toNS, addr string, size int, gap time.Duration) *PacedTransfer {
	t.Helper()
	var ln net.Listener
	if err := l.Do(toNS, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	data := make([]byte, size)
	rand.Read(data)
	pt := &PacedTransfer{Size: size, done: make(chan error, 1), sent: sha256.Sum256(data)}
	recv := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			recv <- fmt.Errorf("accept: %w", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		copy(pt.got[:], h.Sum(nil))
		if err == nil && n != int64(size) {
			err = fmt.Errorf("received %d bytes, want %d", n, size)
		}
		recv <- err
	}()
	var c net.Conn
	if err := l.Do(fromNS, func() (err error) { c, err = net.DialTimeout("tcp4", addr, 5*time.Second); return err }); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	pt.Local, pt.Remote = c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
	pt.Active.Store(true)
	go func() {
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		var err error
		for off := 0; off < size; off += 64 << 10 {
			if _, werr := c.Write(data[off:min(off+64<<10, size)]); werr != nil {
				err = fmt.Errorf("send at byte %d: %w", off, werr)
				break
			}
			time.Sleep(gap)
		}
		pt.Active.Store(false)
		c.(*net.TCPConn).CloseWrite()
		var rerr error
		select {
		case rerr = <-recv:
		case <-time.After(60 * time.Second):
			rerr = fmt.Errorf("receiver did not finish within 60s")
		}
		if err == nil {
			err = rerr
		}
		if err == nil && pt.got != pt.sent {
			err = fmt.Errorf("sha256 got %x, want %x", pt.got[:8], pt.sent[:8])
		}
		pt.done <- err
	}()
	return pt
}

// Done delivers the transfer's outcome once (see StartPacedTransfer).
func (p *PacedTransfer) Done() <-chan error { return p.done }

// Wait returns the transfer's outcome, or ctx's error if it ends first.
func (p *PacedTransfer) Wait(ctx context.Context) error {
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
