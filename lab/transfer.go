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
	return l.TransferTCPWith(ctx, fromNS, toNS, addr, data, Receiver{})
}

// Receiver varies how TransferTCPWith's receiving application reads.
type Receiver struct {
	// ReadBuffer, when set, is the receiving socket's SO_RCVBUF: a small
	// one closes the receive window sooner.
	ReadBuffer int
	// Stall, when set, stops reading for that long once StallAfter bytes
	// have arrived (an application that stalls: its window closes, the
	// sender probes a zero window), then reads on.
	StallAfter int64
	Stall      time.Duration
}

// TransferTCPWith is TransferTCP with a receiver that reads as rcv says.
func (l *Lab) TransferTCPWith(ctx context.Context, fromNS, toNS, addr string, data []byte, rcv Receiver) (Transfer, error) {
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
		if rcv.ReadBuffer > 0 {
			c.(*net.TCPConn).SetReadBuffer(rcv.ReadBuffer)
		}
		c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		var r result
		if rcv.Stall > 0 {
			r.n, r.err = io.CopyN(h, c, rcv.StallAfter)
			if r.err == nil {
				time.Sleep(rcv.Stall)
			}
		}
		if r.err == nil {
			var m int64
			m, r.err = io.Copy(h, c)
			r.n += m
		}
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
