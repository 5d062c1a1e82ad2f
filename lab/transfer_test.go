package lab

import (
	"context"
	"testing"
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
