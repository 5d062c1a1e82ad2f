package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/statewire/statewire/hasync"
)

// TestSyncCommandUsage: statewire sync takes exactly one of conntrackd's
// options, and says where the bridge is when it cannot reach one.
func TestSyncCommandUsage(t *testing.T) {
	if code, _, errs := run(t, "sync"); code != 2 || !strings.Contains(errs, "Usage: statewire sync") {
		t.Errorf("no option: exit %d, %q; want 2 and the usage", code, errs)
	}
	if code, _, errs := run(t, "sync", "-i", "-c"); code != 2 || !strings.Contains(errs, "one of -i, -e, -c, -f, -n, -s at a time") {
		t.Errorf("two options: exit %d, %q", code, errs)
	}
	sock := filepath.Join(t.TempDir(), "none.sock")
	if code, _, errs := run(t, "sync", "--socket", sock, "-s"); code != 1 || !strings.Contains(errs, "is `statewire run` running") {
		t.Errorf("no bridge: exit %d, %q", code, errs)
	}
}

// TestSyncFlags: --sync-listen and --sync-peer go together; the modes are
// named.
func TestSyncFlags(t *testing.T) {
	sf := &syncFlags{listen: "198.19.255.1:3780", mode: hasync.ModeNotrack}
	if _, err := sf.start(nil, nil); err == nil || !strings.Contains(err.Error(), "both --sync-listen and --sync-peer") {
		t.Errorf("listen without peer: %v", err)
	}
	if s, err := (&syncFlags{}).start(nil, nil); s != nil || err != nil {
		t.Errorf("no sync flags: %v, %v; want no sync", s, err)
	}
	if _, err := hasync.NewLink("carrier-pigeon", "198.19.255.1:3780", "198.19.255.2:3780", nil); err == nil || !strings.Contains(err.Error(), "ftfw or notrack") {
		t.Errorf("bad mode: %v", err)
	}
	if _, err := hasync.NewLink(hasync.ModeNotrack, "198.19.255.1", "198.19.255.2:3780", nil); err == nil || !strings.Contains(err.Error(), "ADDR:PORT") {
		t.Errorf("listen without a port: %v", err)
	}
}
