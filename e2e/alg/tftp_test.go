package alg

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// tftpSize is the file the TFTP test gets: 1024 blocks of 512 bytes plus
// one short block, each block one round trip.
const tftpSize = 512<<10 + 100

// TestTFTP gets a file from tftpd-hpa on the right with tftp-hpa's client on
// the left. The server answers the read request from a new port, so its
// first data packet is a new connection from the right: with the tftp helper
// it is RELATED and the file arrives intact; without it it is dropped and
// the client gets nothing.
func TestTFTP(t *testing.T) {
	for _, helpers := range []bool{true, false} {
		t.Run(map[bool]string{true: "helper", false: "nohelper"}[helpers], func(t *testing.T) {
			runTFTP(t, newRig(t, helpers), helpers)
		})
	}
}

// runTFTP serves a file with in.tftpd on the right and gets it with tftp on
// the left.
func runTFTP(t *testing.T, r *rig, helpers bool) {
	dir := publicDir(t)
	want := randomFile(t, dir, "file.bin", tftpSize)
	r.daemon(t, r.l.RightNS, "in.tftpd", "--foreground", "--listen",
		"--address", rightIP.String()+":69", "--secure", dir)
	r.waitUDP(t, r.l.RightNS, 69)

	out := filepath.Join(t.TempDir(), "out.bin")
	limit := 60 * time.Second
	if !helpers {
		limit = 4 * time.Second // tftp-hpa retries for 25 s before it gives up
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	before := r.counts()
	start := time.Now()
	_, err := r.l.Run(ctx, r.l.LeftNS, "tftp", "-m", "binary", rightIP.String(), "-c", "get", "file.bin", out)
	took := time.Since(start)
	got, n, ferr := fileSum(out)
	if helpers {
		if err != nil {
			t.Fatalf("tftp get with the helper: %v", err)
		}
		if ferr != nil || got != want {
			t.Fatalf("got %d bytes (err %v), sha256 %x; want %d bytes, sha256 %x", n, ferr, got, tftpSize, want)
		}
		t.Logf("%d bytes in %v", n, took)
		r.checkRelated(t, before)
		return
	}
	if err == nil && ferr == nil && got == want {
		t.Fatalf("tftp get without the helper succeeded in %v; want the server's reply dropped", took)
	}
	if n != 0 {
		t.Errorf("without the helper %d bytes arrived, want 0", n)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Logf("tftp ended before the deadline: %v", err)
	}
	t.Logf("without the helper tftp got nothing in %v as it should: %v", took, err)
	r.checkNoRelated(t, before)
}
