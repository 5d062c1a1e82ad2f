package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"time"
)

// Transfer is the outcome of TransferTCP.
type Transfer struct {
	Sent, Got [32]byte // SHA-256 of the bytes sent and of the bytes that arrived
	N         int64    // bytes that arrived
	Took      time.Duration
}

// TransferTCP listens on addr (host:port, IPv4 or IPv6) inside toNS, sends
// data from fromNS to it over one TCP connection, and reports the SHA-256 of
// what was sent and of what arrived. It is the end-to-end check of a path
// through the lab: the caller compares Sent with Got. Each side has 60 s.
func (l *Lab) TransferTCP(ctx context.Context, fromNS, toNS, addr string, data []byte) (Transfer, error) {
	var ln net.Listener
	if err := l.Do(toNS, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return Transfer{}, fmt.Errorf("lab: listen %s in %s: %w", addr, toNS, err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		var r result
		r.n, r.err = io.Copy(h, c)
		copy(r.sum[:], h.Sum(nil))
		done <- r
	}()
	tr := Transfer{Sent: sha256.Sum256(data)}
	start := time.Now()
	var c net.Conn
	if err := l.Do(fromNS, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	}); err != nil {
		return tr, fmt.Errorf("lab: dial %s from %s: %w", addr, fromNS, err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	_, err := io.Copy(c, bytes.NewReader(data))
	c.Close()
	if err != nil {
		return tr, fmt.Errorf("lab: send: %w", err)
	}
	r := <-done
	tr.Got, tr.N, tr.Took = r.sum, r.n, time.Since(start)
	if r.err != nil {
		return tr, fmt.Errorf("lab: receive: %w", r.err)
	}
	return tr, nil
}
