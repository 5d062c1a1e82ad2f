package lab

import (
	"context"
	"testing"
	"time"
)

// TestTransferTCP moves 1 MB through a kernel bridge and checks the digests
// and the count; a closed port is an error, not a silent empty transfer.
func TestTransferTCP(t *testing.T) {
	l := NewT(t, Options{Mode: KernelBridge})
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	tr, err := l.TransferTCP(context.Background(), l.LeftNS, l.RightNS, "198.18.0.2:7001", data)
	if err != nil {
		t.Fatal(err)
	}
	if tr.N != int64(len(data)) || tr.Got != tr.Sent {
		t.Errorf("got %d bytes, digest match %v; want %d bytes, match", tr.N, tr.Got == tr.Sent, len(data))
	}
	if _, err := l.TransferTCP(context.Background(), l.LeftNS, l.RightNS, "198.18.0.99:7001", data[:10]); err == nil {
		t.Errorf("listening on an address the host does not have: got no error")
	}
}

// TestTransferTCPWithStall: a receiver with a small buffer that stops
// reading for 300 ms after 256 KiB still gets every byte intact, and the
// transfer takes at least the stall.
func TestTransferTCPWithStall(t *testing.T) {
	l := NewT(t, Options{Mode: KernelBridge})
	data := make([]byte, 2<<20)
	for i := range data {
		data[i] = byte(i * 13)
	}
	const stall = 300 * time.Millisecond
	tr, err := l.TransferTCPWith(context.Background(), l.LeftNS, l.RightNS, "198.18.0.2:7002", data,
		Receiver{ReadBuffer: 64 << 10, StallAfter: 256 << 10, Stall: stall})
	if err != nil {
		t.Fatal(err)
	}
	if tr.N != int64(len(data)) || tr.Got != tr.Sent {
		t.Errorf("got %d bytes, digest match %v; want %d bytes, match", tr.N, tr.Got == tr.Sent, len(data))
	}
	if tr.Took < stall {
		t.Errorf("transfer took %v, want at least the %v stall", tr.Took, stall)
	}
}
